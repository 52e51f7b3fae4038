//! Our own forward pass for GGUF `llama` models on CPU, batched across sequences.
//!
//! candle's `quantized_llama` runs one sequence per forward pass and keeps its KV cache inside
//! the module, so concurrent generations cannot share a pass: with four streams in flight,
//! every quantized weight is read and unpacked four times per round. Decoding a 135M model
//! on CPU is bound by exactly that work, so interleaving gave no aggregate gain. Here one pass runs the new tokens of many sequences together (continuous batching,
//! as llama.cpp's server and vLLM do): every token of every sequence is one row of each
//! weight matmul (for Q8_0 weights, our kernel in [`super::q8_0`] prepares each weight block
//! once for several rows), and only attention is per sequence, each against its own [`KvCache`] at its
//! own position. A sequence's results do not depend on what it is batched with: its rows go
//! through the same kernels in the same order as when it runs alone.
//!
//! The arithmetic follows candle's module step by step (RMSNorm, interleaved RoPE as GGML's
//! llama uses, grouped-query attention with an f32 KV cache, SiLU-gated MLP, tied output when
//! the file has no `output.weight`): on f32 weights the logits agree with it to float
//! rounding, which the parity test in `tests/llama_batched.rs` holds us to (with 8-bit
//! activations, rounding-step flips make both differ from llama.cpp by a few tenths). Files this module does not cover
//! (mixture of experts, partial rotary dimensions) or non-CPU devices keep candle's module.

use std::sync::Arc;

use super::{fastmath::exp_fast, shared_out::SharedOut};

