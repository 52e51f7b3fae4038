//! The deterministic caption built from the labels alone: the answer when the language model
//! fails its checks, and always grounded by construction.

use super::{
    brief::{article, Brief, Mode},
    text::capitalise,
};

/// A caption that names only the brief's labels and hedges when the encoder is unsure.
pub fn caption(brief: &Brief) -> String {
    let noun = &brief.subject_noun;
    let main = if brief.hedge { format!("possibly {} {noun}", article(noun)) } else { format!("{} {noun}", article(noun)) };
    // An alternative outside the subject group, worth mentioning when unsure.
    let other = brief
        .evidence
        .iter()
        .find(|l| !brief.subject_classes.contains(&l.class_index) && l.probability >= 0.1)
        .map(|l| format!("{} {}", article(&l.name), l.name));
    let text = match brief.mode {
        Mode::AltText => match (&other, brief.hedge) {
            (Some(o), true) => format!("{} or {o}.", capitalise(&main)),
            _ => format!("{}.", capitalise(&main)),
        },
        Mode::Detailed => {
            let mut s = format!("{}.", capitalise(&main));
            let alternatives: Vec<String> =
                brief.evidence.iter().skip(1).map(|l| format!("{} {} ({:.0}%)", article(&l.name), l.name, l.probability * 100.0)).collect();
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
        assert_eq!(caption(&b), "Possibly a bobsled or a football helmet.");
        assert_eq!(truncate_words("A very long caption indeed.", 12), "A very long.");
    }
}
