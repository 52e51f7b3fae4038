//! The meeting's language: whether the notes can be made, and its name for people.
//!
//! The speech service transcribes any language its multilingual model knows (detected, or
//! given in the config), but everything after the transcript (the sentence rules that find
//! decisions and action items, the fact checker, the bundled language model) reads English.
//! Run on German they would find nothing or, worse, something wrong. So a meeting in another
//! language keeps its transcript and segment vectors, gets no notes, and its summary says
//! why in plain words.

/// Whether notes are made for a meeting in `code` (empty: the speech service did not say).
pub fn notes_supported(code: &str) -> bool {
    code.is_empty() || code == "en"
}

/// The English name of a language code, or the code itself for ones not listed.
pub fn name(code: &str) -> String {
    let known = [
        ("ar", "Arabic"),
        ("de", "German"),
        ("en", "English"),
        ("es", "Spanish"),
        ("fr", "French"),
        ("hi", "Hindi"),
        ("it", "Italian"),
        ("ja", "Japanese"),
        ("ko", "Korean"),
        ("nl", "Dutch"),
        ("pl", "Polish"),
        ("pt", "Portuguese"),
        ("ru", "Russian"),
        ("sv", "Swedish"),
        ("tr", "Turkish"),
        ("uk", "Ukrainian"),
        ("zh", "Chinese"),
    ];
    known.iter().find(|(c, _)| *c == code).map_or_else(|| format!("language \"{code}\""), |(_, n)| n.to_string())
}

/// The summary of a meeting whose notes cannot be made.
pub fn unsupported_summary(code: &str) -> String {
    format!(
        "The meeting is in {}. Decisions, action items and summaries are made from English speech only, so none are listed; the transcript is complete.",
        name(code)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_and_unknown_get_notes_others_a_plain_statement() {
        assert!(notes_supported("en") && notes_supported(""));
        assert!(!notes_supported("de"));
        assert_eq!(name("es"), "Spanish");
        assert_eq!(name("xh"), "language \"xh\"");
        assert!(unsupported_summary("de").starts_with("The meeting is in German."));
    }
}
