//! Gemma 3 on quantized GGUF weights.
//!
//! Derived from candle-transformers 0.11.1's `quantized_gemma3` (MIT OR Apache-2.0), which
//! this replaces because of three faults found by comparing it with llama.cpp on the same
//! file (`tests/architectures.rs`):
//!
//! - its feed-forward gate used SiLU; Gemma 3 uses GELU (tanh approximation), as llama.cpp
//!   and `transformers` do (candle issue #3745, fix pending upstream in PR #3747);
//! - sliding-window layers attended to the whole past once decoding one token at a time,
//!   and the window admitted one position too many (a key at distance `window` from the
//!   query; `transformers` and llama.cpp mask it);
//! - a prompt prefilled in chunks masked out every earlier chunk.
//!
//! It also reads the metadata llama.cpp reads, under llama.cpp's key names (candle's
//! `sliding_window_type` and `local_freq_base` are not what converters write), and with it
//! what candle ignored:
//!
//! - `rope.scaling.factor`: Gemma 3 4B and larger scale the global layers' positions by
//!   1/8 (linear RoPE scaling); unscaled, every global layer sees wrong angles;
//! - the 27B model's attention scale, 1/sqrt(embedding / heads) rather than
//!   1/sqrt(head size) (llama.cpp and gemma_pytorch key it on the 62 layers);
//! - `final_logit_softcapping`, when a file sets it;
//!
//! and builds the rotary tables once per frequency for the file's context length, not
//! twice per layer for 131072 positions (64 MiB per table at head size 256).

use std::sync::Arc;

use candle_core::{
    quantized::{gguf_file, QMatMul},
    DType, Device, IndexOp, Module, Result, Tensor,
};
use candle_nn::Embedding;
use candle_transformers::quantized_nn::RmsNorm;

/// Layers per global-attention layer when the file does not say (Gemma 3: five local, one
/// global).
const DEFAULT_SLIDING_WINDOW_PATTERN: usize = 6;
/// RoPE base when the file does not say (llama.cpp's default, for both kinds of layer).
const DEFAULT_ROPE_FREQUENCY: f32 = 10_000.;
/// Layer count of Gemma 3 27B, whose attention scale differs (see the module docs).
const GEMMA3_27B_LAYERS: usize = 62;

/// Precomputed cos/sin for positions `0..max_positions` (NeoX layout: halves rotate).
#[derive(Debug)]
struct Rotary {
    sin: Tensor,
    cos: Tensor,
}

impl Rotary {
    /// Tables for base `base` with positions multiplied by `scale` (linear RoPE scaling).
    fn new(head_dim: usize, base: f32, scale: f32, max_positions: usize, device: &Device) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..head_dim).step_by(2).map(|i| scale / base.powf(i as f32 / head_dim as f32)).collect();
        let inv_freq = Tensor::new(inv_freq.as_slice(), device)?;
        let angles = Tensor::arange(0, max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?
            .matmul(&inv_freq.reshape((1, inv_freq.elem_count()))?)?;
        Ok(Self { sin: angles.sin()?, cos: angles.cos()? })
    }

    fn apply(&self, q: &Tensor, k: &Tensor, pos: usize) -> Result<(Tensor, Tensor)> {
        let seq_len = q.dim(2)?;
        let cos = self.cos.narrow(0, pos, seq_len)?;
        let sin = self.sin.narrow(0, pos, seq_len)?;
        Ok((candle_nn::rotary_emb::rope(&q.contiguous()?, &cos, &sin)?, candle_nn::rotary_emb::rope(&k.contiguous()?, &cos, &sin)?))
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Arc<QMatMul>,
    up: Arc<QMatMul>,
    down: Arc<QMatMul>,
}

impl Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // GELU, tanh approximation (`gelu_pytorch_tanh`).
        let gate = self.gate.forward(xs)?.gelu()?;
        self.down.forward(&(gate * self.up.forward(xs)?)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    wq: Arc<QMatMul>,
    wk: Arc<QMatMul>,
    wv: Arc<QMatMul>,
    wo: Arc<QMatMul>,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attention_norm: RmsNorm,
    post_attention_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    mlp: Mlp,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Multiplier of the query-key products.
    attention_scale: f64,
    /// Keys a query may see in a sliding-window layer: those at distance `< window`.
    window: Option<usize>,
    rotary: Arc<Rotary>,
    /// Keys and values of the cached positions, `(1, n_kv_head, len, head_dim)`; a
    /// sliding-window layer keeps only the last `window - 1`, all the next query can see.
    cache: Option<(Tensor, Tensor)>,
}

