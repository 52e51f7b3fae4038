//! A BERT encoder over packed token sequences: the texts of a batch laid end to end as one
//! `[tokens, hidden]` matrix with no padding, as text-embeddings-inference runs BERT.
//!
//! Why not candle-transformers' `BertModel`: it takes a padded `[batch, length]` batch, so
//! every short text pays for the longest one, and its linear layers on 3-D input run one
//! small matrix product per text. Here every linear layer is one matrix product over all the
//! batch's tokens, and attention runs per text over exactly its own tokens (so no mask is
//! needed). GELU runs as one vectorisable pass with a rational approximation of erf
//! (candle's per-element erf took a fifth of the encoder's time). Same weights and tensor names as `BertModel` (`embeddings.*`,
//! `encoder.layer.N.*`); absolute positions; GELU (erf); proved against a numpy BERT by
//! `tests/text_numeric.rs`.

use candle_core::Tensor;
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, Module, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

struct Layer {
    /// Query, key and value weights stacked: one product gives all three.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The loaded encoder.
pub struct PackedBert {
    word: Embedding,
    position: Embedding,
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
}

impl PackedBert {
    pub fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<PackedBert> {
        if config.hidden_act != HiddenAct::Gelu {
            candle_core::bail!("hidden_act {:?} is not supported (gelu only)", config.hidden_act);
        }
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention.self");
                let weights = ["query", "key", "value"].map(|n| a.get((h, h), &format!("{n}.weight")));
                let biases = ["query", "key", "value"].map(|n| a.get(h, &format!("{n}.bias")));
                let qkv = Linear::new(
                    Tensor::cat(&weights.into_iter().collect::<Result<Vec<_>, _>>()?, 0)?,
                    Some(Tensor::cat(&biases.into_iter().collect::<Result<Vec<_>, _>>()?, 0)?),
                );
                Ok(Layer {
                    qkv,
                    attention_out: linear(h, h, l.pp("attention.output.dense"))?,
                    attention_norm: layer_norm(h, eps, l.pp("attention.output.LayerNorm"))?,
                    intermediate: linear(h, config.intermediate_size, l.pp("intermediate.dense"))?,
                    output: linear(config.intermediate_size, h, l.pp("output.dense"))?,
                    output_norm: layer_norm(h, eps, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(PackedBert {
            word: embedding(config.vocab_size, h, emb.pp("word_embeddings"))?,
            position: embedding(config.max_position_embeddings, h, emb.pp("position_embeddings"))?,
            token_type: emb.get((config.type_vocab_size, h), "token_type_embeddings.weight")?.narrow(0, 0, 1)?,
            embedding_norm: layer_norm(h, eps, emb.pp("LayerNorm"))?,
            layers,
            heads: config.num_attention_heads,
            hidden: h,
        })
    }

    /// Mean-pooled hidden states of each sequence (`[sequences, hidden]`, not normalised).
    pub fn mean_pooled(&self, sequences: &[Vec<u32>], device: &candle_core::Device) -> candle_core::Result<Tensor> {
        let ids: Vec<u32> = sequences.iter().flatten().copied().collect();
        let positions: Vec<u32> = sequences.iter().flat_map(|s| 0..s.len() as u32).collect();
        let mut spans = Vec::with_capacity(sequences.len());
        let mut offset = 0;
        for s in sequences {
            spans.push((offset, s.len()));
            offset += s.len();
        }
        let ids = Tensor::new(ids.as_slice(), device)?;
        let positions = Tensor::new(positions.as_slice(), device)?;
        let x = (self.word.forward(&ids)? + self.position.forward(&positions)?)?.broadcast_add(&self.token_type)?;
        let mut x = self.embedding_norm.forward(&x)?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &spans)?;
        }
        let pooled: Vec<Tensor> = spans.iter().map(|&(o, n)| x.narrow(0, o, n)?.mean(0)).collect::<candle_core::Result<_>>()?;
        Tensor::stack(&pooled, 0)
    }

    fn layer(&self, l: &Layer, x: &Tensor, spans: &[(usize, usize)]) -> candle_core::Result<Tensor> {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let scale = 1.0 / (d as f64).sqrt();
        let qkv = l.qkv.forward(x)?;
        // Each text's attention is a handful of small operations that one thread runs
        // best; the texts are spread over the threads.
        use rayon::prelude::*;
        let contexts = spans
            .par_iter()
            .map(|&(offset, n)| {
                let s = qkv.narrow(0, offset, n)?;
                let split = |i: usize| s.narrow(1, i * h, h)?.reshape((n, heads, d))?.transpose(0, 1)?.contiguous();
                let (q, k, v) = (split(0)?, split(1)?, split(2)?);
                let scores = (q.matmul(&k.t()?)? * scale)?;
                let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                probs.matmul(&v)?.transpose(0, 1)?.reshape((n, h))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let context = Tensor::cat(&contexts, 0)?;
        let attended = l.attention_norm.forward(&(l.attention_out.forward(&context)? + x)?)?;
        let inner = gelu_erf(&l.intermediate.forward(&attended)?)?;
        l.output_norm.forward(&(l.output.forward(&inner)? + attended)?)
    }
}

/// `erf` for f32 by the rational approximation Eigen and XLA use (odd polynomial over even
/// polynomial on [-4, 4], where f32 erf reaches ±1): only multiplies, adds and one divide,
/// so the loop over a buffer vectorises. Within a few ULPs of the exact value.
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// GELU with the exact (erf) form, `x / 2 * (1 + erf(x / sqrt 2))`, over a whole tensor in
/// parallel chunks.
fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let shape = x.shape().clone();
    let mut values = x.flatten_all()?.to_vec1::<f32>()?;
    values.par_chunks_mut(16 * 1024).for_each(|chunk| {
        for v in chunk.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
    Tensor::from_vec(values, shape, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_candles_exact_gelu() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 400.0).collect();
        let t = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let ours: Vec<f32> = gelu_erf(&t).unwrap().to_vec1().unwrap();
        let exact: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        let worst = ours.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-6, "GELU differs from candle's exact form by up to {worst}");
    }
}
