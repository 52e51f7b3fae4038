//! Structure first: which transcript sentences decide, which commit a person to a task
//! (and by when), and which are greetings, agenda or filler. Rules over the words, not a
//! model's opinion, so a decision or an action item can always be traced to the phrase
//! that made it one; the language model is left to phrase and to settle the rare line
//! that names two possible owners.
//!
//! - A **decision** is a sentence with a deciding verb ("decided", "agreed", "approved",
//!   "settled on", "will go with", ...), or a change stated as settled ("moves to",
//!   "will move", "is postponed", "we will drop ..."), that is not a question, a
//!   hypothesis ("should we", "maybe") or filler.
//! - An **action item** is a commitment or request with a person as owner: "Bruno will
//!   prepare ...", "Aiko, please write ...", "Can you book the room, Kate?". A request to
//!   speak in the meeting itself ("can you give us an update", "share your screen") is
//!   not one. "I will ..." and "someone needs to ..." are action items without an owner.
//! - The **due** phrase is the date expression of the sentence ("by Thursday", "today",
//!   "next week", "by the end of the month", "on the 10th of October").

use crate::domain::Segment;
use regex::Regex;
use std::sync::LazyLock;

use super::people::People;

/// One sentence of the transcript and the segments it was spoken in.
#[derive(Clone, Debug, PartialEq)]
pub struct Sentence {
    pub text: String,
    pub segment_ids: Vec<u32>,
}

/// The transcript cut into sentences. A segment that ends mid-sentence (no final `.`,
/// `!` or `?`) and is followed by one starting in lower case is joined to it, so half a
/// sentence is never an item of its own.
pub fn sentences(segments: &[Segment]) -> Vec<Sentence> {
    let mut out: Vec<Sentence> = Vec::new();
    let mut open = false;
    for s in segments {
        let text = s.text.trim();
        if text.is_empty() {
            continue;
        }
        let continues = open && text.chars().next().is_some_and(char::is_lowercase);
        let mut pieces = split_sentences(text).into_iter();
        if continues {
            if let (Some(last), Some(first)) = (out.last_mut(), pieces.next()) {
                last.text = format!("{} {first}", last.text);
                last.segment_ids.push(s.id);
            }
        }
        for piece in pieces {
            out.push(Sentence { text: piece, segment_ids: vec![s.id] });
        }
        open = !text.ends_with(['.', '!', '?']);
    }
    out
}

/// `text` split after `.`, `!` and `?` that end a word (not inside "2.5").
fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        let ends = matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if ends {
            let s = current.trim().to_string();
            if s.chars().any(char::is_alphanumeric) {
                out.push(s);
            }
            current.clear();
        }
    }
    let s = current.trim().to_string();
    if s.chars().any(char::is_alphanumeric) {
        out.push(s);
    }
    out
}

/// What a sentence is.
#[derive(Clone, Debug, PartialEq)]
pub enum Cue {
    Decision,
    Action {
        /// The owner, when one person is named as such (spelled as the participant list
        /// or the transcript spells them).
        owner: Option<String>,
        /// Everyone the sentence names, when it names more than one possible owner.
        candidates: Vec<String>,
        due: Option<String>,
    },
    /// Greeting, closing, agenda, a request to speak now, or other filler.
    Filler,
    /// None of the above (may still be a key point).
    Statement,
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static pattern")
}

