//! AskMeeting: retrieval, an answerability gate, the model's answer, and the checks that
//! decide whether that answer is shown, quoted from the transcript instead, or withheld.
//!
//! 1. **What the question wants** ([`Expect`]): a person ("who"), a date ("when", "until
//!    when"), an amount of money, a count of something, a duration, a percentage, any
//!    number, or free text.
//! 2. **Which lines could answer it** ([`candidates`]): a line must cover the question's
//!    content words (stems, with the meeting title as shared context: 60% of them) and hold an answer of the wanted kind that the
//!    question itself does not hold (a name, a date, "$15", "20 volunteers", "40
//!    minutes"). No such line: "The meeting does not say." without asking the model.
//!    This is what keeps "What is the budget for the party?" from being answered from a
//!    line about another budget.
//! 3. **The model phrases** an answer from those lines only (JSON-schema-constrained: the
//!    answer and the numbers of the lines it rests on).
//! 4. **The checks** ([`check_answer`]): every number, date and name of the answer is in
//!    the lines it cites; the answer adds something to the question (no echo); a typed
//!    question's answer holds a thing of that type. A failed check does not withhold a
//!    confident answer: the best line is quoted instead (`ANSWER_SOURCE_EXTRACTIVE`),
//!    with the reason in `withheld_reason` and in metrics.

use mmc_text::{stem, words, Word};

use super::{
    facts::{facts, focus_stems, is_echo, Evidence, Fact},
    notes::due_phrase,
    people::People,
};

/// What a question asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    Person,
    When,
    Money,
    /// A count of the noun (stem) after "how many".
    Count(String),
    Duration,
    Percent,
    /// Any number ("how big", "by how much").
    Number,
    Free,
}

const MONEY_WORDS: &[&str] =
    &["cost", "costs", "pay", "paid", "price", "money", "spend", "spent", "budget", "charge", "worth", "raise", "raised", "salary", "fee", "fees"];
const TIME_UNITS: &[&str] = &[
    "second",
    "seconds",
    "minute",
    "minutes",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "kilometre",
    "kilometres",
    "kilometer",
    "kilometers",
    "km",
    "metre",
    "metres",
    "meter",
    "meters",
    "mile",
    "miles",
];
const CURRENCY: &[&str] = &["dollar", "euro", "pound", "cent", "cents", "usd", "eur"];

/// What `question` asks for.
pub fn expect(question: &str) -> Expect {
    let q = question.to_lowercase();
    let w: Vec<String> = words(&q).into_iter().map(|w| w.text).collect();
    let has = |s: &str| w.iter().any(|x| x == s);
    let phrase = |s: &str| q.contains(s);
    if has("who") || has("whom") || has("whose") || phrase("which person") {
        return Expect::Person;
    }
    if has("when") || phrase("what day") || phrase("what date") || phrase("which day") || phrase("what time") || phrase("which date") {
        return Expect::When;
    }
    if phrase("percent") || phrase("what share") || phrase("what proportion") || phrase("what fraction") {
        return Expect::Percent;
    }
    if phrase("by how much") {
        return Expect::Number;
    }
    let money = w.iter().any(|x| MONEY_WORDS.contains(&x.as_str()));
    if phrase("how much") {
        return if money { Expect::Money } else { Expect::Number };
    }
    if let Some(i) = w.iter().position(|x| x == "many").filter(|i| *i > 0 && w[i - 1] == "how") {
        let noun = w[i + 1..].iter().find(|x| !super::facts::QUESTION_WORDS.contains(&x.as_str()) && x.len() > 2);
        return noun.map_or(Expect::Number, |n| Expect::Count(stem(n)));
    }
    if phrase("how long") {
        return Expect::Duration;
    }
    if phrase("how big") || phrase("how large") || phrase("how high") || phrase("how far") || phrase("how old") || phrase("how fast") {
        return Expect::Number;
    }
    if money && (has("what") || has("which")) {
        return Expect::Money;
    }
    Expect::Free
}

fn cardinal(w: &Word) -> bool {
    w.number.is_some_and(|n| !n.ordinal)
}