impl Layer {
    fn attention(&mut self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let (b, seq_len, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize| t.reshape((b, seq_len, n, self.head_dim))?.transpose(1, 2)?.contiguous();
        let q = self.q_norm.forward(&heads(self.wq.forward(x)?, self.n_head)?)?;
        let k = self.k_norm.forward(&heads(self.wk.forward(x)?, self.n_kv_head)?)?;
        let v = heads(self.wv.forward(x)?, self.n_kv_head)?;
        let (q, k) = self.rotary.apply(&q, &k, pos)?;

        let (k, v) = match &self.cache {
            Some((kc, vc)) => (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?),
            None => (k, v),
        };
        let keys = k.dim(2)?;
        // Absolute position of the first key.
        let first_key = pos + seq_len - keys;
        let keep = match self.window {
            Some(w) => keys.min(w.saturating_sub(1)),
            None => keys,
        };
        self.cache = Some((k.narrow(2, keys - keep, keep)?, v.narrow(2, keys - keep, keep)?));

        let k = candle_transformers::utils::repeat_kv(k, self.n_head / self.n_kv_head)?;
        let v = candle_transformers::utils::repeat_kv(v, self.n_head / self.n_kv_head)?;
        let mut scores = (q.matmul(&k.t()?)? * self.attention_scale)?;
        if let Some(mask) = self.mask(seq_len, pos, first_key, keys, x.device())? {
            scores = scores.broadcast_add(&mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, seq_len, self.n_head * self.head_dim))?;
        self.wo.forward(&out)
    }

    /// Additive mask (0 or -inf) of queries at `pos..pos + seq_len` over keys at
    /// `first_key..first_key + keys`; `None` when every key is visible to every query.
    fn mask(&self, seq_len: usize, pos: usize, first_key: usize, keys: usize, device: &Device) -> Result<Option<Tensor>> {
        let visible = |query: usize, key: usize| key <= query && self.window.is_none_or(|w| query - key < w);
        if seq_len == 1 && visible(pos, first_key) {
            // One query (a decode step) that sees the earliest key sees them all.
            return Ok(None);
        }
        let mask: Vec<f32> =
            (0..seq_len).flat_map(|i| (0..keys).map(move |j| if visible(pos + i, first_key + j) { 0. } else { f32::NEG_INFINITY })).collect();
        Ok(Some(Tensor::from_vec(mask, (1, 1, seq_len, keys), device)?))
    }
}

/// A Gemma 3 model with one sequence's KV cache; clones share the weights.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    embeddings: Embedding,
    embedding_length: usize,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Arc<QMatMul>,
    /// `cap · tanh(logits / cap)` when the file sets `final_logit_softcapping`.
    softcap: Option<f64>,
}

