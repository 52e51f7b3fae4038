//! The scorer: what the cluster wrote about a meeting, held against the meeting's facts.
//! Deterministic and model-free; every rule is here and in docs/gateway.md.
//!
//! - **Key terms.** Text and key terms are normalised alike ([`mmc_text::normalise`]: lower
//!   case, number words and ordinals as digits, `%` as `percent`), plurals folded. A key
//!   term (one or more words; `a|b` for alternatives) matches when its words appear in the
//!   text in a row.
//! - **Lines.** Each produced item is aligned to the script line it was transcribed from:
//!   the line holding the largest share of the item's words (at least half). Decisions and
//!   action items are scored by their lines, so that a speech-recognition error in a key
//!   word ("free" for "freeze") counts in the WER, not as a wrong decision; the strict
//!   key-term figures are reported beside them.
//! - **Decisions.** An expected decision's line is the script line holding all its keys.
//!   Recall: expected decisions whose line some produced decision comes from. Precision:
//!   produced decisions that come from an expected decision's line. Strict recall: expected
//!   decisions whose keys a produced decision holds.
//! - **Action items.** An expected action's line is the script line holding its keys and its
//!   owner's name. Its task is found when a produced action item comes from that line; it
//!   is fully right when that item's owner is the expected person and its due phrase holds
//!   the expected due keys (or is empty when none was stated). Owner accuracy: right owners
//!   among found tasks. Precision: produced items that come from an expected action's line.
//! - **Invented items**: an action item whose owner is neither a participant (when the
//!   list was given) nor a word of its cited lines, or whose due phrase states a number or
//!   date its cited lines lack; a decision or item citing no line.
//! - **Questions.** A question with expected keys is answered right when the answer is
//!   marked answerable and holds all keys; one the meeting does not answer, when the answer
//!   is marked not answerable. **Invented answers**: an answer marked answerable to a
//!   question the meeting does not answer, or one stating a number, date or name that the
//!   transcript (and the participant list) lacks.
//! - **Summary**: numbers, dates and names of the summary that the transcript lacks.
//! - **WER** over normalised words of the script and the transcript.

use std::collections::HashSet;

use mmc_proto::{gateway::v1::MeetingSummary, speech::v1::Segment};
use mmc_text::{normalise, word_errors, words};
use serde::Serialize;

use super::fixtures::Meeting;

fn fold(word: &str) -> String {
    if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") {
        word[..word.len() - 1].to_string()
    } else {
        word.to_string()
    }
}

fn folded(text: &str) -> Vec<String> {
    normalise(text).iter().map(|w| fold(w.trim_end_matches("'s"))).collect()
}

/// Whether `text` holds the key term `key` (see the module docs).
pub fn has_key(text: &str, key: &str) -> bool {
    let words = folded(text);
    key.split('|').any(|alternative| {
        let k = folded(alternative);
        !k.is_empty() && words.windows(k.len()).any(|w| w == k.as_slice())
    })
}

fn has_all(text: &str, keys: &[String]) -> bool {
    keys.iter().all(|k| has_key(text, k))
}

/// The script line `text` was transcribed from: the one holding the largest share of
/// `text`'s words (words of three letters or more; numbers count), if at least half; the
/// first of equals.
pub fn source_line(text: &str, lines: &[String]) -> Option<usize> {
    let words: HashSet<String> = folded(text).into_iter().filter(|w| w.len() >= 3 || w.chars().all(|c| c.is_ascii_digit())).collect();
    if words.is_empty() {
        return None;
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let line: HashSet<String> = folded(line).into_iter().collect();
            (words.iter().filter(|w| line.contains(*w)).count() as f64 / words.len() as f64, i)
        })
        .filter(|(share, _)| *share >= 0.5)
        // Ties go to the first such line (a script may repeat a line: `--concatenate`).
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, i)| i)
}

const WEEKDAYS_AND_MONTHS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "march",
    "april",
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
];

/// Numbers, dates and (with `names`) capitalised words that do not start a sentence, as
/// normalised words.
fn claims(text: &str, names: bool) -> Vec<String> {
    words(text)
        .into_iter()
        .map(|w| (fold(w.text.trim_end_matches("'s")), w))
        .filter(|(t, w)| {
            w.number.is_some() || WEEKDAYS_AND_MONTHS.contains(&t.as_str()) || (names && w.capitalised && !w.sentence_start && t.len() > 1)
        })
        .map(|(t, _)| t)
        .collect()
}

/// The claims of `text` that `evidence` (normalised words) lacks.
fn unsupported(text: &str, evidence: &HashSet<String>, names: bool) -> Vec<String> {
    claims(text, names).into_iter().filter(|c| !evidence.contains(c)).collect()
}

