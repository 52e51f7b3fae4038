//! The object vocabulary of an image classifier's label set, for grounding checks.
//!
//! A caption is grounded when every object it names was reported by the encoder. To tell
//! an object word from any other word, the vocabulary holds every head noun of the label set
//! (the last word of each synonym: "great white shark" -> "shark") plus a few objects small
//! language models like to invent although ImageNet lacks them (person, tree, sky...).
//! Each class may be named by any word of its synonyms or by a broader word (hypernym) from
//! a short table ("mountain bike" may be called a "bicycle", "tabby cat" a "cat"), since a
//! caption that says "a bike" for a mountain bike is grounded.

use std::collections::{HashMap, HashSet};

/// Broader words a class may be called by, as (word, class-index ranges). ImageNet classes
/// are WordNet leaves; this covers the families people name most often.
const HYPERNYMS: &[(&str, &[(u32, u32)])] = &[
    ("fish", &[(0, 6), (389, 397)]),
    ("bird", &[(7, 24), (80, 100), (127, 146)]),
    ("snake", &[(52, 68)]),
    ("dog", &[(151, 268)]),
    ("puppy", &[(151, 268)]),
    ("wolf", &[(269, 272)]),
    ("fox", &[(277, 280)]),
    ("cat", &[(281, 293)]),
    ("kitten", &[(281, 285)]),
    ("bear", &[(294, 297)]),
    ("butterfly", &[(321, 326)]),
    ("monkey", &[(369, 382)]),
    ("bicycle", &[(444, 444), (671, 671)]),
    ("bike", &[(444, 444), (671, 671)]),
    ("car", &[(436, 436), (468, 468), (511, 511), (609, 609), (627, 627), (656, 656), (661, 661), (717, 717), (751, 751), (817, 817)]),
    ("boat", &[(472, 472), (484, 484), (554, 554), (576, 576), (625, 625), (780, 780), (814, 814), (871, 871), (914, 914)]),
    ("ship", &[(510, 510), (628, 628), (724, 724)]),
    ("rocket", &[(657, 657), (744, 744), (812, 812)]),
    ("coffee", &[(504, 504), (967, 967)]),
];

/// Objects small models invent that ImageNet has no class for; naming one is ungrounded.
const EXTRA_OBJECTS: &[&str] = &[
    "person", "man", "woman", "boy", "girl", "child", "baby", "kid", "tree", "flower", "grass", "road", "street", "building", "city", "room",
    "kitchen", "field", "beach", "mountain", "sky", "sea", "ocean", "lake", "river", "forest", "garden", "food", "sun", "moon", "cloud", "snow",
    "bridge",
];

/// Head nouns of ImageNet synonyms that are far more often ordinary words ("a can of",
/// "in the light") or Latin species epithets; they are not treated as objects.
const NOT_OBJECTS: &[&str] = &[
    "ai", "aid", "bar", "bars", "board", "bow", "can", "case", "cover", "drop", "fan", "file", "fly", "grand", "gray", "grey", "hack", "head",
    "home", "hot", "jack", "kit", "light", "maker", "mail", "mike", "pack", "pick", "place", "press", "rule", "safe", "scale", "shade", "site",
    "slide", "spot", "spray", "stage", "star", "stick", "stole", "swing", "t", "tick", "unit", "watch", "trump", "front", "top", "eater", "smith",
    "albus", "catta", "leo", "lupus", "maria", "niger", "nigra", "onca", "rufus", "uncia", "tinca", "set", "point", "piece", "close",
];

/// Irregular plurals that matter for the object words above.
const IRREGULAR_PLURALS: &[(&str, &str)] = &[
    ("men", "man"),
    ("women", "woman"),
    ("children", "child"),
    ("people", "person"),
    ("mice", "mouse"),
    ("geese", "goose"),
    ("knives", "knife"),
    ("wolves", "wolf"),
    ("teeth", "tooth"),
];

/// The vocabulary of one label set.
pub struct Vocabulary {
    /// Class names by index, synonyms comma-separated.
    labels: Vec<&'static str>,
    /// Every word that names an object.
    objects: HashSet<String>,
    /// Words each class may be called by (its synonyms' words and its hypernyms).
    class_words: Vec<HashSet<String>>,
}

impl Vocabulary {
    /// The vocabulary of ImageNet-1k, the bundled encoder's label set.
    pub fn imagenet() -> Vocabulary {
        Vocabulary::new(mmc_models::labels::imagenet_1k())
    }

