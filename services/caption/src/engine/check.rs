//! The checks a decoded caption must pass before anyone reads it. The first is grounding:
//! every object the caption names must be one the encoder reported, since a screen-reader
//! user cannot see the photo to notice an invented object.

use std::collections::HashSet;

use super::{
    brief::{Brief, Mode},
    vocabulary::Vocabulary,
};

/// Openers accessibility guidance says to leave out (the screen reader already says "image").
const OPENERS: &[&str] = &[
    "image of",
    "picture of",
    "photo of",
    "photograph of",
    "an image",
    "a picture",
    "a photo",
    "a photograph",
    "this image",
    "this picture",
    "this photo",
    "the image",
    "the picture",
    "the photo",
    "this is",
    "here is",
    "labels",
    "alt text",
];

/// Words that say the caption is unsure.
const HEDGES: &[&str] = &["possibly", "probably", "perhaps", "maybe", "may", "might", "likely", "appears", "seems", "could", "uncertain"];

/// Every word an alt text may hold besides the words of the encoder's labels. An image
/// classifier reports *what* may be in a photo and how likely, nothing else: no relation
/// ("on", "with"), place, count, colour or action. So alt text is the subject, or plainly
/// offered alternatives, and these words; anything else is a claim without evidence.
const ALT_TEXT_WORDS: &[&str] = &["a", "an", "the", "or", "photo", "perhaps", "possibly", "uncertain", "subject", "is", "not", "recognised"];

/// Words a longer description may not use unless a reported label holds them: relations
/// and places, counts and colours, none of which an image classifier reports.
const UNSUPPORTED: &[&str] = &[
    // relations and places
    "on",
    "in",
    "at",
    "with",
    "under",
    "above",
    "below",
    "beside",
    "behind",
    "near",
    "next",
    "inside",
    "outside",
    "atop",
    "against",
    "over",
    "onto",
    "into",
    "beneath",
    "between",
    "around",
    "front",
    "background",
    "foreground",
    "holding",
    "riding",
    "sitting",
    "standing",
    "lying",
    "wearing",
    "eating",
    "playing",
    "walking",
    "running",
    "parked",
    "resting",
    "flying",
    "swimming",
    "jumping",
    "smiling",
    "looking",
    "sleeping",
    "drinking",
    "cooking",
    "reading",
    "driving",
    "posing",
    "waiting",
    "working",
    "talking",
    "climbing",
    "carrying",
    "hanging",
    "floating",
    "grazing",
    "perched",
    "curled",
    // counts
    "two",
    "three",
    "four",
    "five",
    "six",
    "several",
    "many",
    "pair",
    "couple",
    "both",
    "group",
    "dozen",
    "few",
    "some",
    // colours
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "brown",
    "grey",
    "gray",
    "pink",
    "purple",
    "golden",
    "silver",
    "dark",
    "bright",
    "colorful",
    "colourful",
];

/// Why a caption was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("empty caption")]
    Empty,
    #[error("starts with {0:?}")]
    Opener(String),
    #[error("{chars} characters, more than {max}")]
    TooLong { chars: usize, max: usize },
    #[error("{found} sentences, expected {expected}")]
    Sentences { found: usize, expected: String },
    #[error("names no object")]
    NoSubject,
    #[error("names {0:?}, which the encoder did not report")]
    Ungrounded(String),
    #[error("names {found:?} first instead of the main subject")]
    SubjectNotFirst { found: String },
    #[error("does not say it is unsure although the encoder is")]
    MissingHedge,
    #[error("states {0:?} as fact, but the encoder offered it only as an alternative to the main subject")]
    AlternativeAsFact(String),
    #[error("quotes the encoder's numbers")]
    Numbers,
    #[error("states {0:?}, which the encoder's labels do not support (no relation, place, count, colour or action is reported)")]
    Unsupported(String),
    #[error("names {0:?} twice")]
    Repeated(String),
}

impl Rejection {
    /// Short reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Empty => "empty",
            Rejection::Opener(_) => "opener",
            Rejection::TooLong { .. } => "too_long",
            Rejection::Sentences { .. } => "sentences",
            Rejection::NoSubject => "no_subject",
            Rejection::Ungrounded(_) => "ungrounded",
            Rejection::SubjectNotFirst { .. } => "subject_not_first",
            Rejection::MissingHedge => "missing_hedge",
            Rejection::AlternativeAsFact(_) => "alternative_as_fact",
            Rejection::Numbers => "numbers",
            Rejection::Unsupported(_) => "unsupported",
            Rejection::Repeated(_) => "repeated",
        }
    }
}

/// Sentences in `text` (ends at '.', '!' or '?' followed by a space or the end).
pub fn sentence_count(text: &str) -> usize {
    let chars: Vec<char> = text.trim().chars().collect();
    let mut n = 0;
    for (i, c) in chars.iter().enumerate() {
        if matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|n| n.is_whitespace()) {
            n += 1;
        }
    }
    if !chars.is_empty() && !matches!(chars.last(), Some('.' | '!' | '?')) {
        n += 1;
    }
    n
}

