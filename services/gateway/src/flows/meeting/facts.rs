//! The fact checker: a generated sentence (an answer, a summary sentence, an action item's
//! owner or due date) may hold no number, amount, date, time or name that its evidence
//! (the transcript lines it cites) lacks, and an answer may not merely restate its question.
//!
//! Facts are read with [`mmc_text::words`], so "10th", "tenth" and "10" are one fact,
//! "$9" and "nine dollars" another, and a participant's name heard as "Iko" supports the
//! participant "Aiko" (see [`People`]). The check is lexical and deterministic: it cannot
//! tell whether a supported fact is used correctly, only that nothing was made up.

use std::collections::HashSet;

use mmc_text::{stem, words, Word};

use super::people::People;

/// Capitalised words that are not names: function words, sentence openers, fillers.
pub const NOT_NAMES: &[&str] = &[
    "i",
    "i'm",
    "i'll",
    "i've",
    "i'd",
    "we",
    "we'll",
    "we're",
    "we've",
    "the",
    "a",
    "an",
    "and",
    "but",
    "or",
    "so",
    "then",
    "yes",
    "no",
    "not",
    "it",
    "it's",
    "this",
    "that",
    "these",
    "those",
    "there",
    "their",
    "they",
    "he",
    "she",
    "you",
    "your",
    "our",
    "my",
    "his",
    "her",
    "its",
    "what",
    "who",
    "when",
    "where",
    "why",
    "how",
    "which",
    "if",
    "in",
    "on",
    "at",
    "to",
    "for",
    "of",
    "by",
    "with",
    "from",
    "after",
    "before",
    "until",
    "about",
    "as",
    "also",
    "all",
    "both",
    "each",
    "every",
    "everyone",
    "everybody",
    "someone",
    "somebody",
    "anyone",
    "anybody",
    "nobody",
    "none",
    "nothing",
    "please",
    "thanks",
    "thank",
    "okay",
    "ok",
    "hello",
    "hi",
    "hey",
    "good",
    "great",
    "sure",
    "let's",
    "lets",
    "let",
    "next",
    "finally",
    "first",
    "meanwhile",
    "is",
    "are",
    "was",
    "were",
    "will",
    "can",
    "could",
    "would",
    "should",
    "do",
    "does",
    "did",
    "has",
    "have",
    "had",
    "be",
    "been",
    "today",
    "tomorrow",
    "tonight",
    "yesterday",
    "well",
    "right",
    "now",
    "one",
    "sorry",
    "welcome",
    "morning",
    "afternoon",
    "evening",
    "agreed",
    "decided",
    "meeting",
    "team",
    "action",
    "decision",
    "decisions",
    "summary",
    "notes",
    "answer",
    "speaker",
    "yeah",
    "oh",
    "uh",
    "um",
    "mr",
    "mrs",
    "ms",
    "dr",
];

/// Weekday and month names, and the relative day words: facts of their own kind.
pub const DATE_WORDS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "mondays",
    "tuesdays",
    "wednesdays",
    "thursdays",
    "fridays",
    "saturdays",
    "sundays",
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "today",
    "tomorrow",
    "tonight",
    "yesterday",
    "noon",
    "midnight",
    "weekend",
];

/// One checkable fact of a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Fact {
    /// A number, amount or day of the month, as digits.
    Number(String),
    /// A weekday, month or relative day ("tomorrow").
    Date(String),
    /// A capitalised word that is not a function word: a name or proper noun.
    Name(String),
}

impl std::fmt::Display for Fact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fact::Number(n) | Fact::Date(n) | Fact::Name(n) => f.write_str(n),
        }
    }
}

fn is_date_word(w: &Word) -> bool {
    // "may" and "march" are dates only when capitalised ("we may", "they march").
    DATE_WORDS.contains(&w.text.as_str()) && (w.capitalised || !matches!(w.text.as_str(), "may" | "march"))
}

/// The facts `text` states.
pub fn facts(text: &str) -> Vec<Fact> {
    let mut out = Vec::new();
    for w in words(text) {
        let fact = if w.number.is_some() {
            Fact::Number(w.text)
        } else if is_date_word(&w) {
            Fact::Date(w.text.trim_end_matches('s').to_string())
        } else if w.capitalised && !NOT_NAMES.contains(&w.text.as_str()) && w.text.chars().count() >= 2 {
            Fact::Name(w.text.trim_end_matches("'s").to_string())
        } else {
            continue;
        };
        if !out.contains(&fact) {
            out.push(fact);
        }
    }
    out
}

/// What a set of transcript lines supports.
pub struct Evidence<'a> {
    words: HashSet<String>,
    people: &'a People,
    texts: Vec<String>,
}

impl<'a> Evidence<'a> {
    pub fn new<S: AsRef<str>>(texts: &[S], people: &'a People) -> Self {
        let mut set = HashSet::new();
        for t in texts {
            for w in words(t.as_ref()) {
                set.insert(w.text.trim_end_matches("'s").to_string());
                if is_date_word(&w) {
                    set.insert(w.text.trim_end_matches('s').to_string());
                }
            }
        }
        Self { words: set, people, texts: texts.iter().map(|t| t.as_ref().to_string()).collect() }
    }

    /// Whether the evidence states `fact`.
    pub fn supports(&self, fact: &Fact) -> bool {
        match fact {
            Fact::Number(n) | Fact::Date(n) => self.words.contains(n),
            Fact::Name(n) => {
                self.words.contains(n)
                    // A participant whose name the transcript misheard ("Iko" for "Aiko").
                    || self.people.participant(n).is_some_and(|p| self.texts.iter().any(|t| self.people.mentions(t, p)))
            }
        }
    }