/// One question's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub question: String,
    pub expected: Vec<String>,
    pub answer: String,
    pub answerable: bool,
    /// "model", "extractive" or "none".
    pub source: String,
    pub right: bool,
    pub invented: bool,
}

/// The scores of one run (one meeting, voice, speed and prompt version).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Score {
    pub meeting: String,
    pub setting: String,
    pub voice: String,
    pub speed: u32,
    pub prompt_version: String,
    pub word_errors: usize,
    pub reference_words: usize,
    pub decisions_expected: usize,
    pub decisions_found: usize,
    pub decisions_produced: usize,
    pub decisions_right: usize,
    /// Expected decisions whose key terms a produced decision holds (speech errors count).
    pub decisions_found_by_terms: usize,
    pub actions_expected: usize,
    pub actions_task_found: usize,
    pub actions_owner_right: usize,
    pub actions_fully_right: usize,
    pub actions_produced: usize,
    pub actions_produced_right: usize,
    pub invented_items: Vec<String>,
    pub questions: usize,
    pub questions_right: usize,
    pub invented_answers: Vec<String>,
    pub extractive_answers: usize,
    pub summary_invented: Vec<String>,
    pub answers: Vec<Answer>,
    /// The transcript, one segment a line (JSON report only).
    pub transcript: Vec<String>,
    /// The produced action items as `owner | due | text` (JSON report only).
    pub action_items: Vec<String>,
    pub decisions: Vec<String>,
    pub seconds: f64,
}

/// Scores a summary (and its transcript) against the meeting's facts; answers come later
/// through [`Score::add_answer`].
pub fn score_summary(meeting: &Meeting, segments: &[Segment], summary: &MeetingSummary, use_participants: bool) -> Score {
    let transcript: String = segments.iter().map(|s| s.text.trim()).collect::<Vec<_>>().join(" ");
    let (word_errors, reference_words) = word_errors(&meeting.lines.join(" "), &transcript);
    let cited = |ids: &[u32]| segments.iter().filter(|s| ids.contains(&s.id)).map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
    let evidence = |text: &str| -> HashSet<String> { folded(text).into_iter().collect() };
    let mut s = Score { word_errors, reference_words, ..Default::default() };
    s.transcript = segments.iter().map(|g| g.text.trim().to_string()).collect();
    s.decisions = summary.decisions.iter().map(|d| d.text.clone()).collect();
    s.action_items =
        summary.action_items.iter().map(|a| format!("{} | {} | {}", a.owner, a.due, a.item.as_ref().map_or("", |i| i.text.as_str()))).collect();

    // Decisions, by the script lines they come from.
    let line_of = |keys: &[String], owner: Option<&str>| meeting.lines.iter().position(|l| has_all(l, keys) && owner.is_none_or(|o| has_key(l, o)));
    let decision_lines: Vec<Option<usize>> = meeting.decisions.iter().map(|d| line_of(&d.keys, None)).collect();
    let produced_lines: Vec<Option<usize>> = summary.decisions.iter().map(|d| source_line(&d.text, &meeting.lines)).collect();
    s.decisions_expected = meeting.decisions.len();
    s.decisions_produced = summary.decisions.len();
    s.decisions_found = decision_lines.iter().filter(|l| l.is_some() && produced_lines.contains(l)).count();
    s.decisions_right = produced_lines.iter().filter(|l| l.is_some() && decision_lines.contains(l)).count();
    s.decisions_found_by_terms = meeting.decisions.iter().filter(|d| summary.decisions.iter().any(|p| has_all(&p.text, &d.keys))).count();
    for d in &summary.decisions {
        if d.segment_ids.is_empty() {
            s.invented_items.push(format!("decision cites no line: {}", d.text));
        }
    }

    // Action items.
    s.actions_expected = meeting.actions.len();
    s.actions_produced = summary.action_items.len();
    let items: Vec<(String, &str, &str, Vec<u32>)> = summary
        .action_items
        .iter()
        .map(|a| {
            let item = a.item.clone().unwrap_or_default();
            (item.text, a.owner.as_str(), a.due.as_str(), item.segment_ids)
        })
        .collect();
    let item_lines: Vec<Option<usize>> = items.iter().map(|(text, ..)| source_line(text, &meeting.lines)).collect();
    let action_lines: Vec<Option<usize>> = meeting.actions.iter().map(|a| line_of(&a.keys, Some(&a.owner))).collect();
    for (expected, line) in meeting.actions.iter().zip(&action_lines) {
        let found: Vec<_> = items.iter().zip(&item_lines).filter(|(_, l)| line.is_some() && *l == line).map(|(i, _)| i).collect();
        if found.is_empty() {
            continue;
        }
        s.actions_task_found += 1;
        if found.iter().any(|(_, owner, ..)| owner.eq_ignore_ascii_case(&expected.owner)) {
            s.actions_owner_right += 1;
        }
        let due_right = |due: &str| if expected.due.is_empty() { due.is_empty() } else { has_all(due, &expected.due) };
        if found.iter().any(|(_, owner, due, _)| owner.eq_ignore_ascii_case(&expected.owner) && due_right(due)) {
            s.actions_fully_right += 1;
        }
    }
    s.actions_produced_right = item_lines.iter().filter(|l| l.is_some() && action_lines.contains(l)).count();
    let people: Vec<String> = meeting.participants.iter().map(|p| fold(&p.to_lowercase())).collect();
    for (text, owner, due, ids) in &items {
        if ids.is_empty() {
            s.invented_items.push(format!("action item cites no line: {text}"));
        }
        let heard_or_listed = owner.is_empty() || has_key(&cited(ids), owner) || (use_participants && people.contains(&fold(&owner.to_lowercase())));
        if !heard_or_listed {
            s.invented_items.push(format!("owner {owner:?} is not a participant: {text}"));
        }
        let missing = unsupported(due, &evidence(&cited(ids)), false);
        if !missing.is_empty() {
            s.invented_items.push(format!("due {due:?} states {missing:?}, which its line lacks: {text}"));
        }
    }

    // Summary.
    let mut known = evidence(&transcript);
    known.extend(people.iter().cloned());
    s.summary_invented = unsupported(&summary.summary, &known, true);
    s
}