static FILLER: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(hello|hi|hey|good (morning|afternoon|evening)|morning|welcome|thanks|thank you|okay|ok|great|sorry|see you|bye|goodbye)\b|\b(welcome to|thanks for (joining|coming|staying)|that'?s all|that is all|let'?s (get started|start|begin|take a (short )?break|move on|talk about|keep that)|(first|next|last) (item|topic|point)|one more thing|on the agenda|any other (business|questions)|anything else|is there anything|on mute|hear me|meeting is closed|for your time|great work)\b",
    )
});
static STRONG_DECISION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(decided|decide to|agreed|agree to|approved|approves|settled on|chose|opted|voted|resolved to|final decision|will go with|going with|we'll go with)\b",
    )
});
static CHANGE_DECISION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(moves? to|moved to|will move|is moving|are moving|will be moved|is postponed|are postponed|is cancell?ed|are cancell?ed|is delayed|will be delayed|(we|we'll|we will) (drop|stop|cancel|postpone|delay|switch|launch|keep|add|remove|hire|buy|close|open))\b",
    )
});
static HYPOTHETICAL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\b(should we|shall we|could we|maybe|perhaps|might|if we|whether|not sure|let'?s discuss|will discuss|we'll discuss)\b")
});
/// A request to do something in the meeting itself, not a task.
static SPEAK_NOW: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(give us|tell us|walk us|update us|share (your|the) screen|go ahead|introduce|remind me|hear me|unmute|repeat that|say that again|speak up|take notes|start us off|kick us off)\b",
    )
});
static COMMIT: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:will|is going to|'ll|is to|needs to|has to|should|can|must|agreed to|offered to|volunteered to)\b"));
static REQUEST: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^(please|can you|could you|would you|will you)\b"));
/// The subject of a commitment at a sentence start: one or two words before "will".
static SUBJECT: LazyLock<Regex> = LazyLock::new(|| re(r"^([A-Z][\w']*(?:[ -][\w']+)?),?\s+(?:will|is going to|is to|needs to|has to|must)\b"));
/// One-word subjects that are no person ("We will ...").
const NOT_SUBJECTS: &[&str] = &[
    "we",
    "i",
    "they",
    "you",
    "it",
    "he",
    "she",
    "everyone",
    "everybody",
    "someone",
    "somebody",
    "nobody",
    "this",
    "that",
    "there",
    "the",
    "a",
    "an",
    "who",
    "what",
    "which",
    "these",
    "those",
    "next",
    "it's",
    "and",
    "so",
    "then",
    "also",
];
/// First words of two-word subjects that are no person ("The board will ...").
const NOT_SUBJECT_STARTS: &[&str] = &["the", "a", "an", "this", "that", "these", "those", "every", "each", "all", "some", "no", "any"];
static NO_OWNER_COMMIT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^(i will|i'll|i am going to|i'm going to|someone (needs|has) to|somebody (needs|has) to)\b"));

const WEEKDAY: &str = "monday|tuesday|wednesday|thursday|friday|saturday|sunday";
const MONTH: &str = "january|february|march|april|may|june|july|august|september|october|november|december";
const ORDINAL: &str = r"\d{1,2}(?:st|nd|rd|th)?|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|twenty[- ](?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)|thirtieth|thirty[- ]first";

static DUE: LazyLock<Regex> = LazyLock::new(|| {
    let day = format!(
        r"(?:(?:next|this|coming) )?(?:{WEEKDAY})(?: (?:morning|afternoon|evening|night))?|today|tonight|tomorrow(?: (?:morning|afternoon|evening))?|(?:next|this) (?:week|month|quarter|year|sprint)|(?:the )?end of (?:the )?(?:day|week|month|quarter|year|sprint|{MONTH})|(?:the )?(?:{ORDINAL}) of (?:{MONTH})|(?:{MONTH}) (?:{ORDINAL})|(?:{MONTH})|before the (?:launch|release|meeting|deadline|review|break|weekend|holidays?)|within (?:\w+ )?(?:days?|weeks?|hours?)|in (?:\w+ )?(?:days?|weeks?)"
    );
    re(&format!(r"(?i)\b(?:(?:by|on|before|until|till|no later than|due|from|for|at) )?(?:{day})\b"))
});

/// The due phrase of `text`, as said ("by Thursday", "next week"), if it states one: the
/// last date phrase of the sentence, where a due date is said ("Tariq will review the May
/// migration tomorrow" is due tomorrow).
pub fn due_phrase(text: &str) -> Option<String> {
    DUE.find_iter(text)
        .map(|m| m.as_str().trim().to_string())
        // "may" as a verb is no date.
        .filter(|m| !m.eq_ignore_ascii_case("may") || text.contains("May"))
        .last()
}

/// Words of `text` as written (letters, digits, apostrophes).
fn tokens(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’')).filter(|w| !w.is_empty()).collect()
}

