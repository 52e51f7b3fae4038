//! Label sets of classifier models, shared by the service that runs the classifier (embed)
//! and the services that read its output (caption), so both agree on what index `i` means.
//!
//! ImageNet-1k class names are stored as WordNet synonym lists ("tabby, tabby cat"). People
//! need one readable noun ([`readable_name`]); grounding checks need every synonym
//! ([`synonyms`]).

/// ImageNet-1k class names (from candle-examples' `imagenet.rs`), one per line, by class index.
pub const IMAGENET_1K: &str = include_str!("../data/imagenet_classes.txt");

/// The ImageNet-1k class names by index.
pub fn imagenet_1k() -> Vec<&'static str> {
    IMAGENET_1K.lines().collect()
}

/// WordNet 3.0 synset id and definition of each ImageNet-1k class, tab-separated, by class
/// index after `#` comment lines (written by `data/imagenet_glosses.py`).
pub const IMAGENET_1K_GLOSSES: &str = include_str!("../data/imagenet_glosses.tsv");

/// One ImageNet-1k class as WordNet describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gloss {
    /// The WordNet 3.0 noun synset ("n03785016"), ImageNet's own id for the class.
    pub wnid: &'static str,
    /// The synset's definition, first clause ("a motorbike that can be pedaled or driven by a
    /// low-powered gasoline engine"). Class names alone are often ambiguous or misleading to a
    /// sentence encoder; the definition says what the thing is.
    pub definition: &'static str,
}

/// The WordNet definitions of the ImageNet-1k classes, by class index.
pub fn imagenet_1k_glosses() -> Vec<Gloss> {
    IMAGENET_1K_GLOSSES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (wnid, definition) = l.split_once('\t').unwrap_or((l, ""));
            Gloss { wnid, definition }
        })
        .collect()
}

/// The synonyms of a class name, trimmed: "tabby, tabby cat" -> ["tabby", "tabby cat"].
pub fn synonyms(label: &str) -> impl Iterator<Item = &str> {
    label.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The first synonym of a class name ("tabby, tabby cat" -> "tabby").
pub fn first_synonym(label: &str) -> &str {
    synonyms(label).next().unwrap_or(label)
}

/// A readable noun for people (alt text, UIs): the first synonym, or the shortest longer
/// synonym that contains it as a word ("tabby, tabby cat" -> "tabby cat"), because the first
/// WordNet synonym is often a bare modifier.
pub fn readable_name(label: &str) -> String {
    let first = first_synonym(label);
    synonyms(label).filter(|s| s.len() > first.len() && s.split(' ').any(|w| w == first)).min_by_key(|s| s.len()).unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(first_synonym("tabby, tabby cat"), "tabby");
        assert_eq!(readable_name("tabby, tabby cat"), "tabby cat");
        assert_eq!(readable_name("espresso"), "espresso");
        assert_eq!(readable_name("projectile, missile"), "projectile");
        assert_eq!(synonyms("mountain bike, all-terrain bike, off-roader").collect::<Vec<_>>(), ["mountain bike", "all-terrain bike", "off-roader"]);
    }

    #[test]
    fn imagenet_has_1000_classes() {
        let labels = imagenet_1k();
        assert_eq!(labels.len(), 1000);
        assert_eq!(labels[281], "tabby, tabby cat");
    }

    #[test]
    fn every_class_has_its_wordnet_definition_in_imagenet_order() {
        let glosses = imagenet_1k_glosses();
        assert_eq!(glosses.len(), 1000);
        // ImageNet orders its classes by synset id, so the ids must rise strictly.
        assert!(glosses.windows(2).all(|w| w[0].wnid < w[1].wnid), "synset ids out of class order");
        assert!(glosses.iter().all(|g| g.wnid.len() == 9 && g.wnid.starts_with('n') && !g.definition.is_empty()));
        // Well-known ids (ImageNet's synset list), and the two names ImageNet repeats.
        assert_eq!(glosses[0].wnid, "n01440764"); // tench
        assert_eq!(glosses[281].wnid, "n02123045"); // tabby
        assert_eq!(glosses[999].wnid, "n15075141"); // toilet tissue
        assert!(glosses[134].definition.contains("wading bird"), "{:?}", glosses[134]); // crane, the bird
        assert!(glosses[517].definition.contains("lifts and moves heavy objects"), "{:?}", glosses[517]); // crane, the machine
        assert!(glosses[665].definition.contains("motorbike"), "{:?}", glosses[665]);
        // moped
    }
}