/// How often `name` occurs in `text` as whole words.
fn occurrences(text: &str, name: &str) -> usize {
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    text.match_indices(name).filter(|(i, _)| boundary(text[..*i].chars().next_back()) && boundary(text[i + name.len()..].chars().next())).count()
}

/// Checks `text` against `brief`: length, form, grounding, salience, hedging.
pub fn check(text: &str, brief: &Brief, vocab: &Vocabulary) -> Result<(), Rejection> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Rejection::Empty);
    }
    if brief.unknown && brief.mode == Mode::AltText && text == super::template::NOT_RECOGNISED {
        return Ok(());
    }
    let lower = text.to_lowercase();
    if let Some(o) = OPENERS.iter().find(|o| lower.starts_with(*o)) {
        return Err(Rejection::Opener(o.to_string()));
    }
    let chars = text.chars().count();
    if chars > brief.max_chars {
        return Err(Rejection::TooLong { chars, max: brief.max_chars });
    }
    let sentences = sentence_count(text);
    if !brief.mode.sentences().contains(&sentences) {
        let r = brief.mode.sentences();
        let expected = if r.start() == r.end() { r.start().to_string() } else { format!("{} to {}", r.start(), r.end()) };
        return Err(Rejection::Sentences { found: sentences, expected });
    }
    if brief.mode == Mode::AltText && (text.contains('%') || text.chars().any(|c| c.is_ascii_digit())) {
        return Err(Rejection::Numbers);
    }
    let reported_words: HashSet<&str> = brief.reported.iter().flat_map(|l| vocab.class_words(l.class_index)).map(String::as_str).collect();
    let objects = vocab.objects_in(text);
    if objects.is_empty() {
        return Err(Rejection::NoSubject);
    }
    // The main subject comes first: the first object of the first sentence.
    let first_sentence = text.split_inclusive(['.', '!', '?']).next().unwrap_or(text);
    let Some(first) = vocab.objects_in(first_sentence).into_iter().next() else {
        return Err(Rejection::SubjectNotFirst { found: "no object in the first sentence".into() });
    };
    if let Some(stray) = objects.iter().find(|o| !reported_words.contains(o.as_str())) {
        return Err(Rejection::Ungrounded(stray.clone()));
    }
    let subject: HashSet<&str> = brief.subject_classes.iter().flat_map(|&c| vocab.class_words(c)).map(String::as_str).collect();
    if !subject.contains(first.as_str()) {
        return Err(Rejection::SubjectNotFirst { found: first.clone() });
    }
    let words: Vec<&str> = super::vocabulary::words_of(&lower).collect();
    // Words that are not the reported labels' own: each is a claim of the caption's.
    let mut claims = words.iter().copied().filter(|w| !reported_words.contains(w));
    if brief.mode == Mode::AltText {
        if let Some(w) = claims.find(|w| !ALT_TEXT_WORDS.contains(w) && vocab.objects_in(w).is_empty()) {
            return Err(Rejection::Unsupported(w.to_string()));
        }
    } else if let Some(w) = claims.find(|w| UNSUPPORTED.contains(w)) {
        return Err(Rejection::Unsupported(w.to_string()));
    }
    // One object named twice in a sentence ("a tripod, possibly on a tripod") says nothing
    // twice; in alt text it is also noise read aloud.
    for sentence in lower.split_inclusive(['.', '!', '?']) {
        if let Some(l) = brief.reported.iter().find(|l| occurrences(sentence, &l.name.to_lowercase()) > 1) {
            return Err(Rejection::Repeated(l.name.clone()));
        }
    }
    let hedged = words.iter().any(|w| HEDGES.contains(w));
    // Unsure alt text says so in the words a listener cannot miss.
    let plainly_unsure = brief.mode != Mode::AltText || words.contains(&"uncertain");
    if brief.hedge && !(hedged && plainly_unsure) {
        return Err(Rejection::MissingHedge);
    }
    // A single-label classifier's other labels are competing guesses about the same thing,
    // not further objects: "a moped on a motor scooter" invents a scene. They may appear
    // only as alternatives ("or", "possibly", "could also be").
    let offers_alternatives = hedged || super::vocabulary::words_of(&lower).any(|w| w == "or");
    if let Some(other) = objects.iter().find(|o| !subject.contains(o.as_str())) {
        if !offers_alternatives {
            return Err(Rejection::AlternativeAsFact(other.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::brief::{label, BriefConfig};

    fn brief(labels: Vec<(u32, f32)>, mode: Mode) -> (Brief, Vocabulary) {
        let v = Vocabulary::imagenet();
        let labels = labels.into_iter().map(|(c, p)| label(&v, c, p)).collect();
        (Brief::new(&v, labels, mode, mode.default_max_chars(), &BriefConfig::default()), v)
    }

    #[test]
    fn grounded_captions_pass() {
        let (b, v) = brief(vec![(285, 0.39), (282, 0.33), (281, 0.17)], Mode::AltText);
        assert_eq!(check("A tabby cat.", &b, &v), Ok(()));
        assert_eq!(check("A cat.", &b, &v), Ok(()));
        let (b, v) = brief(vec![(671, 0.49), (444, 0.26), (880, 0.17), (518, 0.06)], Mode::AltText);
        assert_eq!(check("A mountain bike or a unicycle.", &b, &v), Ok(()));
        assert_eq!(check("A bicycle.", &b, &v), Ok(()));
    }

    #[test]
    fn alt_text_states_no_relation_action_or_repeat() {
        // A classifier reports no relation, place, count, colour or action.
        let (b, v) = brief(vec![(285, 0.39), (282, 0.33), (281, 0.17)], Mode::AltText);
        assert_eq!(check("A cat curled up.", &b, &v), Err(Rejection::Unsupported("curled".into())));
        assert_eq!(check("Two tabby cats.", &b, &v), Err(Rejection::Unsupported("two".into())));
        assert_eq!(check("A grey tabby cat.", &b, &v), Err(Rejection::Unsupported("grey".into())));
        let (b, v) = brief(vec![(671, 0.49), (444, 0.26), (880, 0.17), (518, 0.06)], Mode::AltText);
        assert_eq!(check("A mountain bike, possibly with a crash helmet.", &b, &v), Err(Rejection::Unsupported("with".into())));
        assert_eq!(check("A mountain bike, possibly on a bicycle-built-for-two.", &b, &v), Err(Rejection::Unsupported("on".into())));
        assert_eq!(check("A mountain bike next to a crash helmet.", &b, &v), Err(Rejection::Unsupported("next".into())));
        // camera.png: "tripod" at 94%.
        let (b, v) = brief(vec![(872, 0.94), (447, 0.01)], Mode::AltText);
        assert_eq!(check("A tripod, possibly a tripod.", &b, &v), Err(Rejection::Repeated("tripod".into())));
        assert_eq!(check("A tripod.", &b, &v), Ok(()));
        // Longer descriptions may explain, but not place, count or colour things.
        let (b, v) = brief(vec![(872, 0.94), (447, 0.01)], Mode::Detailed);
        assert_eq!(check("A tripod, possibly in a tripod. The tripod is the main subject.", &b, &v), Err(Rejection::Unsupported("in".into())));
        assert_eq!(check("A tripod. It is standing still.", &b, &v), Err(Rejection::Unsupported("standing".into())));
        assert_eq!(check("A tripod. The tripod is the main subject of the photo.", &b, &v), Ok(()));
    }

    #[test]
    fn invented_objects_and_bad_form_are_rejected() {
        let (b, v) = brief(vec![(967, 0.94), (968, 0.02)], Mode::AltText);
        assert_eq!(check("A cup of espresso on a table.", &b, &v), Err(Rejection::Ungrounded("table".into())));
        assert_eq!(check("An espresso, hot.", &b, &v), Err(Rejection::Unsupported("hot".into())));
        assert_eq!(check("A woman drinking espresso.", &b, &v), Err(Rejection::Ungrounded("woman".into())));
        assert_eq!(check("Image of an espresso.", &b, &v), Err(Rejection::Opener("image of".into())));
        assert_eq!(check("A cup with an espresso.", &b, &v), Err(Rejection::SubjectNotFirst { found: "cup".into() }));
        assert_eq!(check("Espresso or a cup.", &b, &v), Ok(()));
        assert_eq!(check("An espresso (94%).", &b, &v), Err(Rejection::Numbers));
        assert_eq!(check("An espresso. It is hot.", &b, &v).unwrap_err().reason(), "sentences");
        assert_eq!(check("Something dark.", &b, &v), Err(Rejection::NoSubject));
        let long = format!("An espresso {}.", "and more ".repeat(20));
        assert!(matches!(check(&long, &b, &v), Err(Rejection::TooLong { .. })));
    }

    #[test]
    fn unsure_briefs_need_a_hedge() {
        let (b, v) = brief(vec![(450, 0.28), (560, 0.10)], Mode::AltText);
        assert_eq!(check("A bobsled.", &b, &v), Err(Rejection::MissingHedge));
        // Alt text says it plainly, not with a "possibly" a listener may miss.
        assert_eq!(check("Possibly a bobsled.", &b, &v), Err(Rejection::MissingHedge));
        assert_eq!(check("Photo, perhaps a bobsled (uncertain).", &b, &v), Ok(()));
    }

    #[test]
    fn detailed_mode_wants_two_or_three_sentences() {
        let (b, v) = brief(vec![(967, 0.94), (968, 0.02)], Mode::Detailed);
        assert!(check("An espresso.", &b, &v).is_err());
        assert_eq!(check("An espresso, possibly a cup. The cup is small.", &b, &v), Ok(()));
        assert_eq!(check("An espresso, possibly in a cup. The cup is small.", &b, &v), Err(Rejection::Unsupported("in".into())));
        assert!(matches!(check("A beverage. It could also be an espresso.", &b, &v), Err(Rejection::SubjectNotFirst { .. })));
        assert_eq!(sentence_count("A bike. It is red! Really?"), 3);
        assert_eq!(sentence_count("Approx. 3.5 m long"), 2);
    }
}
