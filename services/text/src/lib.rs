//! Word-level text normalisation, shared by the gateway's fact checker (which must tell
//! whether "the tenth", "10th" and "10" name the same day) and the evaluation scorer
//! (which matches key terms against what the cluster wrote).
//!
//! Everything here is deterministic and dictionary-free on purpose: the checks built on
//! it must give the same verdict on every machine and for every model.
//!
//! - [`words`]: lower-case word tokens, with numbers written out ("forty five thousand",
//!   "45,000", "$45000") folded to one digit string (`45000`) and ordinals ("tenth",
//!   "10th") to their number, `%` read as `percent` and `$` as `dollar`.
//! - [`stem`]: a light suffix stripper, enough to match "revised" with "revision".
//! - [`edit_distance`]: Levenshtein distance over characters.

mod numbers;

pub use numbers::{number_value, Number};

/// One normalised word of a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// Lower-case form; a number's digits (`"45000"`, `"2.1"`).
    pub text: String,
    /// Whether the word is a number (cardinal or ordinal).
    pub number: Option<Number>,
    /// Whether the word was written with a capital letter where it stood (names, sentence
    /// starts, acronyms).
    pub capitalised: bool,
    /// Whether the word starts a sentence (first word, or after `.`, `!`, `?`).
    pub sentence_start: bool,
}

/// Raw tokens: runs of letters, digits and apostrophes; `.` and `,` inside digit runs are
/// kept (`2.5`, `45,000`); `%` and `$` become words of their own.
fn raw_tokens(text: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let mut sentence_start = true;
    let mut current_start = true;
    let flush = |current: &mut String, out: &mut Vec<(String, bool)>, start: bool| {
        let word = current.trim_matches('\'').to_string();
        if !word.is_empty() {
            out.push((word, start));
        }
        current.clear();
    };
    for (i, &c) in chars.iter().enumerate() {
        let digit_join = (c == '.' || c == ',') && i > 0 && chars[i - 1].is_ascii_digit() && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_alphanumeric() || c == '\'' || c == '’' || digit_join {
            if current.is_empty() {
                current_start = sentence_start;
                sentence_start = false;
            }
            current.push(if c == '’' { '\'' } else { c });
            continue;
        }
        flush(&mut current, &mut out, current_start);
        match c {
            '.' | '!' | '?' => sentence_start = true,
            '%' => out.push(("percent".into(), false)),
            '$' | '€' | '£' => out.push((
                (if c == '$' {
                    "dollar"
                } else if c == '€' {
                    "euro"
                } else {
                    "pound"
                })
                .into(),
                false,
            )),
            _ => {}
        }
    }
    flush(&mut current, &mut out, current_start);
    out
}

/// The normalised words of `text` (see the crate docs).
pub fn words(text: &str) -> Vec<Word> {
    let raw = raw_tokens(text);
    let lower: Vec<String> = raw.iter().map(|(w, _)| w.to_lowercase().replace(',', "")).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        // "6pm", "5k", "10am": a number written against a unit is the number and the unit.
        if let Some(split) = lower[i].find(|c: char| c.is_alphabetic()).filter(|at| *at > 0 && lower[i].as_bytes()[0].is_ascii_digit()) {
            let (digits, unit) = lower[i].split_at(split);
            if !matches!(unit, "st" | "nd" | "rd" | "th") && digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
                if let Some(value) = number_value(digits) {
                    out.push(Word { text: value.digits(), number: Some(value), capitalised: false, sentence_start: raw[i].1 });
                    out.push(Word { text: unit.to_string(), number: None, capitalised: false, sentence_start: false });
                    i += 1;
                    continue;
                }
            }
        }
        if let Some((value, used)) = numbers::parse_number(&lower[i..]) {
            out.push(Word {
                text: value.digits(),
                number: Some(value),
                capitalised: raw[i].0.chars().next().is_some_and(char::is_uppercase),
                sentence_start: raw[i].1,
            });
            i += used;
            continue;
        }
        let (word, start) = &raw[i];
        let mut text = lower[i].clone();
        // "dollars" and "dollar" are one unit; "%" was read as "percent" above.
        if matches!(text.as_str(), "dollars" | "euros" | "pounds" | "percents") {
            text.pop();
        }
        out.push(Word { text, number: None, capitalised: word.chars().next().is_some_and(char::is_uppercase), sentence_start: *start });
        i += 1;
    }
    out
}

/// The lower-case normalised forms of [`words`].
pub fn normalise(text: &str) -> Vec<String> {
    words(text).into_iter().map(|w| w.text).collect()
}