/// What `sentence` is, given the meeting's people.
pub fn classify(sentence: &str, people: &People) -> Cue {
    let text = sentence.trim();
    let question = text.ends_with('?');
    let named = people.named_in(text);
    if FILLER.is_match(text) && !STRONG_DECISION.is_match(text) && named.is_empty() {
        return Cue::Filler;
    }
    if SPEAK_NOW.is_match(text) {
        return Cue::Filler;
    }
    // Action items: a named owner (among the first three words: "And Laura will ...")
    // followed by a commitment, or a request to a named person.
    let words = tokens(text);
    let due = due_phrase(text);
    let mut from = 0;
    for word in words.iter().take(3) {
        let Some(at) = text[from..].find(word) else { break };
        from += at + word.len();
        if people.person(word).is_none() {
            continue;
        }
        let rest = text[from..].trim_start();
        let request = REQUEST.is_match(rest.trim_start_matches(',').trim_start());
        if (!question && COMMIT.is_match(rest)) || request {
            // A name that is no participant (when a list was given) leaves the item
            // without an owner rather than with a misheard one.
            let prefix = text[..from].trim();
            let heard_as_words = || (prefix.split_whitespace().count() <= 2).then(|| people.misheard_subject(prefix)).flatten().map(str::to_string);
            return action(people.owner(word).or_else(heard_as_words), &named, due, people);
        }
    }
    // A participant's name heard as other words ("High will hire ...").
    if let Some(subject) = SUBJECT.captures(text).and_then(|c| c.get(1)) {
        let parts: Vec<String> = subject.as_str().split([' ', '-']).map(str::to_lowercase).collect();
        let excluded = if parts.len() == 1 { NOT_SUBJECTS.contains(&parts[0].as_str()) } else { NOT_SUBJECT_STARTS.contains(&parts[0].as_str()) };
        if !question && !excluded {
            if let Some(owner) = people.misheard_subject(subject.as_str()) {
                return Cue::Action { owner: Some(owner.to_string()), candidates: Vec::new(), due };
            }
        }
    }
    if REQUEST.is_match(text) || text.to_lowercase().starts_with("please ") {
        // "Can you book the room, Kate?" / "Please send it, Kate."
        if let Some(last) = words.last().filter(|w| people.person(w).is_some()) {
            return action(people.owner(last), &named, due, people);
        }
    }
    if !question && NO_OWNER_COMMIT.is_match(text) {
        return Cue::Action { owner: None, candidates: Vec::new(), due };
    }
    if question || HYPOTHETICAL.is_match(text) {
        return Cue::Statement;
    }
    if STRONG_DECISION.is_match(text) || CHANGE_DECISION.is_match(text) {
        return Cue::Decision;
    }
    if FILLER.is_match(text) {
        return Cue::Filler;
    }
    Cue::Statement
}