use candle_core::{
    quantized::{gguf_file, GgmlDType, QMatMul, QTensor},
    Device, Module, Tensor,
};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error("GGUF metadata {0} is missing or not a number")]
    Metadata(String),
    #[error("GGUF tensor {name} has {got} values, expected {expected}")]
    TensorSize { name: &'static str, got: usize, expected: usize },
    #[error("sequence is at position {cached}, but tokens for position {requested} were given")]
    Position { cached: usize, requested: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    Token { id: u32, vocab: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Shapes and constants of a llama model, from its GGUF metadata.
#[derive(Debug, Clone)]
pub struct Config {
    pub dim: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_layer: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Multiplier of positions in the rotary angles: 1/`rope.scaling.factor` for linear
    /// scaling, else 1.
    pub rope_scale: f32,
    pub vocab: usize,
}

/// One attention task: (the item's first row in the batch, its new tokens, the block of
/// them this task attends for, head, the item's cached keys, its cached values).
type AttentionTask<'a> = (usize, usize, std::ops::Range<usize>, usize, &'a [f32], &'a [f32]);
impl Config {
    /// Reads the `llama.*` keys; `None` when the file needs something this module does not
    /// do (experts, rotary dimensions other than the head size), so the caller falls back to
    /// candle's module.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Option<Config>, LlamaError> {
        let get = |k: &str| -> Result<usize, LlamaError> {
            content
                .metadata
                .get(k)
                .and_then(|v| v.to_u32().ok().map(|v| v as usize).or_else(|| v.to_u64().ok().map(|v| v as usize)))
                .ok_or_else(|| LlamaError::Metadata(k.into()))
        };
        let experts = get("llama.expert_count").unwrap_or(0);
        let dim = get("llama.embedding_length")?;
        let n_head = get("llama.attention.head_count")?;
        let head_dim = dim / n_head.max(1);
        let rope_dim = get("llama.rope.dimension_count").unwrap_or(head_dim);
        if experts > 1 || rope_dim != head_dim || head_dim % 2 != 0 {
            return Ok(None);
        }
        let f32_of = |k: &str| content.metadata.get(k).and_then(|v| v.to_f32().ok());
        Ok(Some(Config {
            dim,
            n_head,
            n_kv_head: get("llama.attention.head_count_kv")?,
            head_dim,
            n_layer: get("llama.block_count")?,
            rms_eps: f32_of("llama.attention.layer_norm_rms_epsilon")
                .ok_or_else(|| LlamaError::Metadata("llama.attention.layer_norm_rms_epsilon".into()))?,
            rope_base: f32_of("llama.rope.freq_base").unwrap_or(10000.0),
            rope_scale: match f32_of("llama.rope.scaling.factor").or_else(|| f32_of("llama.rope.scale_linear")) {
                Some(f) if f > 0.0 => 1.0 / f,
                _ => 1.0,
            },
            vocab: 0,
        }))
    }

    fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// A weight matrix (`[out, in]`).
enum Linear {
    /// Q8_0 weights, run by our multi-row kernel ([`super::q8_0`]).
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    Q8_0(super::q8_0::Weights),
    /// Any other type, through candle's quantized matmul.
    Candle(QMatMul),
    /// Matrices that share an input but could not be concatenated (not all Q8_0): run one
    /// after another, outputs side by side.
    Stack(Vec<Linear>),
}

impl Linear {
    fn new(t: QTensor) -> Result<Linear, LlamaError> {
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
        if t.dtype() == GgmlDType::Q8_0 {
            let (n, k) = t.shape().dims2()?;
            return Ok(Linear::Q8_0(super::q8_0::Weights::from_gguf(t.data()?.into_owned(), n, k)));
        }
        Ok(Linear::Candle(QMatMul::from_qtensor(t)?))
    }

    /// One matrix for several that take the same input (Q, K and V; gate and up): their
    /// rows concatenated, so the input is quantized once and the thread pool woken once.
    /// Returns it with each part's output width.
    fn fused(parts: Vec<QTensor>) -> Result<(Linear, Vec<usize>), LlamaError> {
        let widths = parts.iter().map(|t| t.shape().dims2().map(|(n, _)| n)).collect::<Result<Vec<_>, _>>()?;
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
        if parts.iter().all(|t| t.dtype() == GgmlDType::Q8_0) {
            let k = parts[0].shape().dims2()?.1;
            if parts.iter().all(|t| t.shape().dims2().map(|(_, pk)| pk == k).unwrap_or(false)) {
                let mut blocks = Vec::new();
                for t in &parts {
                    blocks.extend_from_slice(&t.data()?);
                }
                return Ok((Linear::Q8_0(super::q8_0::Weights::from_gguf(blocks, widths.iter().sum(), k)), widths));
            }
        }
        Ok((Linear::Stack(parts.into_iter().map(Linear::new).collect::<Result<_, _>>()?), widths))
    }

    /// `x · wᵀ` for `rows` rows of `x`.
    fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, LlamaError> {
        match self {
            Linear::Stack(parts) => {
                let outs = parts.iter().map(|p| p.forward(x, rows)).collect::<Result<Vec<_>, _>>()?;
                let mut joined = Vec::with_capacity(outs.iter().map(Vec::len).sum());
                for r in 0..rows {
                    for o in &outs {
                        let w = o.len() / rows;
                        joined.extend_from_slice(&o[r * w..(r + 1) * w]);
                    }
                }
                Ok(joined)
            }
            #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
            Linear::Q8_0(w) => Ok(w.matmul(x, rows)),
            Linear::Candle(w) => {
                let t = Tensor::from_slice(x, (rows, x.len() / rows), &Device::Cpu)?;
                Ok(w.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// `rows` rows of side-by-side outputs of widths `widths`, split into one buffer per part.
fn split(out: &[f32], rows: usize, widths: &[usize]) -> Vec<Vec<f32>> {
    let total: usize = widths.iter().sum();
    let mut parts: Vec<Vec<f32>> = widths.iter().map(|w| Vec::with_capacity(rows * w)).collect();
    for row in out.chunks_exact(total) {
        let mut at = 0;
        for (part, &w) in parts.iter_mut().zip(widths) {
            part.extend_from_slice(&row[at..at + w]);
            at += w;
        }
    }
    parts
}

struct Layer {
    /// Q, K and V projections, fused ([`Linear::fused`]).
    qkv: Linear,
    qkv_widths: Vec<usize>,
    wo: Linear,
    /// Gate and up projections of the MLP, fused.
    gate_up: Linear,
    gate_up_widths: Vec<usize>,
    down: Linear,
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
}

/// The weights, shared by every sequence of the model.
pub struct Weights {
    pub config: Config,
    /// Token embeddings, dequantized (`[vocab, dim]`), as candle's module keeps them.
    embeddings: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
    /// RoPE frequencies, `head_dim / 2` of them.
    theta: Vec<f32>,
}

fn vector(t: candle_core::quantized::QTensor) -> Result<Vec<f32>, LlamaError> {
    Ok(t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
}

impl Weights {
    /// Loads the tensors of `content` (whose [`Config`] is `config`) from `reader`.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        mut config: Config,
        content: &gguf_file::Content,
        reader: &mut R,
    ) -> Result<Weights, LlamaError> {
        let cpu = Device::Cpu;
        let mut tensor = |name: &str| content.tensor(reader, name, &cpu);
        let embd = tensor("token_embd.weight")?;
        config.vocab = embd.shape().dims()[0];
        let embeddings = vector(embd)?;
        let norm = vector(tensor("output_norm.weight")?)?;
        let output = match tensor("output.weight") {
            Ok(t) => t,
            Err(_) => tensor("token_embd.weight")?,
        };
        let output = Linear::new(output)?;
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let mut t = |n: &str| tensor(&format!("blk.{i}.{n}.weight"));
            let (qkv, qkv_widths) = Linear::fused(vec![t("attn_q")?, t("attn_k")?, t("attn_v")?])?;
            let (gate_up, gate_up_widths) = Linear::fused(vec![t("ffn_gate")?, t("ffn_up")?])?;
            let (wo, down) = (Linear::new(t("attn_output")?)?, Linear::new(t("ffn_down")?)?);
            layers.push(Layer {
                qkv,
                qkv_widths,
                wo,
                gate_up,
                gate_up_widths,
                down,
                attn_norm: vector(tensor(&format!("blk.{i}.attn_norm.weight"))?)?,
                ffn_norm: vector(tensor(&format!("blk.{i}.ffn_norm.weight"))?)?,
            });
        }
        // Llama 3.1 and later carry per-frequency divisors (`rope_freqs`, their "llama3"
        // RoPE scaling); linear scaling multiplies every position by 1/factor. llama.cpp
        // applies both to every position, so the angles here do too.
        let hd = config.head_dim;
        let factors = match tensor("rope_freqs.weight") {
            Ok(t) => vector(t)?,
            Err(_) => vec![1.0; hd / 2],
        };
        if factors.len() != hd / 2 {
            return Err(LlamaError::TensorSize { name: "rope_freqs.weight", got: factors.len(), expected: hd / 2 });
        }
        let theta = (0..hd).step_by(2).zip(&factors).map(|(i, f)| config.rope_scale / (config.rope_base.powf(i as f32 / hd as f32) * f)).collect();
        Ok(Weights { config, embeddings, layers, norm, output, theta })
    }
}

/// The keys and values of one sequence's past positions, per layer (`[position, kv_dim]`,
/// f32 as in candle's module). Cloning copies it (the prefix cache keeps such copies).
#[derive(Clone, Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Prepares to take tokens at position `pos`: 0 starts over (as with candle's modules);
    /// anything else must be the next position.
    pub fn start_at(&mut self, pos: usize) -> Result<(), LlamaError> {
        if pos == 0 {
            self.clear();
        }
        if pos != self.len {
            return Err(LlamaError::Position { cached: self.len, requested: pos });
        }
        Ok(())
    }

    /// Forgets every position, keeping the memory for the next sequence.
    pub fn clear(&mut self) {
        self.k.iter_mut().chain(self.v.iter_mut()).for_each(Vec::clear);
        self.len = 0;
    }
}

/// One sequence's part of a batched pass.
pub struct Item<'a> {
    pub cache: &'a mut KvCache,
    /// New tokens, at positions `cache.len()..`.
    pub tokens: &'a [u32],
    /// Whether the logits of the last token are wanted (not for a prefill chunk that is
    /// not the prompt's last: the output layer is a fifth of this model's weights).
    pub logits: bool,
}

/// New tokens per attention task (a long prefill is split so the pool's threads share it).
const ATTENTION_ROWS: usize = 32;

/// Attention work (query rows x cached values, summed over tasks) below which a layer's
/// attention runs on the calling thread instead of the pool.
const INLINE_ATTENTION_WORK: usize = 1 << 16;

fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let n = weight.len();
    for (src, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum2 = src.iter().map(|&v| v * v).sum::<f32>();
        let m = (sum2 / n as f32 + eps).sqrt();
        for ((d, s), a) in dst.iter_mut().zip(src).zip(weight) {
            *d = *s / m * *a;
        }
    }
    out
}

/// Interleaved rotary embedding (GGML's "normal" mode: pairs `2i, 2i + 1`) of one head.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/// A dot product the compiler vectorizes (eight independent sums).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Runs the new tokens of every item in one pass, appending to each item's KV cache, and
/// returns the last token's logits for the items that asked for them.
pub fn forward(w: &Weights, items: &mut [Item<'_>]) -> Result<Vec<Option<Vec<f32>>>, LlamaError> {
    let c = &w.config;
    let (dim, hd, kv_dim) = (c.dim, c.head_dim, c.kv_dim());
    let q_dim = c.n_head * hd;
    let half = hd / 2;
    // Row layout: the items' tokens one after another.
    let mut starts = Vec::with_capacity(items.len());
    let mut rows = 0;
    for item in items.iter_mut() {
        if item.cache.k.len() != c.n_layer {
            item.cache.k.resize_with(c.n_layer, Vec::new);
            item.cache.v.resize_with(c.n_layer, Vec::new);
        }
        starts.push(rows);
        rows += item.tokens.len();
    }
    if rows == 0 {
        return Ok(items.iter().map(|_| None).collect());
    }
    let mut x = Vec::with_capacity(rows * dim);
    let (mut cos, mut sin) = (Vec::with_capacity(rows * half), Vec::with_capacity(rows * half));
    for item in items.iter() {
        for (j, &id) in item.tokens.iter().enumerate() {
            let id = id as usize;
            let row = w.embeddings.get(id * dim..(id + 1) * dim).ok_or(LlamaError::Token { id: id as u32, vocab: c.vocab })?;
            x.extend_from_slice(row);
            let pos = (item.cache.len + j) as f32;
            for &t in &w.theta {
                let a = pos * t;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }

    let scale = (hd as f32).sqrt();
    let group = c.n_head / c.n_kv_head.max(1);
    for (l, layer) in w.layers.iter().enumerate() {
        let h = rms_norm(&x, &layer.attn_norm, c.rms_eps);
        let mut qkv = split(&layer.qkv.forward(&h, rows)?, rows, &layer.qkv_widths).into_iter();
        let (mut q, mut k, v) = (qkv.next().unwrap_or_default(), qkv.next().unwrap_or_default(), qkv.next().unwrap_or_default());
        for r in 0..rows {
            let (cs, sn) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
            q[r * q_dim..(r + 1) * q_dim].chunks_exact_mut(hd).for_each(|head| rope(head, cs, sn));
            k[r * kv_dim..(r + 1) * kv_dim].chunks_exact_mut(hd).for_each(|head| rope(head, cs, sn));
        }
        for (item, &s) in items.iter_mut().zip(&starts) {
            let n = item.tokens.len();
            item.cache.k[l].extend_from_slice(&k[s * kv_dim..(s + n) * kv_dim]);
            item.cache.v[l].extend_from_slice(&v[s * kv_dim..(s + n) * kv_dim]);
        }

        // Attention: one task per (item, head, block of up to ATTENTION_ROWS new tokens),
        // each against that item's cache; blocks keep a long prefill's work spread evenly
        // over the pool.
        let mut att = vec![0f32; rows * q_dim];
        let att_out = SharedOut::new(&mut att);
        let tasks: Vec<AttentionTask<'_>> = items
            .iter()
            .zip(&starts)
            .flat_map(|(item, &s)| {
                let (ks, vs) = (item.cache.k[l].as_slice(), item.cache.v[l].as_slice());
                let n = item.tokens.len();
                (0..c.n_head).flat_map(move |head| (0..n).step_by(ATTENTION_ROWS).map(move |j| (s, n, j..n.min(j + ATTENTION_ROWS), head, ks, vs)))
            })
            .collect();
        let q = &q;
        let attend = |range: std::ops::Range<usize>| {
            let mut scores = Vec::new();
            for (s, n, js, head, ks, vs) in tasks[range].iter().cloned() {
                let g = head / group;
                let past = ks.len() / kv_dim - n;
                for j in js {
                    let row = s + j;
                    let qh = &q[row * q_dim + head * hd..row * q_dim + (head + 1) * hd];
                    let visible = past + j + 1;
                    scores.clear();
                    scores.extend((0..visible).map(|t| dot(qh, &ks[t * kv_dim + g * hd..t * kv_dim + (g + 1) * hd]) / scale));
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    scores.iter_mut().for_each(|p| *p = exp_fast(*p - max));
                    let sum: f32 = scores.iter().sum();
                    // SAFETY: each (row, head) slice of `att` is written by exactly one task,
                    // and `att` outlives the pool call.
                    let out = unsafe { att_out.slice(row * q_dim + head * hd, hd) };
                    for (t, p) in scores.iter().enumerate() {
                        let p = p / sum;
                        let vh = &vs[t * kv_dim + g * hd..t * kv_dim + (g + 1) * hd];
                        for (o, &vv) in out.iter_mut().zip(vh) {
                            *o += p * vv;
                        }
                    }
                }
            }
        };
        // Waking the pool costs more than a few short decode steps' attention.
        let work: usize = tasks.iter().map(|(_, _, js, _, ks, _)| js.len() * ks.len()).sum();
        if work < INLINE_ATTENTION_WORK {
            attend(0..tasks.len());
        } else {
            candle_core::utils::barrier_pool().execute_chunked(tasks.len(), attend);
        }
        let o = layer.wo.forward(&att, rows)?;
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);

        let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps);
        let mut gate_up = split(&layer.gate_up.forward(&h, rows)?, rows, &layer.gate_up_widths).into_iter();
        let (mut g, u) = (gate_up.next().unwrap_or_default(), gate_up.next().unwrap_or_default());
        g.iter_mut().zip(&u).for_each(|(a, b)| *a = *a / (1.0 + (-*a).exp()) * b);
        let d = layer.down.forward(&g, rows)?;
        x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
    }
    for item in items.iter_mut() {
        item.cache.len += item.tokens.len();
    }

    // The output layer, for the last row of each item that wants logits.
    let wanted: Vec<usize> =
        items.iter().zip(&starts).filter(|(item, _)| item.logits && !item.tokens.is_empty()).map(|(item, &s)| s + item.tokens.len() - 1).collect();
    let logits = if wanted.is_empty() {
        Vec::new()
    } else {
        let last: Vec<f32> = wanted.iter().flat_map(|&r| x[r * dim..(r + 1) * dim].iter().copied()).collect();
        let h = rms_norm(&last, &w.norm, c.rms_eps);
        w.output.forward(&h, wanted.len())?
    };
    let n_out = if wanted.is_empty() { 0 } else { logits.len() / wanted.len() };
    let mut rows_out = logits.chunks_exact(n_out.max(1));
    let mut out = Vec::with_capacity(items.len());
    let mut taken = 0;
    for item in items.iter() {
        if item.logits && !item.tokens.is_empty() {
            out.push(rows_out.next().map(<[f32]>::to_vec));
            taken += 1;
        } else {
            out.push(None);
        }
    }
    debug_assert_eq!(taken, wanted.len());
    Ok(out)
}

/// One sequence of a [`Weights`] model: the shared weights and its own KV cache.
#[derive(Clone)]
pub struct Sequence {
    pub weights: Arc<Weights>,
    pub cache: KvCache,
}

impl Sequence {
    /// Runs `tokens` at positions `pos..`; `pos` must be the cache's length (0 restarts the
    /// sequence, as with candle's modules). Returns the last token's logits.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, LlamaError> {
        self.cache.start_at(pos)?;
        let weights = self.weights.clone();
        let mut items = [Item { cache: &mut self.cache, tokens, logits: true }];
        let mut out = forward(&weights, &mut items)?;
        Ok(out.pop().flatten().unwrap_or_default())
    }
}
