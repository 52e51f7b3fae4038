//! The transformer itself: a GGUF file loaded into the module its `general.architecture`
//! calls for.
//!
//! `llama` files on CPU run on our own forward pass ([`super::llama`]), which batches the
//! new tokens of many sequences into one pass ([`Model::forward_batch`]). `gemma3` runs on
//! our fix of candle's module ([`super::gemma3`]). Other architectures (and `llama` on GPU,
//! or with experts) use candle's quantized modules, one sequence per pass.
//!
//! Each sequence in flight needs an [`Instance`] of its own (its KV cache). For every
//! architecture but `qwen2` an instance is a cheap clone of a pristine one (the quantized
//! weights are shared behind `Arc`s, only the cache is per instance). candle's `qwen2` module
//! is not `Clone`: its instances are separate loads of the file, so each concurrent `qwen2`
//! sequence costs the weights' memory once more.

use std::{fs::File, path::Path, sync::Arc};

use super::{gemma3, llama};
use candle_core::{
    quantized::{gguf_file, GgmlDType, QTensor},
    Device, Tensor,
};
use candle_transformers::models::{quantized_llama, quantized_phi3, quantized_qwen2, quantized_qwen3};

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source} (the bundled models come from `mmc models fetch`)")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a readable GGUF file: {source}")]
    Gguf { path: String, source: candle_core::Error },
    #[error("{path}: GGUF architecture {arch:?} is not supported (supported: llama, qwen2, qwen3, gemma3, phi3)")]
    Unsupported { path: String, arch: String },
    #[error("{path}: {feature} is not supported for {arch} yet; refusing rather than generating from wrong positions")]
    UnsupportedFeature { path: String, arch: String, feature: String },
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Llama(#[from] llama::LlamaError),
}

/// GGUF key-value metadata.
pub type Metadata = std::collections::HashMap<String, gguf_file::Value>;

/// Architectures this service can run, as named by GGUF's `general.architecture`.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3", "phi3"];

