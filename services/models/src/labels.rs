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
    synonyms(label)
        .filter(|s| s.len() > first.len() && s.split(' ').any(|w| w == first))
        .min_by_key(|s| s.len())
        .unwrap_or(first)
        .to_string()
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
}