    /// Builds the vocabulary of `labels` (class names by index, synonyms comma-separated).
    pub fn new(labels: Vec<&'static str>) -> Vocabulary {
        let stop: HashSet<&str> = NOT_OBJECTS.iter().copied().collect();
        let mut objects: HashSet<String> = EXTRA_OBJECTS.iter().map(|w| w.to_string()).collect();
        let mut class_words: Vec<HashSet<String>> = Vec::with_capacity(labels.len());
        for label in &labels {
            let mut words = HashSet::new();
            for synonym in mmc_models::labels::synonyms(label) {
                let lower = synonym.to_lowercase();
                for w in words_of(&lower) {
                    words.insert(w.to_string());
                }
                if let Some(head) = words_of(&lower).last() {
                    if !stop.contains(head) {
                        objects.insert(head.to_string());
                    }
                }
            }
            class_words.push(words);
        }
        let mut hypernyms: HashMap<u32, Vec<&str>> = HashMap::new();
        for (word, ranges) in HYPERNYMS {
            objects.insert(word.to_string());
            for &(lo, hi) in *ranges {
                for i in lo..=hi {
                    hypernyms.entry(i).or_default().push(word);
                }
            }
        }
        for (i, words) in class_words.iter_mut().enumerate() {
            for w in hypernyms.get(&(i as u32)).into_iter().flatten() {
                words.insert(w.to_string());
            }
        }
        Vocabulary { labels, objects, class_words }
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for an empty label set.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The readable name of class `index` ("tabby, tabby cat" -> "tabby cat").
    pub fn readable_name(&self, index: u32) -> Option<String> {
        self.labels.get(index as usize).map(|l| mmc_models::labels::readable_name(l))
    }

    /// Words class `index` may be called by.
    pub fn class_words(&self, index: u32) -> &HashSet<String> {
        static EMPTY: std::sync::OnceLock<HashSet<String>> = std::sync::OnceLock::new();
        self.class_words.get(index as usize).unwrap_or_else(|| EMPTY.get_or_init(HashSet::new))
    }

    /// The broader word two classes share ("cat" for tabby cat and Egyptian cat), if any.
    pub fn shared_word(&self, a: u32, b: u32) -> Option<String> {
        let (wa, wb) = (self.class_words(a), self.class_words(b));
        // Prefer a hypernym from the table, then a shared head noun.
        for (word, _) in HYPERNYMS {
            if wa.contains(*word) && wb.contains(*word) {
                return Some(word.to_string());
            }
        }
        let head = |i: u32| {
            self.labels.get(i as usize).and_then(|l| words_of(&mmc_models::labels::readable_name(l).to_lowercase()).last().map(str::to_string))
        };
        match (head(a), head(b)) {
            (Some(x), Some(y)) if x == y && self.objects.contains(&x) => Some(x),
            _ => None,
        }
    }

    /// The object words of `text`, in order, in their vocabulary (singular) form.
    pub fn objects_in(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        words_of(&lower).filter_map(|w| self.as_object(w)).collect()
    }

    /// `word` as a vocabulary object (singularised), if it names one.
    fn as_object(&self, word: &str) -> Option<String> {
        if self.objects.contains(word) {
            return Some(word.to_string());
        }
        if let Some((_, singular)) = IRREGULAR_PLURALS.iter().find(|(p, _)| *p == word) {
            return Some(singular.to_string());
        }
        let candidates = [
            word.strip_suffix("ies").map(|s| format!("{s}y")),
            word.strip_suffix("es").map(str::to_string),
            word.strip_suffix('s').map(str::to_string),
        ];
        candidates.into_iter().flatten().find(|c| self.objects.contains(c))
    }
}

/// Words of lower-cased text: letters, digits, hyphens and apostrophes inside a word.
pub fn words_of(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\'')).map(|w| w.trim_matches(|c| c == '-' || c == '\'')).filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_head_nouns_and_extras_singularised() {
        let v = Vocabulary::imagenet();
        assert_eq!(v.objects_in("Two tabby cats on a table, a man and people nearby."), ["tabby", "cat", "table", "man", "person"]);
        // Ordinary words that happen to end ImageNet synonyms are not objects.
        assert!(v.objects_in("You can see it in the light at the top.").is_empty());
        assert!(v.objects_in("Possibly a very blurry photo.").is_empty());
    }

    #[test]
    fn classes_may_be_called_by_synonyms_and_hypernyms() {
        let v = Vocabulary::imagenet();
        assert!(v.class_words(281).contains("tabby") && v.class_words(281).contains("cat"));
        assert!(v.class_words(671).contains("bike") && v.class_words(671).contains("bicycle"));
        assert!(v.class_words(967).contains("espresso") && v.class_words(967).contains("coffee"));
        assert!(v.class_words(657).contains("rocket"));
        assert!(!v.class_words(281).contains("dog"));
        assert_eq!(v.shared_word(281, 285).as_deref(), Some("cat"));
        assert_eq!(v.shared_word(671, 444).as_deref(), Some("bicycle"));
        assert_eq!(v.shared_word(657, 744).as_deref(), Some("rocket"));
        assert_eq!(v.shared_word(281, 968), None);
        assert_eq!(v.readable_name(281).as_deref(), Some("tabby cat"));
        assert_eq!(v.len(), 1000);
    }
}