/// One loaded model instance with its own KV cache.
pub enum Instance {
    /// Our batched forward pass (`llama` on CPU).
    Llama(llama::Sequence),
    /// candle's module (`llama` with experts, or on GPU).
    CandleLlama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    /// Our fix of candle's module ([`super::gemma3`]).
    Gemma3(gemma3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
}

impl Instance {
    /// A copy of this instance, KV cache included (the weights are shared), or `None` for
    /// modules that cannot be cloned (candle 0.11's `qwen2`).
    pub fn try_clone(&self) -> Option<Instance> {
        Some(match self {
            Instance::Llama(m) => Instance::Llama(m.clone()),
            Instance::CandleLlama(m) => Instance::CandleLlama(m.clone()),
            Instance::Qwen3(m) => Instance::Qwen3(m.clone()),
            Instance::Gemma3(m) => Instance::Gemma3(m.clone()),
            Instance::Phi3(m) => Instance::Phi3(m.clone()),
            Instance::Qwen2(_) => return None,
        })
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` (appending to the KV cache) and
    /// returns the logits of the last position as a vector over the vocabulary.
    pub fn forward(&mut self, tokens: &[u32], pos: usize, device: &Device) -> Result<Vec<f32>, ModelError> {
        let input = || Tensor::new(tokens, device)?.unsqueeze(0);
        let logits = match self {
            Instance::Llama(m) => return Ok(m.forward(tokens, pos)?),
            Instance::CandleLlama(m) => m.forward(&input()?, pos)?,
            Instance::Qwen2(m) => m.forward(&input()?, pos)?,
            Instance::Qwen3(m) => m.forward(&input()?, pos)?,
            Instance::Gemma3(m) => m.forward(&input()?, pos)?,
            Instance::Phi3(m) => m.forward(&input()?, pos)?,
        };
        Ok(logits.squeeze(0)?.to_dtype(candle_core::DType::F32)?.to_vec1()?)
    }
}

/// One sequence's part of [`Model::forward_batch`].
pub struct BatchStep<'a> {
    pub instance: &'a mut Instance,
    pub tokens: &'a [u32],
    pub pos: usize,
    pub want_logits: bool,
}

/// A loaded GGUF model: metadata plus a pristine instance that sequences are made from.
pub struct Model {
    path: std::path::PathBuf,
    device: Device,
    architecture: String,
    pristine: Instance,
    /// Metadata the tokenizer and chat template are built from.
    pub metadata: Metadata,
    /// Context window in tokens: the GGUF's `<arch>.context_length`, capped by what the
    /// candle module precomputes rotary embeddings for.
    pub context_length: usize,
    /// Vocabulary rows of the output layer (may exceed the tokenizer's vocabulary).
    pub vocab_size: usize,
}

impl Model {
    /// Loads the GGUF at `path` on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Model, ModelError> {
        let (metadata, pristine) = load_instance(path, device)?;
        let md = &metadata;
        let architecture = md.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        let declared = md
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.to_u32().ok().map(|v| v as usize).or_else(|| v.to_u64().ok().map(|v| v as usize)))
            .unwrap_or(2048);
        // candle's quantized_llama precomputes rotary tables for MAX_SEQ_LEN positions only;
        // our own pass keeps the same cap, which also bounds a sequence's KV cache.
        let module_limit = match architecture.as_str() {
            "llama" => quantized_llama::MAX_SEQ_LEN,
            _ => usize::MAX,
        };
        let vocab_size = md.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok().map(|v| v.len())).unwrap_or(0);
        Ok(Model {
            path: path.to_path_buf(),
            device: device.clone(),
            context_length: declared.min(module_limit),
            metadata,
            architecture,
            pristine,
            vocab_size,
        })
    }

    /// `general.architecture` of the file.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh instance with an empty KV cache for one sequence.
    pub fn instance(&self) -> Result<Instance, ModelError> {
        Ok(match &self.pristine {
            Instance::Llama(m) => Instance::Llama(m.clone()),
            Instance::CandleLlama(m) => Instance::CandleLlama(m.clone()),
            Instance::Qwen3(m) => Instance::Qwen3(m.clone()),
            Instance::Gemma3(m) => Instance::Gemma3(m.clone()),
            Instance::Phi3(m) => Instance::Phi3(m.clone()),
            // Not Clone in candle 0.11: load another copy.
            Instance::Qwen2(_) => load_instance(&self.path, &self.device)?.1,
        })
    }

    /// Runs one step of several sequences: for each, `tokens` at positions `pos..` on its
    /// instance, returning the last token's logits where `want_logits`. Our `llama` instances
    /// share one batched pass; any other instance runs alone (and always returns logits).
    pub fn forward_batch(&self, steps: &mut [BatchStep<'_>]) -> Result<Vec<Option<Vec<f32>>>, ModelError> {
        let Instance::Llama(first) = &self.pristine else {
            return steps.iter_mut().map(|s| s.instance.forward(s.tokens, s.pos, &self.device).map(Some)).collect();
        };
        let weights = first.weights.clone();
        let mut items = Vec::with_capacity(steps.len());
        for s in steps.iter_mut() {
            // Every instance of a model is of its pristine's kind.
            let Instance::Llama(seq) = &mut *s.instance else { unreachable!("an instance of another model") };
            seq.cache.start_at(s.pos)?;
            items.push(llama::Item { cache: &mut seq.cache, tokens: s.tokens, logits: s.want_logits });
        }
        Ok(llama::forward(&weights, &mut items)?)
    }

    /// Makes a used instance fresh again, reusing its memory where the module allows.
    pub fn reset(&self, instance: &mut Instance) -> Result<(), ModelError> {
        match instance {
            Instance::Llama(m) => m.cache.clear(),
            Instance::CandleLlama(m) => m.clear_kv_cache(),
            Instance::Qwen2(m) => m.clear_kv_cache(),
            Instance::Qwen3(m) => m.clear_kv_cache(),
            other => *other = self.instance()?,
        }
        Ok(())
    }
}

/// Weight types for which candle 0.11's CPU backend has no SIMD dot product: its generic
/// loop runs them at about half of llama.cpp's speed. On CPU they are re-quantized to Q8_0
/// at load (AVX2 kernel; the error added is under a tenth of the original 4/5-bit step).
const REQUANTIZE_ON_CPU: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// The GGUF at `file`, with slow-on-CPU weight types re-quantized to Q8_0, as an in-memory
/// GGUF; `None` when nothing needs it. (Public so that tests can load candle's own module on
/// exactly the weights ours runs.)
pub fn requantized_for_cpu(content: &gguf_file::Content, file: &mut File) -> candle_core::Result<Option<Vec<u8>>> {
    if !content.tensor_infos.values().any(|t| REQUANTIZE_ON_CPU.contains(&t.ggml_dtype)) {
        return Ok(None);
    }
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let mut t = content.tensor(file, name, &Device::Cpu)?;
        let k = t.shape().dims().last().copied().unwrap_or(0);
        if REQUANTIZE_ON_CPU.contains(&t.dtype()) && k % GgmlDType::Q8_0.block_size() == 0 {
            t = QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?;
        }
        tensors.push(t);
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let named: Vec<(&str, &QTensor)> = names.iter().map(|n| n.as_str()).zip(tensors.iter()).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &named)?;
    Ok(Some(out.into_inner()))
}

fn load_instance(path: &Path, device: &Device) -> Result<(Metadata, Instance), ModelError> {
    let shown = path.display().to_string();
    let mut file = File::open(path).map_err(|source| ModelError::Io { path: shown.clone(), source })?;
    let content = gguf_file::Content::read(&mut file).map_err(|source| ModelError::Gguf { path: shown.clone(), source })?;
    if device.is_cpu() {
        if let Some(bytes) = requantized_for_cpu(&content, &mut file)? {
            let mut cursor = std::io::Cursor::new(bytes);
            let content = gguf_file::Content::read(&mut cursor)?;
            return build(content, &mut cursor, device, shown);
        }
    }
    build(content, &mut file, device, shown)
}

fn build<R: std::io::Read + std::io::Seek>(
    content: gguf_file::Content,
    file: &mut R,
    device: &Device,
    shown: String,
) -> Result<(Metadata, Instance), ModelError> {
    let arch = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    let metadata = content.metadata.clone();
    // `llama` runs on our own pass when its config says it can (CPU, no experts, full
    // rotary dimension); decided once, for the RoPE check and the dispatch below.
    let our_llama = match arch.as_str() {
        "llama" => llama::Config::from_gguf(&content)?.filter(|_| device.is_cpu()),
        _ => None,
    };
    if let Some(feature) = unsupported_rope(&arch, &content, our_llama.is_some()) {
        return Err(ModelError::UnsupportedFeature { path: shown, arch, feature });
    }
    let instance = match arch.as_str() {
        "llama" => match our_llama {
            Some(config) => {
                let weights = Arc::new(llama::Weights::from_gguf(config, &content, file)?);
                Instance::Llama(llama::Sequence { weights, cache: Default::default() })
            }
            None => Instance::CandleLlama(quantized_llama::ModelWeights::from_gguf(content, file, device)?),
        },
        "qwen2" => Instance::Qwen2(quantized_qwen2::ModelWeights::from_gguf(content, file, device)?),
        "qwen3" => Instance::Qwen3(quantized_qwen3::ModelWeights::from_gguf(content, file, device)?),
        "gemma3" => {
            let context = content.metadata.get("gemma3.context_length").and_then(|v| v.to_u32().ok()).unwrap_or(8192);
            Instance::Gemma3(gemma3::ModelWeights::from_gguf(content, file, device, context as usize)?)
        }
        "phi3" => Instance::Phi3(quantized_phi3::ModelWeights::from_gguf(false, content, file, device)?),
        _ => return Err(ModelError::Unsupported { path: shown, arch }),
    };
    Ok((metadata, instance))
}

/// RoPE variants a file asks for that the module its architecture runs on would ignore
/// (llama.cpp applies them; candle 0.11's modules read only the base frequency, and
/// `phi3`'s not even that). Our `llama` pass (CPU) handles linear scaling and Llama 3's
/// `rope_freqs`; our `gemma3` handles linear scaling.
fn unsupported_rope(arch: &str, content: &gguf_file::Content, our_llama: bool) -> Option<String> {
    let md = &content.metadata;
    let text = |k: &str| md.get(&format!("{arch}.{k}")).and_then(|v| v.to_string().ok()).cloned();
    let number = |k: &str| md.get(&format!("{arch}.{k}")).and_then(|v| v.to_f32().ok());
    let ours_scale_linear = our_llama || arch == "gemma3";
    match text("rope.scaling.type").as_deref() {
        None | Some("none") => {}
        Some("linear") if ours_scale_linear => {}
        Some(kind) => return Some(format!("RoPE scaling {kind:?} ({arch}.rope.scaling.type)")),
    }
    if !ours_scale_linear && number("rope.scaling.factor").or_else(|| number("rope.scale_linear")).is_some_and(|f| f != 1.0 && f > 0.0) {
        return Some(format!("linear RoPE scaling ({arch}.rope.scaling.factor)"));
    }
    if arch == "phi3" {
        if content.tensor_infos.contains_key("rope_factors_long.weight") || content.tensor_infos.contains_key("rope_factors_short.weight") {
            return Some("LongRoPE (rope_factors_long/short tensors, Phi-3 128k and Phi-3.5)".into());
        }
        if number("rope.freq_base").is_some_and(|b| b != 10_000.0) {
            return Some("a RoPE base other than 10000 (phi3.rope.freq_base)".into());
        }
    }
    if arch == "llama" && !ours_scale_linear && content.tensor_infos.contains_key("rope_freqs.weight") {
        tracing::warn!("rope_freqs (Llama 3.1+ RoPE scaling) is ignored by candle's llama module (GPU or experts): long contexts will degrade");
    }
    None
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::gguf_file::Value;

    use super::*;

    /// The random-weight GGUF of `arch` from `tests/fixtures/tiny-gguf`.
    fn content(arch: &str) -> gguf_file::Content {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/fixtures/tiny-gguf/{arch}.gguf"));
        gguf_file::Content::read(&mut File::open(path).unwrap()).unwrap()
    }

    fn with(mut c: gguf_file::Content, key: &str, value: Value) -> gguf_file::Content {
        c.metadata.insert(key.to_string(), value);
        c
    }

    #[test]
    fn rope_variants_a_module_would_ignore_are_refused() {
        // On CPU the llama fixture runs on our own pass.
        let ours = |arch: &str| arch == "llama";
        // What the fixtures carry runs: Llama 3's rope_freqs and Gemma 3's linear scaling.
        for arch in ["llama", "qwen2", "qwen3", "gemma3", "phi3"] {
            assert_eq!(unsupported_rope(arch, &content(arch), ours(arch)), None, "{arch}");
        }
        let yarn = with(content("qwen2"), "qwen2.rope.scaling.type", Value::String("yarn".into()));
        assert!(unsupported_rope("qwen2", &yarn, ours("qwen2")).unwrap().contains("yarn"));
        let linear = with(content("qwen3"), "qwen3.rope.scaling.factor", Value::F32(4.0));
        assert!(unsupported_rope("qwen3", &linear, ours("qwen3")).unwrap().contains("linear"));
        let linear = with(content("llama"), "llama.rope.scaling.factor", Value::F32(4.0));
        assert_eq!(unsupported_rope("llama", &linear, ours("llama")), None, "our llama pass scales");
        let base = with(content("phi3"), "phi3.rope.freq_base", Value::F32(250_000.0));
        assert!(unsupported_rope("phi3", &base, ours("phi3")).unwrap().contains("10000"));
    }
}
