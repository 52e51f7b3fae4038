//! ConSE ("convex combination of semantic embeddings", Norouzi et al. 2014): maps an
//! image classifier's output into a text-embedding space, so images and sentences share
//! one space without a jointly trained model such as CLIP.
//!
//! Each ImageNet class gets the text embedding of a caption-like sentence; an image's
//! vector is the probability-weighted sum of the embeddings of its top-T classes,
//! renormalised to unit length.
//!
//! The default sentence is "a photo of a {first synonym}, {WordNet definition}": "a photo
//! of a moped, a motorbike that can be pedaled or driven by a low-powered gasoline engine".
//! The name alone misleads the text encoder where ImageNet's word is not the everyday one
//! (ImageNet has no "motorcycle"; MiniLM puts "a photo of a moped" nearer "a bicycle"), and
//! the definition says what the thing is. Measured with T = 5 on 29 real photos and 25
//! everyday queries (docs/embed.md): the right photo first for 18 queries with the
//! definition, 15 with the bare name.

use std::path::{Path, PathBuf};

use mmc_models::labels::first_synonym;
use sha2::{Digest, Sha256};

use super::{EngineError, ModelId};

/// The class sentence embedded for each class: `{}` in `template` becomes the class name
/// (its first synonym), `{gloss}` its definition.
pub fn class_sentence(template: &str, label: &str, gloss: &str) -> String {
    template.replace("{gloss}", gloss).replace("{}", first_synonym(label))
}

/// The class embeddings, read from `cache_dir` when an earlier start computed them for the
/// same text model and the same sentences, else computed by `compute` and written there.
///
/// Why: the 1000 sentences with their definitions take about 7 s to embed on two cores,
/// paid at every start (every replica, every restart) for the same numbers. The file name
/// is a hash of the text model's id, revision and dimensions and of every sentence, so a
/// new model, template or label set never reads stale vectors. A cache that cannot be read
/// or written (read-only volume, full disk) only costs the computation.
pub fn cached_class_embeddings(
    cache_dir: &Path,
    text_model: &ModelId,
    sentences: &[String],
    compute: impl FnOnce() -> Result<Vec<Vec<f32>>, EngineError>,
) -> Result<Vec<Vec<f32>>, EngineError> {
    let dims = text_model.dimensions as usize;
    let path = cache_path(cache_dir, text_model, sentences);
    // The file: the vectors as little-endian f32, then the sha256 of those bytes.
    if let Ok(file) = std::fs::read(&path) {
        let (bytes, sum) = file.split_at(file.len().saturating_sub(32));
        if dims > 0 && bytes.len() == sentences.len() * dims * 4 && Sha256::digest(bytes).as_slice() == sum {
            let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            tracing::info!(path = %path.display(), "class embeddings read from the cache");
            return Ok(values.chunks(dims).map(<[f32]>::to_vec).collect());
        }
        tracing::warn!(path = %path.display(), "class-embedding cache file is damaged; recomputing");
    }
    let embeddings = compute()?;
    let mut bytes: Vec<u8> = embeddings.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    // Written beside its final name and renamed, so a concurrent start never reads half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(cache_dir).and_then(|()| std::fs::write(&tmp, &bytes)).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&tmp);
        // Read-only model volumes (the compose file and the Kubernetes manifests mount them
        // so) land here at every start: worth a line, not an alarm.
        tracing::info!(path = %path.display(), %error, "class embeddings not cached; the next start computes them again");
    }
    Ok(embeddings)
}

fn cache_path(cache_dir: &Path, text_model: &ModelId, sentences: &[String]) -> PathBuf {
    let model = [&text_model.id, &text_model.family, &text_model.revision, &text_model.dimensions.to_string()];
    let key = digest(model.iter().map(|s| s.as_str()).chain(sentences.iter().map(String::as_str)), 12);
    cache_dir.join(format!("{}-{key}.f32", text_model.id))
}

/// A short digest of what makes ConSE image vectors what they are beyond the two models'
/// weights: T and every class sentence. It goes into the revision the image vectors are
/// reported with, so stored vectors say which configuration made them.
pub fn config_digest(top_t: usize, sentences: &[String]) -> String {
    let t = top_t.max(1).to_string();
    digest(std::iter::once(t.as_str()).chain(sentences.iter().map(String::as_str)), 4)
}

/// First `bytes` bytes of the sha256 of `parts` (each ended by a NUL), in hex.
fn digest<'a>(parts: impl Iterator<Item = &'a str>, bytes: usize) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..bytes])
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
        assert_eq!(class_sentence("a photo of a {}", "tabby, tabby cat", "a cat with a grey coat"), "a photo of a tabby");
        assert_eq!(
            class_sentence("a photo of a {}, {gloss}", "moped", "a motorbike that can be pedaled"),
            "a photo of a moped, a motorbike that can be pedaled"
        );
    }

    #[test]
    fn class_embeddings_are_cached_per_model_and_sentences() {
        let dir = std::env::temp_dir().join(format!("mmc-conse-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let model = ModelId { id: "m".into(), family: "bert".into(), profile: "p".into(), revision: "abc".into(), dimensions: 2 };
        let sentences = vec!["a photo of a cat".to_string(), "a photo of a cup".to_string()];
        let computed = || Ok(vec![vec![0.6, 0.8], vec![-1.0, 0.0]]);
        let first = cached_class_embeddings(&dir, &model, &sentences, computed).unwrap();
        // The second start reads the file: `compute` must not run.
        let again = cached_class_embeddings(&dir, &model, &sentences, || panic!("recomputed")).unwrap();
        assert_eq!(first, again);
        // Another template or another model revision is another file.
        let other = vec!["a photo of a cat, a feline".to_string(), "a photo of a cup".to_string()];
        let recomputed = std::cell::Cell::new(0);
        cached_class_embeddings(&dir, &model, &other, || {
            recomputed.set(recomputed.get() + 1);
            computed()
        })
        .unwrap();
        let newer = ModelId { revision: "def".into(), ..model.clone() };
        cached_class_embeddings(&dir, &newer, &sentences, || {
            recomputed.set(recomputed.get() + 1);
            computed()
        })
        .unwrap();
        assert_eq!(recomputed.get(), 2);
        // A damaged file is recomputed, not trusted: one flipped bit, then a short file.
        let file = cache_path(&dir, &model, &sentences);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(cached_class_embeddings(&dir, &model, &sentences, computed).unwrap(), first);
        std::fs::write(&file, b"short").unwrap();
        assert_eq!(cached_class_embeddings(&dir, &model, &sentences, computed).unwrap(), first);
        // ... and rewritten whole.
        assert_eq!(cached_class_embeddings(&dir, &model, &sentences, || panic!("recomputed")).unwrap(), first);
        // An unwritable cache only costs the computation.
        let blocked = dir.join("a-file");
        std::fs::write(&blocked, b"").unwrap();
        assert_eq!(cached_class_embeddings(&blocked.join("sub"), &model, &sentences, computed).unwrap(), first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_config_digest_changes_with_t_and_with_any_sentence() {
        let sentences = vec!["a photo of a cat".to_string(), "a photo of a cup".to_string()];
        let d = config_digest(5, &sentences);
        assert_eq!(d.len(), 8);
        assert_eq!(d, config_digest(5, &sentences));
        assert_ne!(d, config_digest(3, &sentences));
        assert_ne!(d, config_digest(5, &["a photo of a cat".to_string(), "a photo of a mug".to_string()]));
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
