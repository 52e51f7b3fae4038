//! The chat prompt that asks the language model to phrase the labels. A 135M-parameter
//! model follows examples far better than instructions, so the prompt is mostly few-shot
//! turns (labels -> caption) showing the form wanted: main subject first, only labelled
//! objects, "possibly" when unsure. The examples use classes unlike common photos so their
//! words do not leak into captions unnoticed (and if they do, grounding rejects them).

use super::brief::{Brief, Mode};

/// A chat turn (role, content), independent of the decoder's message type.
pub type Turn = (&'static str, String);

const SYSTEM: &str = "You write alt text for blind readers from the labels an image classifier gave a photo. \
Name the most likely label first. Name no object that is not in the labels. \
Never say where things are, how many, their colour or what they do: the labels do not tell. Never write numbers.";

const ALT_TEXT_EXAMPLES: &[(&str, &str)] = &[
    ("Labels: golden retriever (81%), Labrador retriever (9%), tennis ball (5%)", "A golden retriever."),
    ("Labels: pizza (92%), frying pan (6%)", "A pizza."),
    ("Labels: sports car (44%), convertible (40%), racer (12%)", "A car."),
    ("Labels: canoe (86%), lakeside (10%), paddle (3%)", "A canoe."),
];

const DETAILED_EXAMPLES: &[(&str, &str)] = &[
    ("Labels: golden retriever (81%), Labrador retriever (9%), tennis ball (5%)", "A golden retriever. The dog could also be a Labrador retriever."),
    ("Labels: sports car (34%), convertible (30%), racer (12%)", "Possibly a sports car. It may also be a convertible or a racer."),
    ("Labels: pizza (92%), frying pan (6%)", "A pizza. The pizza is the main subject of the photo."),
    ("Labels: teapot (28%), pitcher (14%)", "Possibly a teapot. It could also be a pitcher."),
];

/// The user turn describing the brief's evidence: "Labels: tabby cat (62%), ...".
pub fn labels_line(brief: &Brief) -> String {
    let parts: Vec<String> = brief.evidence.iter().map(|l| format!("{} ({:.0}%)", l.name, (l.probability * 100.0).round())).collect();
    format!("Labels: {}", parts.join(", "))
}

/// How the answer must begin, written into the assistant's turn before the model continues:
/// "Possibly" when the encoder is unsure (the model rarely hedges on its own), else nothing.
pub fn answer_prefix(brief: &Brief) -> String {
    if brief.hedge {
        "Possibly".to_string()
    } else {
        String::new()
    }
}

/// The conversation to send: system prompt, few-shot turns, then the brief's labels.
pub fn conversation(brief: &Brief) -> Vec<Turn> {
    let examples = match brief.mode {
        Mode::AltText => ALT_TEXT_EXAMPLES,
        Mode::Detailed => DETAILED_EXAMPLES,
    };
    let mut turns: Vec<Turn> = vec![("system", SYSTEM.to_string())];
    for (user, assistant) in examples {
        turns.push(("user", user.to_string()));
        turns.push(("assistant", assistant.to_string()));
    }
    turns.push(("user", labels_line(brief)));
    turns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        brief::{label, BriefConfig},
        vocabulary::Vocabulary,
    };

    #[test]
    fn the_last_turn_lists_the_evidence() {
        let v = Vocabulary::imagenet();
        let labels = vec![label(&v, 285, 0.391), label(&v, 282, 0.33), label(&v, 281, 0.17), label(&v, 287, 0.03)];
        let b = Brief::new(&v, labels, Mode::AltText, 125, &BriefConfig::default());
        let turns = conversation(&b);
        assert_eq!(turns.last().unwrap(), &("user", "Labels: Egyptian cat (39%), tiger cat (33%), tabby cat (17%)".to_string()));
        assert_eq!(turns.len(), 2 + 2 * ALT_TEXT_EXAMPLES.len());
    }
}
