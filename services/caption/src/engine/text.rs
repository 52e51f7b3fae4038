//! Clean-up of decoded text before it is checked: what a small model adds around the
//! caption (quotes, a "Alt text:" prefix, a second line) is removed, nothing is invented.

use super::brief::{article, Mode};

/// Prefixes a model may echo from the prompt format.
const ECHOED_PREFIXES: &[&str] = &["alt text:", "caption:", "description:", "answer:"];

/// The caption inside `raw`: first line only for alt text, whitespace collapsed, quotes and
/// echoed prefixes stripped, first letter capitalised, final full stop ensured.
pub fn clean(raw: &str, mode: Mode) -> String {
    let mut text = raw.trim();
    if mode == Mode::AltText {
        text = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    }
    for prefix in ECHOED_PREFIXES {
        if text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix) {
            text = text[prefix.len()..].trim_start();
        }
    }
    let text = text.trim_matches(|c: char| c == '"' || c == '\'' || c == '“' || c == '”').trim();
    let mut out: String = fix_articles(&text.split_whitespace().collect::<Vec<_>>());
    if let Some(first) = out.chars().next() {
        let upper: String = first.to_uppercase().collect();
        out.replace_range(..first.len_utf8(), &upper);
    }
    if !out.is_empty() && !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// Words joined by spaces, with "a"/"an" agreeing with the next word ("a espresso" -> "an
/// espresso"), a slip small models make.
fn fix_articles(words: &[&str]) -> String {
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let lower = w.to_lowercase();
        let fixed = match (lower.as_str(), words.get(i + 1)) {
            ("a" | "an", Some(next)) => {
                let right = article(next.trim_start_matches(|c: char| !c.is_alphanumeric()));
                if w.starts_with('A') {
                    super::text::capitalise(right)
                } else {
                    right.to_string()
                }
            }
            _ => w.to_string(),
        };
        out.push(fixed);
    }
    out.join(" ")
}

/// `text` with its first letter upper-cased.
pub fn capitalise(text: &str) -> String {
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_what_models_add() {
        assert_eq!(clean("  \"a tabby cat\"\nLabels: more", Mode::AltText), "A tabby cat.");
        assert_eq!(clean("Alt text: A moped.", Mode::AltText), "A moped.");
        assert_eq!(clean("An espresso.\n  It is   hot.", Mode::Detailed), "An espresso. It is hot.");
        assert_eq!(clean("", Mode::AltText), "");
        assert_eq!(capitalise("possibly a cat."), "Possibly a cat.");
        assert_eq!(clean("A espresso in an cup", Mode::AltText), "An espresso in a cup.");
        assert_eq!(clean("possibly an unicycle", Mode::AltText), "Possibly a unicycle.");
    }
}
