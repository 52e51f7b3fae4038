//! What a caption is written from: the encoder's labels, the main subject, how sure the
//! encoder is, and the rules the text must meet ([`Brief`]).

use super::vocabulary::Vocabulary;

/// Which kind of text to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One sentence, short, most salient content first (screen-reader alt text).
    AltText,
    /// Two or three sentences.
    Detailed,
}

impl Mode {
    /// Default length limit in characters (alt text: the common 125-character guidance).
    pub fn default_max_chars(self) -> usize {
        match self {
            Mode::AltText => 125,
            Mode::Detailed => 400,
        }
    }

    /// Allowed sentence counts.
    pub fn sentences(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Mode::AltText => 1..=1,
            Mode::Detailed => 2..=3,
        }
    }

    /// Short name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::AltText => "alt_text",
            Mode::Detailed => "detailed",
        }
    }
}

/// One label reported by the encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub class_index: u32,
    /// Readable noun ("tabby cat").
    pub name: String,
    pub probability: f32,
}

/// Default subject confidence under which a caption is marked uncertain. At 0.5, one
/// photo of the evaluation set in eight (a motion-blurred clock called "bubble" at 60%) was
/// stated as fact and wrong; an ImageNet classifier's 60% is right about as often as not, so a
/// statement for a screen-reader user, who cannot check it, needs more (docs/caption.md).
pub const DEFAULT_HEDGE_BELOW: f32 = 0.7;

/// Tunables of how labels become a brief.
#[derive(Debug, Clone)]
pub struct BriefConfig {
    /// Below this subject confidence the caption says plainly that it is unsure
    /// ("Photo, perhaps a teapot or a vase (uncertain).") and the text needs review.
    pub hedge_below: f32,
    /// Below this subject confidence no label is offered at all: the encoder's guesses at
    /// that level are noise (a galaxy field called "a nematode worm"), so the caption says
    /// the subject is not recognised.
    pub unknown_below: f32,
    /// Labels under this probability are not shown to the decoder (the top one always is).
    pub min_evidence: f32,
    /// Most labels shown to the decoder.
    pub max_evidence: usize,
}

impl Default for BriefConfig {
    fn default() -> Self {
        BriefConfig { hedge_below: DEFAULT_HEDGE_BELOW, unknown_below: 0.1, min_evidence: 0.05, max_evidence: 3 }
    }
}

/// Everything the writer and the checker need for one caption.
#[derive(Debug, Clone)]
pub struct Brief {
    pub mode: Mode,
    pub max_chars: usize,
    /// Every label the encoder reported, most probable first (the grounding set).
    pub reported: Vec<Label>,
    /// The labels the decoder is shown (the caption's evidence).
    pub evidence: Vec<Label>,
    /// Classes that make up the main subject: the top label and those sharing a noun with it.
    pub subject_classes: Vec<u32>,
    /// What to call the main subject in a template.
    pub subject_noun: String,
    /// Probability mass of the subject classes, in [0, 1].
    pub confidence: f32,
    /// True when the caption must say it is unsure.
    pub hedge: bool,
    /// True when even the best guess is too weak to offer (see [`BriefConfig::unknown_below`]).
    pub unknown: bool,
}

impl Brief {
    /// Builds the brief from the encoder's labels (any order; at least one).
    pub fn new(vocab: &Vocabulary, mut labels: Vec<Label>, mode: Mode, max_chars: usize, config: &BriefConfig) -> Brief {
        labels.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        let top = labels[0].clone();
        let mut subject_classes = vec![top.class_index];
        let mut shared: Option<String> = None;
        let mut confidence = top.probability;
        for l in &labels[1..] {
            if let Some(word) = vocab.shared_word(top.class_index, l.class_index) {
                subject_classes.push(l.class_index);
                confidence += l.probability;
                shared.get_or_insert(word);
            }
        }
        let confidence = confidence.clamp(0.0, 1.0);
        // A specific name when the top label alone is likely; the shared noun ("cat") when
        // only the family is.
        let subject_noun = match shared {
            Some(word) if top.probability < config.hedge_below => word,
            _ => top.name.clone(),
        };
        let evidence: Vec<Label> = labels
            .iter()
            .enumerate()
            .filter(|(i, l)| *i == 0 || l.probability >= config.min_evidence)
            .take(config.max_evidence.max(1))
            .map(|(_, l)| l.clone())
            .collect();
        Brief {
            mode,
            max_chars,
            reported: labels,
            evidence,
            subject_classes,
            subject_noun,
            confidence,
            hedge: confidence < config.hedge_below,
            unknown: confidence < config.unknown_below,
        }
    }
}