    /// The facts of `text` this evidence does not state.
    pub fn unsupported(&self, text: &str) -> Vec<Fact> {
        facts(text).into_iter().filter(|f| !self.supports(f)).collect()
    }
}

/// Words that say nothing about a meeting's content: question words, auxiliaries,
/// pronouns, articles and prepositions, and the generic nouns of questions ("date", "time").
pub const QUESTION_WORDS: &[&str] = &[
    "who",
    "whom",
    "whose",
    "what",
    "when",
    "where",
    "why",
    "how",
    "which",
    "much",
    "many",
    "long",
    "big",
    "large",
    "often",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "will",
    "would",
    "shall",
    "should",
    "can",
    "could",
    "do",
    "does",
    "did",
    "has",
    "have",
    "had",
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "by",
    "with",
    "from",
    "about",
    "and",
    "or",
    "it",
    "its",
    "they",
    "them",
    "their",
    "we",
    "our",
    "us",
    "you",
    "your",
    "i",
    "me",
    "my",
    "he",
    "she",
    "his",
    "her",
    "this",
    "that",
    "there",
    "date",
    "time",
    "day",
    "new",
    "exactly",
    "say",
    "said",
    "mention",
    "mentioned",
    "meeting",
    "get",
    "go",
    "going",
    "need",
    "needs",
    "to",
    "so",
    "any",
    "some",
    "just",
    "also",
    "not",
    "no",
    "yes",
    "up",
    "out",
    "as",
    "if",
    "than",
    "then",
    "into",
    "per",
    "each",
    "every",
    "one",
    "all",
    "share",
    "amount",
    "number",
    "kind",
    "type",
    "happen",
    "happened",
    "happens",
    "tell",
    "know",
    "until",
    "till",
];

/// The stems of `text`'s words that carry content (numbers included).
pub fn focus_stems(text: &str) -> HashSet<String> {
    words(text)
        .into_iter()
        .filter(|w| w.number.is_some() || (!QUESTION_WORDS.contains(&w.text.as_str()) && !NOT_NAMES.contains(&w.text.as_str()) && w.text.len() >= 2))
        .map(|w| stem(w.text.trim_end_matches("'s")))
        .collect()
}

/// Whether `answer` merely restates `question`: a question itself, or no content word
/// beyond the question's.
pub fn is_echo(answer: &str, question: &str) -> bool {
    let answer = answer.trim();
    if answer.ends_with('?') {
        return true;
    }
    let q = focus_stems(question);
    let a = focus_stems(answer);
    a.iter().all(|w| q.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn people(names: &[&str]) -> People {
        People::new(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[])
    }

    #[test]
    fn numbers_dates_and_names_are_facts() {
        let f = facts("Laura will send the budget of $5,000 on Monday, the 10th of May.");
        assert_eq!(
            f,
            [
                Fact::Name("laura".into()),
                Fact::Number("5000".into()),
                Fact::Date("monday".into()),
                Fact::Number("10".into()),
                Fact::Date("may".into())
            ]
        );
        // Function words and "we may" are not facts.
        assert!(facts("We may do it. The team agreed.").is_empty());
    }

    #[test]
    fn an_invented_amount_is_caught_even_when_the_rest_overlaps() {
        let p = people(&[]);
        let e = Evidence::new(&["We agreed to reduce the marketing budget by ten percent."], &p);
        assert!(e.unsupported("The marketing budget is reduced by 10%.").is_empty());
        assert_eq!(e.unsupported("The marketing budget is $5,000."), [Fact::Number("5000".into())]);
        assert_eq!(e.unsupported("The budget is reduced by twenty percent."), [Fact::Number("20".into())]);
    }

    #[test]
    fn ordinals_and_days_normalise() {
        let p = people(&[]);
        let e = Evidence::new(&["The vaccination day moves to the tenth of October."], &p);
        assert!(e.unsupported("On the 10th of October.").is_empty());
        assert!(e.unsupported("October 10").is_empty());
        assert_eq!(e.unsupported("On the 11th of October."), [Fact::Number("11".into())]);
        assert_eq!(e.unsupported("On Friday."), [Fact::Date("friday".into())]);
        let e = Evidence::new(&["We close the hotline on Sundays."], &p);
        assert!(e.unsupported("On Sunday.").is_empty());
    }

    #[test]
    fn names_must_be_in_the_evidence_or_a_misheard_participant() {
        let p = people(&["Aiko", "Bruno"]);
        let e = Evidence::new(&["Iko, please write the help article by Friday."], &p);
        assert!(e.unsupported("Aiko will write it.").is_empty());
        assert_eq!(e.unsupported("Bruno will write it."), [Fact::Name("bruno".into())]);
        assert_eq!(e.unsupported("Kevin will write it."), [Fact::Name("kevin".into())]);
    }

    #[test]
    fn echoes_are_recognised() {
        let q = "Who will book the conference room?";
        assert!(is_echo("Who will book the conference room?", q));
        assert!(is_echo("The conference room will be booked.", q));
        assert!(is_echo("book the conference room", q));
        assert!(!is_echo("Kevin", q));
        assert!(!is_echo("Kevin will book it.", q));
        assert!(is_echo("It is 2.", "Is it 2?"));
        assert!(!is_echo("Two minutes.", "What is the new alert threshold?"));
    }
}