/// Whether `text` holds an answer of kind `expect` that `question` does not already hold.
/// `owner` is the owner the notes gave the line when it is an action item (a "who"
/// question is answered by it even when the name was misheard in the line).
pub fn holds(expect: &Expect, text: &str, question: &str, people: &People, owner: Option<&str>) -> bool {
    let w = words(text);
    let q_numbers: Vec<String> = words(question).into_iter().filter(|w| w.number.is_some()).map(|w| w.text).collect();
    let new_number = |x: &Word| x.number.is_some() && !q_numbers.contains(&x.text);
    let near = |i: usize, before: usize, after: usize, pred: &dyn Fn(&Word) -> bool| {
        let lo = i.saturating_sub(before);
        let hi = (i + after + 1).min(w.len());
        (lo..hi).any(|j| j != i && pred(&w[j]))
    };
    match expect {
        Expect::Person => {
            let asked = people.named_in(question);
            // With a participant list, the people who answer "who" are participants (a name
            // heard that is none of them is more often a mishearing).
            owner.is_some_and(|o| !asked.iter().any(|a| a == o)) || people.owners_named_in(text).iter().any(|p| !asked.contains(p))
        }
        Expect::When => {
            let asked: Vec<Fact> = facts(question);
            let date = facts(text).into_iter().any(|f| matches!(f, Fact::Date(_)) && !asked.contains(&f));
            date || w.iter().any(|x| x.number.is_some_and(|n| n.ordinal) && new_number(x))
                || due_phrase(text).is_some_and(|d| !question.to_lowercase().contains(&d.to_lowercase()))
        }
        Expect::Money => w.iter().enumerate().any(|(i, x)| cardinal(x) && new_number(x) && near(i, 1, 2, &|y| CURRENCY.contains(&y.text.as_str()))),
        Expect::Count(noun) => w
            .iter()
            .enumerate()
            .any(|(i, x)| cardinal(x) && new_number(x) && w[i + 1..].iter().take(3).any(|y| stem(y.text.trim_end_matches("'s")) == *noun)),
        Expect::Duration => {
            w.iter().enumerate().any(|(i, x)| cardinal(x) && new_number(x) && w.get(i + 1).is_some_and(|y| TIME_UNITS.contains(&y.text.as_str())))
        }
        Expect::Percent => w.iter().enumerate().any(|(i, x)| cardinal(x) && new_number(x) && w.get(i + 1).is_some_and(|y| y.text == "percent")),
        Expect::Number => w.iter().any(|x| cardinal(x) && new_number(x)),
        Expect::Free => true,
    }
}

/// Share of the question's content stems found in `text` (or the title); 1 when the
/// question has none. The words that only say what kind of answer is wanted ("cost",
/// "pay" for an amount of money) are left out: the kind is checked by [`holds`], and a
/// line says "charge fifteen dollars" where the question says "pay".
pub fn coverage(question: &str, expect: &Expect, text: &str, title: &str) -> f32 {
    let mut q = focus_stems(question);
    if *expect == Expect::Money {
        let money: Vec<String> = MONEY_WORDS.iter().map(|w| stem(w)).collect();
        q.retain(|w| !money.contains(w));
    }
    if q.is_empty() {
        return 1.0;
    }
    let mut t = focus_stems(text);
    t.extend(focus_stems(title));
    q.iter().filter(|w| t.contains(*w)).count() as f32 / q.len() as f32
}

/// Least coverage of a line that answers a question: more than half its content words, so
/// "Who will book the flights?" is not answered from "Kevin will book the room".
pub const MIN_COVERAGE: f32 = 0.6;

/// A transcript line that may answer the question, with its scores.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Index into the meeting's segments.
    pub index: usize,
    pub similarity: f32,
    pub coverage: f32,
}

/// A transcript sentence as retrieval sees it.
#[derive(Clone, Debug)]
pub struct Line<'a> {
    pub text: &'a str,
    /// The notes' owner when the sentence is an action item.
    pub owner: Option<&'a str>,
    /// Cosine similarity with the question.
    pub similarity: f32,
}