/// What the gateway answered to one question.
pub struct Reply<'a> {
    pub answer: &'a str,
    pub answerable: bool,
    /// "model", "extractive" or "none".
    pub source: &'a str,
}

impl Score {
    /// Adds one question's outcome.
    pub fn add_answer(&mut self, question: &str, expected: &[String], reply: Reply<'_>, segments: &[Segment], participants: &[String]) {
        let Reply { answer, answerable, source } = reply;
        let transcript: String = segments.iter().map(|s| s.text.trim()).collect::<Vec<_>>().join(" ");
        let mut known: HashSet<String> = folded(&transcript).into_iter().collect();
        known.extend(participants.iter().map(|p| fold(&p.to_lowercase())));
        known.extend(folded(question));
        let right = if expected.is_empty() { !answerable } else { answerable && has_all(answer, expected) };
        let missing = if answerable { unsupported(answer, &known, true) } else { Vec::new() };
        let invented = (expected.is_empty() && answerable) || !missing.is_empty();
        self.questions += 1;
        self.questions_right += usize::from(right);
        self.extractive_answers += usize::from(source == "extractive");
        if invented {
            self.invented_answers.push(format!("{question} -> {answer}"));
        }
        self.answers.push(Answer {
            question: question.into(),
            expected: expected.to_vec(),
            answer: answer.into(),
            answerable,
            source: source.into(),
            right,
            invented,
        });
    }