impl ModelWeights {
    /// Loads the model from a GGUF file (`general.architecture = "gemma3"`), with rotary
    /// tables for `max_positions` positions.
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        reader: &mut R,
        device: &Device,
        max_positions: usize,
    ) -> Result<Self> {
        let md = |key: &str| {
            ct.metadata.get(&format!("gemma3.{key}")).ok_or_else(|| candle_core::Error::Msg(format!("GGUF metadata has no gemma3.{key}")))
        };
        let n_head = md("attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("attention.head_count_kv")?.to_u32()? as usize;
        let block_count = md("block_count")?.to_u32()? as usize;
        let embedding_length = md("embedding_length")?.to_u32()? as usize;
        let head_dim = md("attention.key_length")?.to_u32()? as usize;
        let eps = md("attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let window = md("attention.sliding_window")?.to_u32()? as usize;
        // Which layers slide: a per-layer array of flags, or one in every `n` is global.
        let sliding: Vec<bool> = match md("attention.sliding_window_pattern") {
            Ok(v) => match v.to_vec() {
                Ok(flags) => flags.iter().map(|f| f.to_bool()).collect::<Result<_>>()?,
                Err(_) => pattern(v.to_u32()? as usize, block_count),
            },
            Err(_) => pattern(DEFAULT_SLIDING_WINDOW_PATTERN, block_count),
        };
        if sliding.len() != block_count {
            candle_core::bail!("gemma3.attention.sliding_window_pattern has {} flags for {block_count} layers", sliding.len());
        }
        let base = md("rope.freq_base").and_then(|v| v.to_f32()).unwrap_or(DEFAULT_ROPE_FREQUENCY);
        let base_sliding = md("rope.freq_base_swa").and_then(|v| v.to_f32()).unwrap_or(DEFAULT_ROPE_FREQUENCY);
        if let Ok(kind) = md("rope.scaling.type") {
            let kind = kind.to_string()?;
            if kind != "linear" && kind != "none" {
                candle_core::bail!("gemma3.rope.scaling.type {kind:?} is not supported (linear or none)");
            }
        }
        let factor = md("rope.scaling.factor").or_else(|_| md("rope.scale_linear")).and_then(|v| v.to_f32()).unwrap_or(1.0);
        let global_scale = if factor > 0.0 { 1.0 / factor } else { 1.0 };
        let attention_scale =
            if block_count == GEMMA3_27B_LAYERS { 1.0 / ((embedding_length / n_head) as f64).sqrt() } else { 1.0 / (head_dim as f64).sqrt() };
        let softcap = md("final_logit_softcapping").and_then(|v| v.to_f32()).ok().filter(|&c| c > 0.0).map(f64::from);

        let global_rotary = Arc::new(Rotary::new(head_dim, base, global_scale, max_positions, device)?);
        let sliding_rotary = Arc::new(Rotary::new(head_dim, base_sliding, 1.0, max_positions, device)?);
        let mut tensor = |name: &str| ct.tensor(reader, name, device);
        let embeddings = tensor("token_embd.weight")?;
        let output = match ct.tensor_infos.contains_key("output.weight") {
            true => tensor("output.weight")?,
            false => tensor("token_embd.weight")?,
        };
        let embeddings = embeddings.dequantize(device)?;
        let norm = RmsNorm::from_qtensor(tensor("output_norm.weight")?, eps)?;

        let mut layers = Vec::with_capacity(block_count);
        for i in 0..block_count {
            let mut w = |name: &str| -> Result<Arc<QMatMul>> { Ok(Arc::new(QMatMul::from_qtensor(tensor(&format!("blk.{i}.{name}.weight"))?)?)) };
            let (wq, wk, wv, wo) = (w("attn_q")?, w("attn_k")?, w("attn_v")?, w("attn_output")?);
            let mlp = Mlp { gate: w("ffn_gate")?, up: w("ffn_up")?, down: w("ffn_down")? };
            let mut norm = |name: &str| RmsNorm::from_qtensor(tensor(&format!("blk.{i}.{name}.weight"))?, eps);
            let sliding = sliding[i];
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                q_norm: norm("attn_q_norm")?,
                k_norm: norm("attn_k_norm")?,
                attention_norm: norm("attn_norm")?,
                post_attention_norm: norm("post_attention_norm")?,
                ffn_norm: norm("ffn_norm")?,
                post_ffn_norm: norm("post_ffw_norm")?,
                mlp,
                n_head,
                n_kv_head,
                head_dim,
                attention_scale,
                window: sliding.then_some(window),
                rotary: if sliding { sliding_rotary.clone() } else { global_rotary.clone() },
                cache: None,
            });
        }
        Ok(Self {
            embeddings: Embedding::new(embeddings, embedding_length),
            embedding_length,
            layers,
            norm,
            output: Arc::new(QMatMul::from_qtensor(output)?),
            softcap,
        })
    }

    /// Runs `x` (`(1, seq_len)` token ids) at positions `pos..`, appending to the cache;
    /// returns the logits of the last position, `(1, vocab)`.
    pub fn forward(&mut self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let seq_len = x.dim(1)?;
        let mut h = (self.embeddings.forward(x)? * (self.embedding_length as f64).sqrt())?;
        for layer in self.layers.iter_mut() {
            let a = layer.attention(&layer.attention_norm.forward(&h)?, pos)?;
            let h1 = (layer.post_attention_norm.forward(&a)? + &h)?;
            let f = layer.mlp.forward(&layer.ffn_norm.forward(&h1)?)?;
            h = (layer.post_ffn_norm.forward(&f)? + h1)?;
        }
        let last = h.i((.., seq_len - 1, ..))?;
        let logits = self.output.forward(&self.norm.forward(&last)?)?;
        match self.softcap {
            Some(cap) => (logits / cap)?.tanh()? * cap,
            None => Ok(logits),
        }
    }
}

/// llama.cpp's `set_swa_pattern(n)`: in every run of `n` layers the last is global.
fn pattern(n: usize, layers: usize) -> Vec<bool> {
    (0..layers).map(|i| n == 0 || i % n < n - 1).collect()
}
