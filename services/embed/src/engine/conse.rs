//! ConSE ("convex combination of semantic embeddings", Norouzi et al. 2014): maps an
//! image classifier's output into a text-embedding space, so images and sentences share
//! one space without a jointly trained model such as CLIP.
//!
//! Each ImageNet class gets the text embedding of a caption-like sentence (by default
//! "a photo of a {first synonym}"); an image's vector is the probability-weighted sum of
//! the embeddings of its top-T classes, renormalised to unit length. Measured on real
//! photos (see ../shared/MODELS.md): T = 5 with this phrasing found the right photo
//! first for 10 of 13 everyday queries.

use mmc_models::labels::first_synonym;

/// The class sentence embedded for each class.
pub fn class_sentence(template: &str, label: &str) -> String {
    template.replace("{}", first_synonym(label))
}

/// Probability-weighted sum of the top-`t` class embeddings, unit length.
pub fn combine(probs: &[f32], class_embeddings: &[Vec<f32>], t: usize) -> Vec<f32> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let dims = class_embeddings.first().map_or(0, Vec::len);
    let mut v = vec![0f32; dims];
    for &i in order.iter().take(t.max(1)) {
        for (acc, e) in v.iter_mut().zip(&class_embeddings[i]) {
            *acc += probs[i] * e;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(class_sentence("a photo of a {}", "tabby, tabby cat"), "a photo of a tabby");
    }

    #[test]
    fn combine_weights_the_top_classes_and_normalises() {
        let emb = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![-1.0, 0.0]];
        let v = combine(&[0.6, 0.3, 0.1], &emb, 2);
        let expected = [0.6f32 / (0.45f32).sqrt(), 0.3 / (0.45f32).sqrt()];
        assert!((v[0] - expected[0]).abs() < 1e-6 && (v[1] - expected[1]).abs() < 1e-6, "{v:?}");
        let v1 = combine(&[0.6, 0.3, 0.1], &emb, 1);
        assert_eq!(v1, vec![1.0, 0.0]);
    }
}