    /// Adds `other`'s counts to this one (for totals).
    pub fn add(&mut self, other: &Score) {
        self.word_errors += other.word_errors;
        self.reference_words += other.reference_words;
        self.decisions_expected += other.decisions_expected;
        self.decisions_found += other.decisions_found;
        self.decisions_produced += other.decisions_produced;
        self.decisions_right += other.decisions_right;
        self.decisions_found_by_terms += other.decisions_found_by_terms;
        self.actions_expected += other.actions_expected;
        self.actions_task_found += other.actions_task_found;
        self.actions_owner_right += other.actions_owner_right;
        self.actions_fully_right += other.actions_fully_right;
        self.actions_produced += other.actions_produced;
        self.actions_produced_right += other.actions_produced_right;
        self.invented_items.extend(other.invented_items.iter().cloned());
        self.questions += other.questions;
        self.questions_right += other.questions_right;
        self.invented_answers.extend(other.invented_answers.iter().cloned());
        self.extractive_answers += other.extractive_answers;
        self.summary_invented.extend(other.summary_invented.iter().cloned());
        self.seconds += other.seconds;
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// The headline figures of a score, by name (what the table and the JSON report show).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Figures {
    pub wer: f64,
    pub decision_precision: f64,
    pub decision_recall: f64,
    /// Recall by key terms: speech-recognition errors in a key word count as misses.
    pub decision_recall_terms: f64,
    pub action_recall: f64,
    pub owner_accuracy: f64,
    pub action_precision: f64,
    pub invented_items: usize,
    pub question_accuracy: f64,
    pub invented_answers: usize,
    pub extractive_answers: usize,
    pub summary_invented: usize,
}

impl Score {
    pub fn figures(&self) -> Figures {
        Figures {
            wer: ratio(self.word_errors, self.reference_words),
            decision_precision: ratio(self.decisions_right, self.decisions_produced),
            decision_recall: ratio(self.decisions_found, self.decisions_expected),
            decision_recall_terms: ratio(self.decisions_found_by_terms, self.decisions_expected),
            action_recall: ratio(self.actions_fully_right, self.actions_expected),
            owner_accuracy: ratio(self.actions_owner_right, self.actions_task_found),
            action_precision: ratio(self.actions_produced_right, self.actions_produced),
            invented_items: self.invented_items.len(),
            question_accuracy: ratio(self.questions_right, self.questions),
            invented_answers: self.invented_answers.len(),
            extractive_answers: self.extractive_answers,
            summary_invented: self.summary_invented.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmc_proto::gateway::v1::{ActionItem, CitedItem};

    #[test]
    fn key_terms_match_normalised_words_in_a_row() {
        assert!(has_key("We agreed to cut it by ten percent.", "10"));
        assert!(has_key("It moves to the 10th of October.", "10"));
        assert!(has_key("by the end of the month", "end of the month"));
        assert!(!has_key("the end of a month", "end of the month"));
        assert!(has_key("Sundays", "sunday"));
        assert!(has_key("forty five thousand dollars", "45000"));
        assert!(has_key("$45,000", "45000"));
        assert!(has_key("Farid", "fareed|farid"));
        assert!(!has_key("100 people", "10"));
    }

    fn seg(id: u32, text: &str) -> Segment {
        Segment { id, text: text.into(), ..Default::default() }
    }

    #[test]
    fn a_meeting_is_scored_against_its_facts() {
        let meeting: Meeting = toml::from_str(
            r#"
title = "t"
setting = "s"
participants = ["Laura", "Kevin"]
lines = ["We agreed to cut the budget by ten percent.", "Laura will send the budget on Monday.", "Kevin will book the room."]
[[decisions]]
keys = ["budget", "10"]
[[actions]]
owner = "Laura"
keys = ["send", "budget"]
due = ["monday"]
[[actions]]
owner = "Kevin"
keys = ["book", "room"]
due = []
"#,
        )
        .unwrap();
        let segments =
            [seg(0, "We agreed to cut the budget by 10%."), seg(1, "Laura will send the budget on Monday."), seg(2, "Calvin will book the room.")];
        assert_eq!(source_line("Calvin will book the room.", &meeting.lines), Some(2));
        assert_eq!(source_line("Thanks everyone.", &meeting.lines), None);
        let item = |text: &str, id: u32| CitedItem { text: text.into(), segment_ids: vec![id], citation_verified: true, review: None };
        let summary = MeetingSummary {
            summary: "The budget is cut by 10%. Laura sends it on Friday.".into(),
            decisions: vec![item("We agreed to cut the budget by 10%.", 0), item("Laura will send the budget on Monday.", 1)],
            action_items: vec![
                ActionItem { item: Some(item("Laura will send the budget on Monday.", 1)), owner: "Laura".into(), due: "on Monday".into() },
                ActionItem { item: Some(item("Calvin will book the room.", 2)), owner: "Calvin".into(), due: String::new() },
            ],
            ..Default::default()
        };
        let mut s = score_summary(&meeting, &segments, &summary, true);
        assert_eq!((s.decisions_found, s.decisions_right, s.decisions_produced), (1, 1, 2));
        assert_eq!((s.actions_task_found, s.actions_owner_right, s.actions_fully_right), (2, 1, 1));
        // "Calvin" is a misheard Kevin: a wrong owner, but heard, not invented.
        assert!(s.invented_items.is_empty(), "{:?}", s.invented_items);
        assert_eq!(s.summary_invented, ["friday"]);
        assert_eq!((s.word_errors, s.reference_words), (1, 21));
        let people = meeting.participants.clone();
        s.add_answer("Who sends the budget?", &["laura".into()], Reply { answer: "Laura", answerable: true, source: "model" }, &segments, &people);
        s.add_answer(
            "What does the party cost?",
            &[],
            Reply { answer: "The meeting does not say.", answerable: false, source: "none" },
            &segments,
            &people,
        );
        s.add_answer("What does the room cost?", &[], Reply { answer: "$50", answerable: true, source: "model" }, &segments, &people);
        s.add_answer("By how much?", &["10".into()], Reply { answer: "By 20 percent", answerable: true, source: "model" }, &segments, &people);
        let f = s.figures();
        assert_eq!((s.questions_right, s.questions), (2, 4));
        assert_eq!(f.invented_answers, 2);
        assert_eq!(f.decision_precision, 0.5);
    }
}
