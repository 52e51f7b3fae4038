//! Who the people of a meeting are: the participants the uploader named (optional) and the
//! names the transcript itself uses, with misheard names matched to participants by
//! spelling and by sound ("Iko" -> "Aiko", "Bruna" -> "Bruno").
//!
//! Whisper capitalises names, but also sentence starts, so a capitalised first word is a
//! name only when the transcript never uses it as an ordinary word ("Marketing will ..."
//! next to "the marketing budget") and it is not a common role or team noun.

use std::collections::BTreeSet;

use crate::domain::Segment;
use mmc_text::{edit_distance, words};

use super::facts::{DATE_WORDS, NOT_NAMES};

/// Capitalised words at a sentence start that name a group or role, not a person.
const NOT_PEOPLE: &[&str] = &[
    "marketing",
    "sales",
    "finance",
    "legal",
    "engineering",
    "support",
    "design",
    "management",
    "hr",
    "it",
    "operations",
    "product",
    "board",
    "council",
    "committee",
    "company",
    "client",
    "customer",
    "customers",
    "kitchen",
    "inspector",
    "parents",
    "staff",
    "everyone",
    "someone",
    "somebody",
    "anyone",
    "nobody",
    "people",
    "users",
    "city",
    "school",
    "library",
    "rain",
    "most",
    "last",
    "our",
    "their",
    "your",
    "both",
    "two",
    "three",
    "ninety",
    "about",
    "waiting",
    "parking",
    "bus",
    "price",
    "cost",
    "costs",
];

/// Longest participant name, in characters, and most participants per meeting.
pub const MAX_PARTICIPANT_CHARS: usize = 64;
pub const MAX_PARTICIPANTS: usize = 50;

/// The people of one meeting.
#[derive(Clone, Debug, Default)]
pub struct People {
    participants: Vec<String>,
    /// Lower-case names the transcript uses as names.
    transcript_names: BTreeSet<String>,
}

/// Consonant skeleton of a name for a rough sound match: vowels (and `h`, `w`, `y`)
/// dropped, letters that sound alike merged, repeats collapsed ("Aiko" and "Iko" -> `k`).
fn skeleton(name: &str) -> String {
    let mut out = String::new();
    let lower = name.to_lowercase().replace("ph", "f").replace("ck", "k");
    for c in lower.chars() {
        let c = match c {
            'c' | 'k' | 'q' | 'g' | 'j' => 'k',
            's' | 'z' | 'x' => 's',
            'd' | 't' => 't',
            'b' | 'p' => 'p',
            'v' | 'f' => 'f',
            'm' | 'n' => 'n',
            'a' | 'e' | 'i' | 'o' | 'u' | 'y' | 'h' | 'w' | '\'' => continue,
            c => c,
        };
        if !out.ends_with(c) {
            out.push(c);
        }
    }
    out
}

/// Whether `heard` may be `name` misheard: one edit for names up to five letters, two for
/// longer ones, or the same consonant skeleton with at most two edits.
pub fn sounds_like(heard: &str, name: &str) -> bool {
    let (h, n) = (heard.to_lowercase(), name.to_lowercase());
    if h == n {
        return true;
    }
    if h.chars().count() < 2 {
        return false;
    }
    let distance = edit_distance(&h, &n);
    let allowed = if n.chars().count() <= 5 { 1 } else { 2 };
    distance <= allowed || (distance <= 2 && !skeleton(&h).is_empty() && skeleton(&h) == skeleton(&n))
}

impl People {
    /// The people of a meeting: `participants` as given (trimmed, empty ones dropped) and
    /// the names `segments` use.
    pub fn new(participants: &[String], segments: &[Segment]) -> Self {
        let participants: Vec<String> = participants.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
        let texts: Vec<&str> = segments.iter().map(|s| s.text.as_str()).collect();
        Self { participants, transcript_names: transcript_names(&texts) }
    }

    pub fn participants(&self) -> &[String] {
        &self.participants
    }