/// An action item; when the line names more than one possible owner, they are the
/// candidates the model chooses among.
fn action(owner: Option<String>, named: &[String], due: Option<String>, people: &People) -> Cue {
    let owners: Vec<String> = named.iter().filter_map(|n| people.owner(n)).collect();
    let candidates = if owners.len() > 1 && owner.is_some() { owners } else { Vec::new() };
    Cue::Action { owner, candidates, due }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn people() -> People {
        let segments: Vec<Segment> = ["Thanks, Dana.", "Victor will add the index.", "We cut the marketing budget."]
            .iter()
            .map(|t| Segment { text: (*t).into(), ..Default::default() })
            .collect();
        People::new(&["Aiko".into(), "Bruno".into(), "Kate".into()], &segments)
    }

    fn owner(cue: Cue) -> (Option<String>, Option<String>) {
        match cue {
            Cue::Action { owner, due, .. } => (owner, due),
            other => panic!("not an action: {other:?}"),
        }
    }

    #[test]
    fn commitments_and_requests_to_a_person_are_action_items() {
        let p = people();
        assert_eq!(owner(classify("Bruno will prepare the slides by Thursday.", &p)), (Some("Bruno".into()), Some("by Thursday".into())));
        assert_eq!(owner(classify("Iko, please write the help article by Friday.", &p)), (Some("Aiko".into()), Some("by Friday".into())));
        assert_eq!(owner(classify("Can you book the conference room, Kate?", &p)), (Some("Kate".into()), None));
        assert_eq!(owner(classify("Bruna is going to call the supplier tomorrow.", &p)), (Some("Bruno".into()), Some("tomorrow".into())));
        // Names that are no participant: the commitment stays, without a (misheard) owner.
        assert_eq!(owner(classify("Victor will add the index to the staging database today.", &p)), (None, Some("today".into())));
        // Without a participant list, the transcript's own names are owners.
        let open = People::new(&[], &[Segment { text: "Thanks, Dana.".into(), ..Default::default() }]);
        assert_eq!(
            owner(classify("Dana will update the runbook by the end of the month.", &open)),
            (Some("Dana".into()), Some("by the end of the month".into()))
        );
        assert_eq!(owner(classify("I will send the minutes next week.", &p)), (None, Some("next week".into())));
        assert_eq!(owner(classify("And Bruno will send it.", &p)), (Some("Bruno".into()), None));
        let heard = People::new(&["Hiro".into(), "Nikhil".into()], &[]);
        assert_eq!(owner(classify("High will hire two receptionists by next Friday.", &heard)), (Some("Hiro".into()), Some("by next Friday".into())));
        assert_eq!(
            owner(classify("Nick Hill will set up the reminder system this month.", &heard)),
            (Some("Nikhil".into()), Some("this month".into()))
        );
        assert_eq!(classify("The premium plan will cost nine dollars a month.", &heard), Cue::Statement);
        assert_eq!(classify("We will discuss it.", &heard), Cue::Statement);
        let heard = People::new(&["Yusuf".into(), "Maya".into()], &[]);
        assert_eq!(owner(classify("You suck will train the new waiters on Thursday.", &heard)).0.as_deref(), Some("Yusuf"));
        assert_eq!(owner(classify("My will print the new menus by next Monday.", &heard)).0.as_deref(), Some("Maya"));
    }

    #[test]
    fn misheard_owners_in_a_real_transcript() {
        // tiny.en on espeak-ng's reading of a clinic meeting (tests/fixtures/meetings).
        let lines = [
            "High everyone, let's get started with the clinic scheduling meeting.",
            "High will hire two temporary receptionist's high next Friday.",
            "In these will call the patient who booked for the old date.",
            "Nick Hill will set up the reminder system this month.",
            "Can you share your screen, Nick Hill?",
        ];
        let segments: Vec<Segment> =
            lines.iter().enumerate().map(|(i, t)| Segment { id: i as u32, text: (*t).into(), ..Default::default() }).collect();
        let p = People::new(&["Ines".into(), "Hiro".into(), "Nikhil".into()], &segments);
        assert_eq!(owner(classify(lines[1], &p)).0.as_deref(), Some("Hiro"));
        assert_eq!(owner(classify(lines[2], &p)).0.as_deref(), Some("Ines"));
        assert_eq!(owner(classify(lines[3], &p)).0.as_deref(), Some("Nikhil"));
    }

    #[test]
    fn requests_to_speak_now_and_nouns_are_not_action_items() {
        let p = people();
        assert_eq!(classify("Victor, can you give us a quick status update on the alerts?", &p), Cue::Filler);
        assert_eq!(classify("Can you share your screen, Kate?", &p), Cue::Filler);
        assert_eq!(classify("Marketing will prepare the brochure.", &p), Cue::Statement);
        assert_eq!(classify("Who wants to give the training update?", &p), Cue::Statement);
        assert_eq!(classify("Can someone remind me when the board meets?", &p), Cue::Filler);
    }

    #[test]
    fn decisions_need_a_deciding_phrase() {
        let p = people();
        assert_eq!(classify("We agreed to reduce the marketing budget by ten percent.", &p), Cue::Decision);
        assert_eq!(classify("The council approved the bike lane on Main Street.", &p), Cue::Decision);
        assert_eq!(classify("The flu vaccination day moves to the tenth of October.", &p), Cue::Decision);
        assert_eq!(classify("The search feature will move to the next sprint.", &p), Cue::Decision);
        assert_eq!(classify("Hello everyone, thanks for joining the budget review.", &p), Cue::Filler);
        assert_eq!(classify("One more thing, the support team asked for a status page.", &p), Cue::Filler);
        assert_eq!(classify("The first item on the agenda is the conference paper.", &p), Cue::Filler);
        assert_eq!(classify("Rain delayed the roof work by four days.", &p), Cue::Statement);
        assert_eq!(classify("Should we move the launch?", &p), Cue::Statement);
        assert_eq!(classify("We will discuss parking fees at the next meeting.", &p), Cue::Statement);
        assert_eq!(classify("Today we need to settle the launch plan for the new app.", &p), Cue::Statement);
    }

    #[test]
    fn due_phrases() {
        assert_eq!(due_phrase("Hiro will hire two receptionists by next Friday.").as_deref(), Some("by next Friday"));
        assert_eq!(due_phrase("Zara will prepare the press release by the end of April.").as_deref(), Some("by the end of April"));
        assert_eq!(due_phrase("Sven will train the support team before the launch.").as_deref(), Some("before the launch"));
        assert_eq!(due_phrase("Nikhil will set up the reminder system this month.").as_deref(), Some("this month"));
        assert_eq!(due_phrase("It moves to the 10th of October.").as_deref(), Some("the 10th of October"));
        assert_eq!(due_phrase("Kevin will book the conference room for the workshop."), None);
        assert_eq!(due_phrase("We may need it."), None);
        assert_eq!(due_phrase("Tariq will review the May migration tomorrow.").as_deref(), Some("tomorrow"));
    }

    #[test]
    fn sentences_split_and_join_across_segments() {
        let seg = |id, t: &str| Segment { id, text: t.into(), ..Default::default() };
        let s = sentences(&[seg(0, " We agreed to cut costs. Laura will send"), seg(1, " the budget on Monday."), seg(2, " Thanks.")]);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1], Sentence { text: "Laura will send the budget on Monday.".into(), segment_ids: vec![0, 1] });
    }
}