/// The lines that may answer `question`, best first (see the module docs).
pub fn candidates(question: &str, expect: &Expect, lines: &[Line<'_>], title: &str, people: &People, min_similarity: f32) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.similarity >= min_similarity)
        .map(|(index, l)| Candidate { index, similarity: l.similarity, coverage: coverage(question, expect, l.text, title) })
        .filter(|c| c.coverage >= MIN_COVERAGE && holds(expect, lines[c.index].text, question, people, lines[c.index].owner))
        .collect();
    out.sort_by(|a, b| (b.coverage + b.similarity).total_cmp(&(a.coverage + a.similarity)));
    out
}

/// Why a model answer was not used.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    /// The answer states facts the cited lines lack.
    Unsupported(Vec<Fact>),
    /// The answer restates the question.
    Echo,
    /// A typed question's answer holds no thing of that type.
    WrongKind,
    /// The model said the lines do not answer (though retrieval found one that does).
    NotStated,
    /// The model cited no line it was shown.
    NoCitation,
    /// The answer is long or repeats itself (a small model's loop), not a short answer.
    Rambling,
}

impl Rejection {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Unsupported(_) => "unsupported_fact",
            Rejection::Echo => "echo",
            Rejection::WrongKind => "wrong_kind",
            Rejection::NotStated => "model_not_stated",
            Rejection::NoCitation => "no_citation",
            Rejection::Rambling => "rambling",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unsupported(facts) => {
                let list: Vec<String> = facts.iter().map(ToString::to_string).collect();
                write!(f, "the model's answer names {}, which the cited lines do not", list.join(", "))
            }
            Rejection::Echo => f.write_str("the model's answer restates the question"),
            Rejection::WrongKind => f.write_str("the model's answer does not hold what the question asks for"),
            Rejection::NotStated => f.write_str("the model found no answer in a line that holds one"),
            Rejection::NoCitation => f.write_str("the model's answer cites no line it was shown"),
            Rejection::Rambling => f.write_str("the model's answer is long or repeats itself"),
        }
    }
}

/// Checks a model answer against the lines it cites (`cited`), the question and its kind;
/// `owner` is the notes' owner of the first cited line, which a "who" answer must name.
pub fn check_answer(answer: &str, cited: &[&str], question: &str, expect: &Expect, people: &People, owner: Option<&str>) -> Result<(), Rejection> {
    if cited.is_empty() {
        return Err(Rejection::NoCitation);
    }
    let lower = answer.to_lowercase();
    if lower.contains("not stated") || lower.contains("does not say") || lower.contains("not mentioned") || lower.contains("no information") {
        return Err(Rejection::NotStated);
    }
    // More than two sentences, or a sentence said twice.
    let sentences: Vec<String> = answer.split(['.', '!', '?']).map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()).collect();
    let repeated = sentences.iter().enumerate().any(|(i, s)| sentences[..i].contains(s));
    let tokens: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 1).collect();
    let looping = tokens.iter().any(|t| tokens.iter().filter(|u| *u == t).count() >= 3 && !matches!(*t, "the" | "and" | "to" | "of" | "a"));
    if sentences.len() > 2 || repeated || looping || tokens.len() > 40 || lower.contains("the answer is") {
        return Err(Rejection::Rambling);
    }
    // The notes' owner of the line counts as stated there (its name may be misheard).
    let missing: Vec<Fact> = Evidence::new(cited, people)
        .unsupported(answer)
        .into_iter()
        .filter(|f| !matches!((f, owner), (Fact::Name(n), Some(o)) if n.eq_ignore_ascii_case(o)))
        .collect();
    if !missing.is_empty() {
        return Err(Rejection::Unsupported(missing));
    }
    if is_echo(answer, question) {
        return Err(Rejection::Echo);
    }
    if !holds(expect, answer, question, people, None) {
        return Err(Rejection::WrongKind);
    }
    if let (Expect::Person, Some(owner)) = (expect, owner) {
        if !people.named_in(answer).iter().any(|p| p == owner) {
            return Err(Rejection::WrongKind);
        }
    }
    Ok(())
}