    /// The participant that `word` names or sounds like (the closest one), if any.
    pub fn participant(&self, word: &str) -> Option<&str> {
        let word = word.trim_end_matches("'s");
        if let Some(p) = self.participants.iter().find(|p| p.eq_ignore_ascii_case(word)) {
            return Some(p);
        }
        let lower = word.to_lowercase();
        if NOT_NAMES.contains(&lower.as_str()) || DATE_WORDS.contains(&lower.as_str()) {
            return None;
        }
        self.participants
            .iter()
            .filter(|p| !p.contains(' ') && sounds_like(word, p))
            .min_by_key(|p| edit_distance(&word.to_lowercase(), &p.to_lowercase()))
            .map(String::as_str)
    }

    /// The person `word` names: a participant (spelled as given), or a name the transcript
    /// uses as a name (as capitalised there); `None` for anything else.
    pub fn person(&self, word: &str) -> Option<String> {
        let word = word.trim_end_matches("'s");
        if !word.chars().next().is_some_and(char::is_uppercase) {
            return None;
        }
        if let Some(p) = self.participant(word) {
            return Some(p.to_string());
        }
        self.transcript_names.contains(&word.to_lowercase()).then(|| word.to_string())
    }

    /// The owner `word` names: with a participant list, only a participant (a name heard
    /// that sounds like none of them is more often a mishearing than an outsider, and a
    /// wrong owner is worse than none); without one, [`Self::person`].
    pub fn owner(&self, word: &str) -> Option<String> {
        if self.participants.is_empty() {
            self.person(word)
        } else {
            self.participant(word).map(str::to_string)
        }
    }

    /// The participant a sentence's subject may be when speech recognition misheard the
    /// name as other words ("High will ..." for Hiro, "Nick Hill will ..." for Nikhil, "Far
    /// it will ..." for Farid): the subject's letters within half the longer length in
    /// edits of a participant's name, the closest one. Only with a participant list, and
    /// only for the words before "will" at a sentence start (see `notes`), where a person
    /// is expected.
    pub fn misheard_subject(&self, subject: &str) -> Option<&str> {
        let letters: String = subject.chars().filter(|c| c.is_alphabetic()).flat_map(char::to_lowercase).collect();
        if letters.len() < 2 {
            return None;
        }
        self.participants
            .iter()
            .map(|p| (edit_distance(&letters, &p.to_lowercase()), p))
            .filter(|(d, p)| *d <= letters.chars().count().max(p.chars().count()) / 2)
            .min_by_key(|(d, _)| *d)
            .map(|(_, p)| p.as_str())
    }

    /// The owners `text` names ([`Self::owner`]: participants only, when a list was given).
    pub fn owners_named_in(&self, text: &str) -> Vec<String> {
        self.named_in(text).into_iter().filter(|p| self.owner(p).is_some()).collect()
    }

    /// Whether `text` mentions `name` (exactly or misheard).
    pub fn mentions(&self, text: &str, name: &str) -> bool {
        text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
            .any(|w| sounds_like(w.trim_end_matches("'s"), name))
    }

    /// The people `text` names, in order, each once.
    pub fn named_in(&self, text: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for w in text.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
            if let Some(p) = self.person(w) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// Lower-case words the transcript uses as names: capitalised where a sentence does not
/// start, or capitalised at a start and followed by "will", "is", "'ll" or a comma; never
/// written in lower case; not a function, date, role or team word.
fn transcript_names(texts: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut lower = BTreeSet::new();
    for text in texts {
        let w = words(text);
        for (i, word) in w.iter().enumerate() {
            if word.number.is_some() {
                continue;
            }
            let key = word.text.trim_end_matches("'s").to_string();
            if !word.capitalised {
                lower.insert(key);
                continue;
            }
            if NOT_NAMES.contains(&key.as_str()) || DATE_WORDS.contains(&key.as_str()) || NOT_PEOPLE.contains(&key.as_str()) || key.len() < 2 {
                continue;
            }
            let next = w.get(i + 1).map(|n| n.text.as_str());
            let looks_like_subject = matches!(next, Some("will" | "is" | "can" | "could" | "should" | "has" | "needs" | "to"))
                || word.text.ends_with("'ll")
                || text.contains(&format!("{},", text_word(text, &word.text)));
            if !word.sentence_start || looks_like_subject {
                names.insert(key);
            }
        }
    }
    names.retain(|n| !lower.contains(n));
    names
}

/// `word` as written in `text` (the original capitalisation), for the comma test above.
fn text_word(text: &str, lower: &str) -> String {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'')).find(|w| w.eq_ignore_ascii_case(lower)).unwrap_or(lower).to_string()
}

