//! The deterministic caption built from the labels alone: the answer when the language model
//! fails its checks, and always grounded by construction.

use super::{
    brief::{with_article, Brief, Mode},
    text::capitalise,
};

/// What an alt text says when no label is likely enough to offer.
pub const NOT_RECOGNISED: &str = "Photo; the subject is not recognised (uncertain).";

/// A caption that names only the brief's labels and says plainly when the encoder is unsure.
///
/// Alt text has three forms, by the subject's confidence:
/// - sure: "A tabby cat." (the subject alone: a classifier reports no relation, place,
///   count, colour or action, so none is written);
/// - unsure: "Photo, perhaps a bobsled or a football helmet (uncertain)." (at most one
///   alternative outside the subject's family);
/// - too unsure to guess: [`NOT_RECOGNISED`].
pub fn caption(brief: &Brief) -> String {
    let noun = &brief.subject_noun;
    // An alternative outside the subject group, worth mentioning when unsure.
    let other = brief
        .evidence
        .iter()
        .find(|l| !brief.subject_classes.contains(&l.class_index) && l.probability >= 0.05 && !l.name.eq_ignore_ascii_case(noun))
        .map(|l| with_article(&l.name));
    let text = match brief.mode {
        Mode::AltText if brief.unknown => NOT_RECOGNISED.to_string(),
        Mode::AltText if brief.hedge => match &other {
            Some(o) => format!("Photo, perhaps {} or {o} (uncertain).", with_article(noun)),
            None => format!("Photo, perhaps {} (uncertain).", with_article(noun)),
        },
        Mode::AltText => format!("{}.", capitalise(&with_article(noun))),
        Mode::Detailed => {
            let main = if brief.hedge { format!("possibly {}", with_article(noun)) } else { with_article(noun) };
            let mut s = format!("{}.", capitalise(&main));
            let alternatives: Vec<String> =
                brief.evidence.iter().skip(1).map(|l| format!("{} ({:.0}%)", with_article(&l.name), l.probability * 100.0)).collect();
            if !alternatives.is_empty() {
                s.push_str(&format!(" The image classifier also considered {}.", alternatives.join(" and ")));
            }
            s.push_str(&format!(" It is {:.0}% sure of the main subject; colours and setting are not described.", brief.confidence * 100.0));
            s
        }
    };
    truncate_words(&text, brief.max_chars)
}

/// `text` cut at a word boundary to at most `max` characters, ending with a full stop.
fn truncate_words(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    for word in text.split(' ') {
        if out.chars().count() + word.chars().count() + 2 > max {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let mut out = out.trim_end_matches([',', '.', ';']).to_string();
    out.push('.');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        brief::{label, BriefConfig},
        check::check,
        vocabulary::Vocabulary,
    };

    #[test]
    fn templates_pass_every_check() {
        let v = Vocabulary::imagenet();
        let cases: Vec<Vec<(u32, f32)>> = vec![
            vec![(285, 0.39), (282, 0.33), (281, 0.17)],
            vec![(967, 0.94), (968, 0.02)],
            vec![(450, 0.28), (560, 0.10), (573, 0.05)],
            vec![(657, 0.29), (744, 0.15), (540, 0.09), (812, 0.03)],
        ];
        for labels in cases {
            for mode in [Mode::AltText, Mode::Detailed] {
                let labels = labels.iter().map(|&(c, p)| label(&v, c, p)).collect();
                let b = Brief::new(&v, labels, mode, mode.default_max_chars(), &BriefConfig::default());
                let text = caption(&b);
                assert_eq!(check(&text, &b, &v), Ok(()), "{text}");
            }
        }
        let labels = vec![label(&v, 450, 0.28), label(&v, 560, 0.10)];
        let b = Brief::new(&v, labels, Mode::AltText, 125, &BriefConfig::default());
        assert_eq!(caption(&b), "Photo, perhaps a bobsled or a football helmet (uncertain).");
        // Sure: the subject alone, no alternative joined to it.
        let b = Brief::new(&v, vec![label(&v, 665, 0.72), label(&v, 670, 0.12)], Mode::AltText, 125, &BriefConfig::default());
        assert_eq!(caption(&b), "A moped.");
        // Plural labels take no article; hopeless guesses are not offered.
        let b = Brief::new(&v, vec![label(&v, 447, 0.3), label(&v, 531, 0.2)], Mode::AltText, 125, &BriefConfig::default());
        assert_eq!(caption(&b), "Photo, perhaps binoculars or a digital watch (uncertain).");
        let b = Brief::new(&v, vec![label(&v, 971, 0.06), label(&v, 111, 0.05)], Mode::AltText, 125, &BriefConfig::default());
        assert_eq!(caption(&b), NOT_RECOGNISED);
        assert_eq!(truncate_words("A very long caption indeed.", 12), "A very long.");
    }
}