/// A participant's spelling for the names of `answer` that sound like one ("Iko" -> "Aiko").
pub fn canonical_names(answer: &str, people: &People) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().next().is_some_and(char::is_uppercase) {
            if let Some(p) = people.participant(word) {
                out.push_str(p);
                word.clear();
                return;
            }
        }
        out.push_str(word);
        word.clear();
    };
    for c in answer.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The extractive answer: the line quoted, after the person it names (or the notes' owner
/// of the line) for a "who" question.
pub fn quote(text: &str, expect: &Expect, question: &str, people: &People, owner: Option<&str>) -> String {
    let text = text.trim();
    if let (Expect::Person, Some(owner)) = (expect, owner) {
        return format!("{owner}: \u{201c}{text}\u{201d}");
    }
    if *expect == Expect::Person {
        let asked = people.named_in(question);
        let named: Vec<String> = people.owners_named_in(text).into_iter().filter(|p| !asked.contains(p)).collect();
        if named.len() == 1 {
            return format!("{}: \u{201c}{text}\u{201d}", named[0]);
        }
    }
    format!("\u{201c}{text}\u{201d}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn people() -> People {
        People::new(&["Laura".into(), "Kevin".into(), "Aiko".into(), "Rosa".into()], &[])
    }

    #[test]
    fn questions_say_what_they_ask_for() {
        assert_eq!(expect("Who will send the budget?"), Expect::Person);
        assert_eq!(expect("Until when is the office move delayed?"), Expect::When);
        assert_eq!(expect("How much will the playground cost?"), Expect::Money);
        assert_eq!(expect("How much does each runner pay?"), Expect::Money);
        assert_eq!(expect("What is the budget for the party?"), Expect::Money);
        assert_eq!(expect("By how much will the marketing budget be reduced?"), Expect::Number);
        assert_eq!(expect("How many graphics cards will they buy?"), Expect::Count(stem("graphics")));
        assert_eq!(expect("How many new books will the library get?"), Expect::Count("book".into()));
        assert_eq!(expect("How long was the service down?"), Expect::Duration);
        assert_eq!(expect("What share of the tests pass?"), Expect::Percent);
        assert_eq!(expect("What was the root cause?"), Expect::Free);
    }

    #[test]
    fn a_line_must_hold_the_kind_of_answer_asked_for() {
        let p = people();
        assert!(holds(&Expect::Person, "Laura will send the revised budget.", "Who will send the budget?", &p, None));
        assert!(!holds(&Expect::Person, "We agreed to cut the budget.", "Who will send the budget?", &p, None));
        assert!(holds(&Expect::Person, "High will send the budget.", "Who will send the budget?", &p, Some("Hiro")));
        assert!(holds(&Expect::When, "The run moves to the ninth of September.", "When is the run?", &p, None));
        assert!(holds(&Expect::When, "Laura will send it on Monday.", "When will Laura send it?", &p, None));
        assert!(!holds(&Expect::When, "Laura will send it.", "When will Laura send it?", &p, None));
        assert!(holds(&Expect::Money, "We agreed to charge fifteen dollars for each runner.", "How much does each runner pay?", &p, None));
        assert!(!holds(&Expect::Money, "We decided to add a second crane.", "How much will the crane cost?", &p, None));
        assert!(!holds(&Expect::Money, "The bike lane will be two kilometres long.", "How much will the bike lane cost?", &p, None));
        assert!(holds(&Expect::Count(stem("volunteers")), "Rosa will find 20 volunteers.", "How many volunteers?", &p, None));
        assert!(!holds(&Expect::Count(stem("teachers")), "We need 20 volunteers.", "How many teachers?", &p, None));
        assert!(holds(&Expect::Duration, "The service was down for forty minutes.", "How long was it down?", &p, None));
        assert!(holds(&Expect::Percent, "Ninety percent of the tests pass.", "What share of tests pass?", &p, None));
    }

    #[test]
    fn unanswerable_questions_find_no_candidate() {
        let p = people();
        let lines = [
            "We agreed to reduce the marketing budget by ten percent.",
            "Laura will send the revised budget to finance on Monday.",
            "Kevin will book the conference room.",
        ];
        let sims = [0.5, 0.5, 0.5];
        let owners = [None, Some("Laura"), Some("Kevin")];
        let lines: Vec<Line<'_>> = lines.iter().zip(owners).zip(sims).map(|((text, owner), similarity)| Line { text, owner, similarity }).collect();
        let ask = |q: &str| candidates(q, &expect(q), &lines, "Budget planning", &p, 0.3);
        assert!(ask("How much money will the holiday party cost?").is_empty());
        assert!(ask("Who will hire the new accountant?").is_empty());
        assert!(ask("Who will book the flights?").is_empty());
        assert_eq!(ask("Who will send the revised budget to finance?")[0].index, 1);
        assert_eq!(ask("By how much will the marketing budget be reduced?")[0].index, 0);
        assert_eq!(ask("Who will book the conference room?")[0].index, 2);
        let lines = ["We agreed to charge fifteen dollars for each runner.", "We decided to add a second crane."];
        let lines: Vec<Line<'_>> = lines.iter().map(|text| Line { text, owner: None, similarity: 0.5 }).collect();
        let ask = |q: &str| candidates(q, &expect(q), &lines, "Charity run", &p, 0.3);
        assert_eq!(ask("How much does each runner pay?")[0].index, 0);
        assert!(ask("How much will the crane cost?").is_empty());
    }

    #[test]
    fn model_answers_are_checked() {
        let p = people();
        let line = ["Laura will send the revised budget to finance on Monday."];
        let q = "Who will send the revised budget?";
        assert_eq!(check_answer("Laura", &line, q, &Expect::Person, &p, None), Ok(()));
        assert_eq!(check_answer("Kevin", &line, q, &Expect::Person, &p, None), Err(Rejection::Unsupported(vec![Fact::Name("kevin".into())])));
        assert_eq!(check_answer("Who will send the revised budget?", &line, q, &Expect::Person, &p, None), Err(Rejection::Echo));
        assert_eq!(check_answer("the revised budget", &line, q, &Expect::Person, &p, None), Err(Rejection::Echo));
        assert_eq!(check_answer("to finance", &line, q, &Expect::Person, &p, None), Err(Rejection::WrongKind));
        let q = "What is the budget?";
        assert_eq!(check_answer("$5,000", &line, q, &Expect::Money, &p, None), Err(Rejection::Unsupported(vec![Fact::Number("5000".into())])));
        assert_eq!(check_answer("not stated", &line, q, &Expect::Money, &p, None), Err(Rejection::NotStated));
        let q = "Who will send the revised budget?";
        let loop_ = "Laura will send it. The answer is: Laura will send it. The answer is: Laura will send it.";
        assert_eq!(check_answer(loop_, &line, q, &Expect::Person, &p, None), Err(Rejection::Rambling));
    }

    #[test]
    fn quotes_and_names() {
        let p = people();
        assert_eq!(quote("Iko, please write it.", &Expect::Person, "Who writes it?", &p, None), "Aiko: \u{201c}Iko, please write it.\u{201d}");
        assert_eq!(quote("High will write it.", &Expect::Person, "Who writes it?", &p, Some("Hiro")), "Hiro: \u{201c}High will write it.\u{201d}");
        assert_eq!(quote("It moves to June.", &Expect::When, "When?", &p, None), "\u{201c}It moves to June.\u{201d}");
        // A "who" answer must name the notes' owner of its line.
        let line = ["High will hire two receptionists."];
        let q = "Who will hire the receptionists?";
        assert_eq!(check_answer("High", &line, q, &Expect::Person, &p, Some("Laura")), Err(Rejection::WrongKind));
        assert_eq!(check_answer("Laura", &line, q, &Expect::Person, &p, Some("Laura")), Ok(()));
        assert_eq!(canonical_names("Iko will write it, not Kevin.", &p), "Aiko will write it, not Kevin.");
    }
}