/// Checks a participant list from a request: at most [`MAX_PARTICIPANTS`] names of at most
/// [`MAX_PARTICIPANT_CHARS`] characters.
pub fn check_participants(participants: &[String]) -> Result<(), String> {
    if participants.len() > MAX_PARTICIPANTS {
        return Err(format!("at most {MAX_PARTICIPANTS} participants"));
    }
    if participants.iter().any(|p| p.chars().count() > MAX_PARTICIPANT_CHARS) {
        return Err(format!("a participant name is over {MAX_PARTICIPANT_CHARS} characters"));
    }
    if participants.iter().any(|p| p.chars().any(char::is_control)) {
        return Err("a participant name holds a control character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str) -> Segment {
        Segment { text: text.into(), ..Default::default() }
    }

    #[test]
    fn misheard_names_match_their_participant() {
        let p = People::new(&["Aiko".into(), "Bruno".into(), "Chidi".into()], &[]);
        assert_eq!(p.participant("Iko"), Some("Aiko"));
        assert_eq!(p.participant("Bruna"), Some("Bruno"));
        assert_eq!(p.participant("Chiddy"), Some("Chidi"));
        assert_eq!(p.participant("bruno"), Some("Bruno"));
        assert_eq!(p.participant("Kevin"), None);
        assert_eq!(p.participant("I"), None);
    }

    #[test]
    fn subjects_heard_as_other_words_match_a_participant() {
        let p = People::new(&["Hiro".into(), "Nikhil".into(), "Farid".into(), "Ines".into(), "Yusuf".into()], &[]);
        assert_eq!(p.misheard_subject("High"), Some("Hiro"));
        assert_eq!(p.misheard_subject("Nick Hill"), Some("Nikhil"));
        assert_eq!(p.misheard_subject("Far it"), Some("Farid"));
        assert_eq!(p.misheard_subject("In these"), Some("Ines"));
        assert_eq!(p.misheard_subject("You suck"), Some("Yusuf"));
        assert_eq!(p.misheard_subject("Premium plan"), None);
        assert_eq!(p.misheard_subject("Marketing"), None);
        assert_eq!(People::new(&[], &[]).misheard_subject("High"), None);
    }

    #[test]
    fn transcript_names_are_not_nouns_at_a_sentence_start() {
        let s = [
            seg("Marketing will prepare the slides."),
            seg("We cut the marketing budget."),
            seg("Thanks, Dana."),
            seg("Victor will add the index."),
            seg("Support will answer faster."),
            seg("Rain delayed the roof work."),
        ];
        let p = People::new(&[], &s);
        assert_eq!(p.person("Dana").as_deref(), Some("Dana"));
        assert_eq!(p.person("Victor").as_deref(), Some("Victor"));
        assert_eq!(p.person("Marketing"), None);
        assert_eq!(p.person("Support"), None);
        assert_eq!(p.person("Rain"), None);
        assert_eq!(p.named_in("Victor, thanks Dana."), ["Victor", "Dana"]);
    }

    #[test]
    fn participant_lists_are_bounded() {
        assert!(check_participants(&["Aiko".into()]).is_ok());
        assert!(check_participants(&vec!["A".into(); 51]).is_err());
        assert!(check_participants(&["x".repeat(65)]).is_err());
    }
}