/// A light stem: plural `-s`, `-ing`, `-ed`, `-ion(s)`, `-ment`, `-er` and a final `-e`
/// stripped while at least three letters remain ("revised", "revision" and "revise" all
/// give `revis`; "meetings" gives `meet`). Numbers are returned unchanged.
pub fn stem(word: &str) -> String {
    if word.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return word.to_string();
    }
    let mut w = word.to_lowercase();
    let strip = |w: &mut String, suffix: &str| {
        if w.len() >= suffix.len() + 3 && w.ends_with(suffix) {
            w.truncate(w.len() - suffix.len());
            true
        } else {
            false
        }
    };
    if w.ends_with("ies") && w.len() > 4 {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        strip(&mut w, "s");
    }
    for suffix in ["ions", "ion", "ment", "ing", "ed", "er"] {
        if strip(&mut w, suffix) {
            break;
        }
    }
    strip(&mut w, "e");
    // "planned" -> "plann" -> "plan": a doubled final consonant left by -ed/-ing.
    let b = w.as_bytes();
    if b.len() >= 4 && b[b.len() - 1] == b[b.len() - 2] && !b"aeiouls".contains(&b[b.len() - 1]) {
        w.pop();
    }
    w
}

/// Levenshtein distance between `a` and `b`, over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Word error rate of `hypothesis` against `reference`, over [`normalise`]d words:
/// (substitutions + deletions + insertions) / reference words. Returns the error count and
/// the reference length.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    let mut previous: Vec<usize> = (0..=h.len()).collect();
    let mut current = vec![0; h.len() + 1];
    for (i, rw) in r.iter().enumerate() {
        current[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            current[j + 1] = (previous[j] + usize::from(rw != hw)).min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    (previous[h.len()], r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_words_and_digits_normalise_alike() {
        assert_eq!(normalise("We cut it by ten percent."), ["we", "cut", "it", "by", "10", "percent"]);
        assert_eq!(normalise("We cut it by 10%."), ["we", "cut", "it", "by", "10", "percent"]);
        assert_eq!(normalise("It costs forty five thousand dollars"), ["it", "costs", "45000", "dollar"]);
        assert_eq!(normalise("It costs $45,000."), ["it", "costs", "dollar", "45000"]);
        assert_eq!(normalise("on the tenth of October"), ["on", "the", "10", "of", "october"]);
        assert_eq!(normalise("on the 10th"), ["on", "the", "10"]);
        assert_eq!(normalise("the twenty first of June"), ["the", "21", "of", "june"]);
        assert_eq!(normalise("version two point one"), ["version", "2.1"]);
        assert_eq!(normalise("version 2.1"), ["version", "2.1"]);
        // Two numbers side by side stay two numbers.
        assert_eq!(normalise("at seven thirty"), ["at", "7", "30"]);
        assert_eq!(normalise("sixty to seventy thousand"), ["60", "to", "70000"]);
        assert_eq!(normalise("two hundred new books"), ["200", "new", "books"]);
        assert_eq!(normalise("one hundred and twenty"), ["120"]);
        assert_eq!(normalise("Laura's report"), ["laura's", "report"]);
        assert_eq!(normalise("at 6pm or 10th"), ["at", "6", "pm", "or", "10"]);
    }

    #[test]
    fn words_keep_case_and_sentence_starts() {
        let w = words("Thanks. Ask Maya, then AWS.");
        assert!(w[0].sentence_start && w[0].capitalised);
        assert!(w[1].capitalised && w[1].sentence_start);
        assert_eq!(w[2].text, "maya");
        assert!(w[2].capitalised && !w[2].sentence_start);
        assert!(w[4].capitalised);
        let n = words("the 10th and three");
        assert_eq!(n[1].number, Some(Number { value: 10.0, ordinal: true }));
        assert_eq!(n[3].number, Some(Number { value: 3.0, ordinal: false }));
    }

    #[test]
    fn stems_match_word_families() {
        assert_eq!(stem("revised"), stem("revision"));
        assert_eq!(stem("revise"), stem("revised"));
        assert_eq!(stem("migration"), stem("migrate"));
        assert_eq!(stem("improves"), stem("improve"));
        assert_eq!(stem("reduced"), stem("reduce"));
        assert_eq!(stem("interviews"), stem("interviewed"));
        assert_eq!(stem("deliveries"), stem("delivery"));
        assert_eq!(stem("planned"), stem("plan"));
        assert_eq!(stem("tickets"), "ticket");
        assert_eq!(stem("bus"), "bus");
        assert_eq!(stem("45"), "45");
    }

    #[test]
    fn edit_distance_and_word_errors() {
        assert_eq!(edit_distance("iko", "aiko"), 1);
        assert_eq!(edit_distance("bruna", "bruno"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(word_errors("Laura will send ten reports", "Laura will send 10 report"), (1, 5));
        assert_eq!(word_errors("a b c", ""), (3, 3));
    }
}