/// Labels that are plural or uncountable nouns: they take no article ("perhaps binoculars",
/// "perhaps wool", never "a binoculars").
const NO_ARTICLE: &[&str] = &[
    "binoculars",
    "sunglasses",
    "sunglass",
    "swimming trunks",
    "pajama",
    "chain mail",
    "wool",
    "hay",
    "consomme",
    "guacamole",
    "dough",
    "eggnog",
    "red wine",
    "chocolate sauce",
    "carbonara",
    "mashed potato",
    "toilet tissue",
    "ice cream",
];

/// `word` with its indefinite article, if it takes one ("a moped", "an espresso",
/// "binoculars").
pub fn with_article(word: &str) -> String {
    if NO_ARTICLE.iter().any(|n| n.eq_ignore_ascii_case(word)) {
        return word.to_string();
    }
    format!("{} {word}", article(word))
}

/// "a" or "an" before `word`, by its first sound as far as spelling tells (label nouns:
/// "an espresso", "a unicycle", "an hourglass").
pub fn article(word: &str) -> &'static str {
    let w = word.to_lowercase();
    if ["uni", "use", "usu", "eu", "one", "once"].iter().any(|p| w.starts_with(p)) {
        return "a";
    }
    if ["hour", "honest", "honou", "heir"].iter().any(|p| w.starts_with(p)) {
        return "an";
    }
    match w.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

#[cfg(test)]
pub(crate) fn label(vocab: &Vocabulary, class_index: u32, probability: f32) -> Label {
    Label { class_index, name: vocab.readable_name(class_index).unwrap(), probability }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_groups_labels_sharing_a_noun() {
        let v = Vocabulary::imagenet();
        // cat.png: Egyptian cat 39%, tiger cat 33%, tabby cat 17%, lynx 3%, plastic bag 0.4%.
        let labels = vec![label(&v, 285, 0.39), label(&v, 282, 0.33), label(&v, 281, 0.17), label(&v, 287, 0.03), label(&v, 728, 0.004)];
        let b = Brief::new(&v, labels, Mode::AltText, 125, &BriefConfig::default());
        assert_eq!(b.subject_classes, [285, 282, 281, 287]);
        assert!((b.confidence - 0.92).abs() < 1e-5, "{}", b.confidence);
        assert!(!b.hedge);
        assert_eq!(b.subject_noun, "cat");
        assert_eq!(b.evidence.iter().map(|l| l.class_index).collect::<Vec<_>>(), [285, 282, 281]);
    }

    #[test]
    fn unsure_encoders_make_hedged_briefs() {
        let v = Vocabulary::imagenet();
        // astronaut.png: bobsled 28%, football helmet 10%, go-kart 5%.
        let labels = vec![label(&v, 450, 0.28), label(&v, 560, 0.10), label(&v, 573, 0.05)];
        let b = Brief::new(&v, labels, Mode::AltText, 125, &BriefConfig::default());
        assert!(b.hedge);
        assert_eq!(b.subject_classes, [450]);
        assert_eq!(b.subject_noun, "bobsled");
        assert_eq!(article("espresso"), "an");
        assert_eq!(article("unicycle"), "a");
        assert_eq!(article("Egyptian cat"), "an");
        assert_eq!(article("hourglass"), "an");
        assert_eq!(article("moped"), "a");
    }
}
