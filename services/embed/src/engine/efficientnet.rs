//! EfficientNet-Lite0 image classifier in candle (bundled image encoder).
//!
//! Lite0 is EfficientNet-B0's block layout without squeeze-and-excitation, with ReLU6
//! instead of swish, TensorFlow "SAME" padding (asymmetric for stride 2) and BatchNorm
//! eps 1e-3; candle's own `efficientnet` module (torchvision B0: SE + SiLU) does not fit,
//! hence this module. Tensor names follow the checkpoint: `_conv_stem`, `_bn0`,
//! `_blocks.N.{_expand_conv,_depthwise_conv,_project_conv,_bn0,_bn1,_bn2}`,
//! `_conv_head`, `_bn1`, `_fc`.
//!
//! Inference-only speed-ups, each checked by the logits parity test: every BatchNorm is
//! folded into the convolution before it (weights scaled, one bias add); 1x1 convolutions
//! run as one gemm call per image over all pixels (no im2col copy), writing the bias and
//! the residual into the output first so the product adds to them; depthwise convolutions
//! run in our own loop ([`depthwise_conv`]) over zero-padded planes with bias and ReLU6
//! fused: candle 0.11 runs a grouped convolution as one small convolution per channel,
//! about 6x slower here. A batch of two or more images is split into sub-batches that go
//! through the network side by side, one thread each ([`Threads::One`]); a lone image
//! spreads each layer over every thread instead ([`Threads::All`]).

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;

use super::EngineError;

/// Input side in pixels.
pub const IMAGE_SIZE: usize = 224;
/// Most images that go through the layers together (cache: one image's widest activation
/// is 4.8 MB). Measured on 2 cores, batches of 16, sub-batches side by side: 1, 2 or 4
/// images give 90-96 images/s, 8 give 49-53.
const SUB_BATCH: usize = 2;
const BN_EPS: f64 = 1e-3;

/// (repeats, kernel, stride, expand ratio, input channels, output channels) per stage.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// A convolution with its BatchNorm folded in (inference only): weights scaled per output
/// channel, and the bias the normalisation leaves.
struct ConvBn {
    /// Scaled weights on the host, row-major: `[out, in, k, k]` (dense) or
    /// `[channels, 1, k, k]` (depthwise).
    weight: Vec<f32>,
    /// `[out]`.
    bias: Vec<f32>,
    /// Kernel side.
    k: usize,
}

impl ConvBn {
    fn load(weight: Tensor, vb: VarBuilder, c: usize) -> Result<Self, candle_core::Error> {
        let w = vb.get(c, "weight")?;
        let b = vb.get(c, "bias")?;
        let mean = vb.get(c, "running_mean")?;
        let var = vb.get(c, "running_var")?;
        let scale = (w / (var + BN_EPS)?.sqrt()?)?;
        let shift = (b - (&mean * &scale)?)?;
        let k = weight.dim(3)?;
        let weight = weight.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?.flatten_all()?.to_vec1()?;
        Ok(Self { weight, bias: shift.to_vec1()?, k })
    }

    /// 1x1 convolution: `[n, in, h, w]` -> `[n, out, h, w]` as `W @ X` per image, plus the
    /// bias when `with_bias` and `residual` when given (both written into the output
    /// before the product, which then adds to them: no extra pass).
    fn pointwise(&self, x: &Tensor, with_bias: bool, residual: Option<&Tensor>, threads: Threads) -> Result<Tensor, candle_core::Error> {
        let (n, c, h, w) = x.dims4()?;
        let (out, hw) = (self.bias.len(), h * w);
        let zeros = vec![0f32; out];
        let bias = if with_bias { &self.bias } else { &zeros };
        // Output rows (one per image and channel) start as the bias, plus the residual.
        // (Row by row into a buffer of the final size: one collect over nested iterators
        // has no size hint and grew the buffer step by step, 1.5x slower overall.)
        let mut dst = Vec::with_capacity(n * out * hw);
        match residual {
            Some(r) => with_host_slice(r, |r| {
                for (row, &b) in r.chunks(hw).zip(bias.iter().cycle()) {
                    dst.extend(row.iter().map(|v| v + b));
                }
            })?,
            None => {
                for _ in 0..n {
                    for &b in bias {
                        dst.extend(std::iter::repeat_n(b, hw));
                    }
                }
            }
        }
        with_host_slice(x, |input| {
            for (img, out_img) in dst.chunks_mut(out * hw).enumerate() {
                matmul_add(out_img, &self.weight, &input[img * c * hw..(img + 1) * c * hw], (out, c, hw), threads);
            }
        })?;
        Tensor::from_vec(dst, (n, out, h, w), x.device())
    }
}

/// How many threads one operation may use: all of rayon's (one batch through the network)
/// or one (several sub-batches through the network at once, one per core).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Threads {
    All,
    One,
}

/// `dst[m, n] += a[m, k] @ b[k, n]`, row-major, with gemm (the kernel candle uses).
fn matmul_add(dst: &mut [f32], a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), threads: Threads) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n, "matmul shapes");
    let parallelism = match (threads, rayon::current_num_threads()) {
        (Threads::All, t) if t > 1 => gemm::Parallelism::Rayon(t),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: the three slices hold exactly the row-major matrices the strides describe
    // (checked above), and `dst` is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Runs `f` on the tensor's f32 values: in place for a contiguous CPU tensor (the usual
/// case), else on a copy.
fn with_host_slice<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, candle_core::Error> {
    let (storage, layout) = x.storage_and_layout();
    if let (candle_core::Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
        return Ok(f(&cpu.as_slice::<f32>()?[start..end]));
    }
    drop(storage);
    Ok(f(&x.flatten_all()?.to_vec1::<f32>()?))
}

/// TensorFlow SAME padding for one spatial dimension: (before, after).
fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// A dense convolution with SAME padding and no bias, as im2col (built here, zeros for the
/// padding) and one matrix product per image: the stem (3 input channels), where candle's
/// conv2d spent a tenth of the network's time.
fn conv_same(x: &Tensor, conv: &ConvBn, stride: usize, threads: Threads) -> Result<Tensor, candle_core::Error> {
    let (n, c, h, wd) = x.dims4()?;
    let (out, k) = (conv.bias.len(), conv.k);
    let (pt, _) = same_padding(h, k, stride);
    let (pl, _) = same_padding(wd, k, stride);
    let (oh, ow) = (h.div_ceil(stride), wd.div_ceil(stride));
    let rows = c * k * k;
    if conv.weight.len() != out * rows {
        candle_core::bail!("convolution weights for {} inputs, given {c}", conv.weight.len() / (out * k * k));
    }
    let mut cols = vec![0f32; n * rows * oh * ow];
    with_host_slice(x, |input| {
        for (img, img_cols) in cols.chunks_mut(rows * oh * ow).enumerate() {
            for ch in 0..c {
                let plane = &input[(img * c + ch) * h * wd..(img * c + ch + 1) * h * wd];
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &mut img_cols[((ch * k + ky) * k + kx) * oh * ow..][..oh * ow];
                        for oy in 0..oh {
                            let Some(iy) = (oy * stride + ky).checked_sub(pt).filter(|&iy| iy < h) else { continue };
                            for ox in 0..ow {
                                if let Some(ix) = (ox * stride + kx).checked_sub(pl).filter(|&ix| ix < wd) {
                                    row[oy * ow + ox] = plane[iy * wd + ix];
                                }
                            }
                        }
                    }
                }
            }
        }
    })?;
    let mut dst = vec![0f32; n * out * oh * ow];
    for (img_dst, img_cols) in dst.chunks_mut(out * oh * ow).zip(cols.chunks(rows * oh * ow)) {
        matmul_add(img_dst, &conv.weight, img_cols, (out, rows, oh * ow), threads);
    }
    Tensor::from_vec(dst, (n, out, oh, ow), x.device())
}

/// How a batch of `n` images is split, as (first image, count): at most `max` images per
/// part (cache), at least one part per thread while there are images for them, and parts
/// of even size so no thread is left with the stragglers.
fn sub_batches(n: usize, max: usize, threads: usize) -> Vec<(usize, usize)> {
    let parts = n.div_ceil(max.max(1)).max(threads.min(n));
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = n / parts + usize::from(i < n % parts);
            start += len;
            (start - len, len)
        })
        .collect()
}

/// Depthwise convolution with SAME padding over NCHW data, plus the per-channel bias and,
/// when `relu6`, the activation: one zero-padded copy of each
/// plane (split into stride phases), then a branch-free loop, planes in parallel. With `input_bias`, the input is
/// first mapped by `relu6(x + input_bias[channel])` as it is copied: the previous 1x1
/// convolution's bias and activation, fused here to save two passes over the largest
/// activations of the network.
fn depthwise_conv(
    x: &Tensor,
    conv: &ConvBn,
    input_bias: Option<&[f32]>,
    relu6: bool,
    stride: usize,
    threads: Threads,
) -> Result<Tensor, candle_core::Error> {
    use rayon::prelude::*;
    let (n, c, h, wd) = x.dims4()?;
    let (k, kernel, bias) = (conv.k, conv.weight.as_slice(), conv.bias.as_slice());
    if kernel.len() != c * k * k || bias.len() != c {
        candle_core::bail!("depthwise weights for {} channels, given {c}", bias.len());
    }
    let (pt, pb) = same_padding(h, k, stride);
    let (pl, pr) = same_padding(wd, k, stride);
    let (ph, pw) = (h + pt + pb, wd + pl + pr);
    let (oh, ow) = (h.div_ceil(stride), wd.div_ceil(stride));
    let mut out = vec![0f32; n * c * oh * ow];
    // Each padded row is stored as `stride` phases (columns p, p + stride, ...), so every
    // kernel tap reads a contiguous run and the inner loop vectorises for stride 2 too.
    let pwp = pw.div_ceil(stride);
    // Where kernel column kx starts within a padded row (its phase, then its place there).
    let columns: Vec<usize> = (0..k).map(|kx| (kx % stride) * pwp + kx / stride).collect();
    // Phase p holds padded columns p, p + stride, ...: input column x lands in phase
    // (pl + x) % stride at (pl + x) / stride; `firsts[p]` is the first x of phase p.
    let firsts: Vec<usize> = (0..stride).map(|p| (p + stride - pl % stride) % stride).collect();
    // Slack after the last row: a chunk of `TAP_CHUNK` columns may read past a row's end
    // (into values whose outputs are dropped).
    let scratch = || (vec![0f32; ph * stride * pwp + TAP_CHUNK], vec![0f32; wd]);
    let per_plane = |input: &[f32], (phased, mapped): &mut (Vec<f32>, Vec<f32>), (plane, out_plane): (usize, &mut [f32])| {
        let ch = plane % c;
        let inp = &input[plane * h * wd..(plane + 1) * h * wd];
        for y in 0..h {
            let row = &mut phased[(y + pt) * stride * pwp..(y + pt + 1) * stride * pwp];
            let src = &inp[y * wd..(y + 1) * wd];
            // The input map in one vectorized pass, then the (strided) scatter.
            let src = match input_bias {
                Some(b) => {
                    let b = b[ch];
                    mapped.iter_mut().zip(src).for_each(|(m, &v)| *m = (v + b).clamp(0.0, 6.0));
                    &mapped[..]
                }
                None => src,
            };
            if stride == 1 {
                row[pl..pl + wd].copy_from_slice(src);
                continue;
            }
            for (p, &first) in firsts.iter().enumerate() {
                let dst = &mut row[p * pwp + (pl + first) / stride..];
                for (d, &v) in dst.iter_mut().zip(src.iter().skip(first).step_by(stride)) {
                    *d = v;
                }
            }
        }
        let ker = &kernel[ch * k * k..(ch + 1) * k * k];
        let b = bias[ch];
        let taps = Taps { phased: phased.as_slice(), row_len: stride * pwp, columns: &columns, k, stride, ker, bias: b, relu6 };
        for oy in 0..oh {
            let row_out = &mut out_plane[oy * ow..(oy + 1) * ow];
            for c0 in (0..ow).step_by(TAP_CHUNK) {
                let dst = &mut row_out[c0..ow.min(c0 + TAP_CHUNK)];
                match dst.len() {
                    0..=8 => taps.sum::<8>(oy, c0, dst),
                    9..=16 => taps.sum::<16>(oy, c0, dst),
                    17..=32 => taps.sum::<32>(oy, c0, dst),
                    _ => taps.sum::<TAP_CHUNK>(oy, c0, dst),
                }
            }
        }
    };
    // The input is read in place: the largest activations of the network, not copied again.
    with_host_slice(x, |input| match threads {
        Threads::All => out.par_chunks_mut(oh * ow).enumerate().for_each_init(scratch, |s, plane| per_plane(input, s, plane)),
        Threads::One => {
            let mut s = scratch();
            out.chunks_mut(oh * ow).enumerate().for_each(|plane| per_plane(input, &mut s, plane));
        }
    })?;
    Tensor::from_vec(out, (n, c, oh, ow), x.device())
}

/// Output columns per register-held chunk of [`Taps::sum`] (eight AVX registers).
const TAP_CHUNK: usize = 64;

/// One plane's depthwise taps over its zero-padded, stride-phased copy.
struct Taps<'a> {
    phased: &'a [f32],
    /// Floats per padded input row (all its phases).
    row_len: usize,
    /// Start of each kernel column's run within a padded row.
    columns: &'a [usize],
    k: usize,
    stride: usize,
    ker: &'a [f32],
    bias: f32,
    relu6: bool,
}

impl Taps<'_> {
    /// Output row `oy`, columns `c0..c0 + dst.len()`: the bias plus every tap, summed in `W`
    /// accumulators that stay in registers across the taps (`W` a constant, so the loop
    /// unrolls into whole AVX registers). Summing tap by tap over the whole row instead
    /// re-read and re-wrote it per tap, and narrow rows (7 to 28 columns in the network's
    /// later stages) ran mostly in the loop's scalar and 4-wide remainders. The additions
    /// happen in the same order, so the result is the same to the bit.
    #[inline(always)]
    fn sum<const W: usize>(&self, oy: usize, c0: usize, dst: &mut [f32]) {
        let mut acc = [self.bias; W];
        for ky in 0..self.k {
            let row = &self.phased[(oy * self.stride + ky) * self.row_len..];
            for (kx, &column) in self.columns.iter().enumerate() {
                let kv = self.ker[ky * self.k + kx];
                let start = column + c0;
                let src: &[f32; W] = row[start..start + W].try_into().expect("W floats");
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += v * kv;
                }
            }
        }
        if self.relu6 {
            acc.iter_mut().for_each(|a| *a = a.clamp(0.0, 6.0));
        }
        dst.copy_from_slice(&acc[..dst.len()]);
    }
}

struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    stride: usize,
    residual: bool,
}

impl Block {
    /// `pending_bias`: the previous layer's bias and ReLU6, not yet applied to `x` (only
    /// for a block without expansion and without residual, i.e. the first one).
    fn forward(&self, x: &Tensor, pending_bias: Option<&[f32]>, threads: Threads) -> Result<Tensor, candle_core::Error> {
        // The expansion's bias and ReLU6 are applied inside the depthwise loop.
        let (h, input_bias) = match &self.expand {
            Some(expand) => (expand.pointwise(x, false, None, threads)?, Some(expand.bias.as_slice())),
            None => (x.clone(), pending_bias),
        };
        let h = depthwise_conv(&h, &self.depthwise, input_bias, true, self.stride, threads)?;
        self.project.pointwise(&h, true, self.residual.then_some(x), threads)
    }
}

/// What the classifier says about a batch of images.
pub struct Classified {
    /// Class probabilities, [batch, 1000].
    pub probs: Vec<Vec<f32>>,
    /// Global-average-pooled features before the classifier, [batch, 1280].
    pub pooled: Vec<Vec<f32>>,
}

/// The loaded network.
pub struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    fc: candle_nn::Linear,
    device: Device,
}

impl EfficientNetLite0 {
    pub fn load(vb: VarBuilder) -> Result<Self, EngineError> {
        let load = || -> Result<Self, candle_core::Error> {
            let stem = ConvBn::load(vb.get((32, 3, 3, 3), "_conv_stem.weight")?, vb.pp("_bn0"), 32)?;
            let mut blocks = Vec::new();
            for &(repeats, k, stride, expand, cin, cout) in &STAGES {
                for r in 0..repeats {
                    let vbb = vb.pp(format!("_blocks.{}", blocks.len()));
                    let (cin, stride) = if r == 0 { (cin, stride) } else { (cout, 1) };
                    let mid = cin * expand;
                    let expand =
                        if expand != 1 { Some(ConvBn::load(vbb.get((mid, cin, 1, 1), "_expand_conv.weight")?, vbb.pp("_bn0"), mid)?) } else { None };
                    let depthwise = ConvBn::load(vbb.get((mid, 1, k, k), "_depthwise_conv.weight")?, vbb.pp("_bn1"), mid)?;
                    blocks.push(Block {
                        expand,
                        depthwise,
                        project: ConvBn::load(vbb.get((cout, mid, 1, 1), "_project_conv.weight")?, vbb.pp("_bn2"), cout)?,
                        stride,
                        residual: stride == 1 && cin == cout,
                    });
                }
            }
            let head = ConvBn::load(vb.get((1280, 320, 1, 1), "_conv_head.weight")?, vb.pp("_bn1"), 1280)?;
            let fc = candle_nn::linear(1280, 1000, vb.pp("_fc"))?;
            if blocks.first().is_none_or(|b| b.expand.is_some() || b.residual) {
                candle_core::bail!("the first block must have neither expansion nor residual (the stem's activation is fused into it)");
            }
            Ok(Self { stem, blocks, head, fc, device: vb.device().clone() })
        };
        load().map_err(|e| EngineError::Load(format!("efficientnet-lite0: {e}")))
    }

    /// Loads the network from a safetensors file (memory-mapped) onto `device`.
    pub fn load_file(weights: &std::path::Path, device: &Device) -> Result<Self, EngineError> {
        // SAFETY: model directories are replaced atomically by `mmc models fetch`, never
        // edited in place, so the mapped file does not change under us.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device) }.map_err(|e| EngineError::Load(e.to_string()))?;
        Self::load(vb)
    }

    /// Stem, blocks, head and global average pooling: `[n, 3, 224, 224]` -> `[n, 1280]`.
    fn pooled_features(&self, x: &Tensor, threads: Threads) -> Result<Tensor, candle_core::Error> {
        // The stem's bias and ReLU6 are applied by the first block's depthwise loop.
        let mut h = conv_same(x, &self.stem, 2, threads)?;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(&h, (i == 0).then_some(self.stem.bias.as_slice()), threads)?;
        }
        let h = self.head.pointwise(&h, true, None, threads)?;
        // ReLU6 and the mean over the pixels, in one pass.
        let (n, c, hh, ww) = h.dims4()?;
        let pooled = with_host_slice(&h, |v| {
            v.chunks(hh * ww).map(|plane| plane.iter().map(|x| x.clamp(0.0, 6.0)).sum::<f32>() / (hh * ww) as f32).collect::<Vec<_>>()
        })?;
        Tensor::from_vec(pooled, (n, c), x.device())
    }

    /// Classifies a batch of 224x224 RGB images (row-major HWC bytes).
    pub fn classify(&self, images: &[Vec<u8>]) -> Result<Classified, EngineError> {
        let n = images.len();
        let mut data = Vec::with_capacity(n * 3 * IMAGE_SIZE * IMAGE_SIZE);
        for img in images {
            if img.len() != 3 * IMAGE_SIZE * IMAGE_SIZE {
                return Err(EngineError::Inference(format!("expected a {IMAGE_SIZE}x{IMAGE_SIZE} RGB image")));
            }
            // HWC bytes -> CHW floats in [-1, 1].
            for c in 0..3 {
                data.extend(img.iter().skip(c).step_by(3).map(|&v| v as f32 / 127.5 - 1.0));
            }
        }
        let x = Tensor::from_vec(data, (n, 3, IMAGE_SIZE, IMAGE_SIZE), &self.device)?;
        // A batch runs through the network a few images at a time: the widest activations
        // of 16 images (77 MB) spill out of cache; those of a few mostly do not. With at
        // least two sub-batches, they go through side by side, each on one thread:
        // one image's 1x1 convolutions in the late stages (7x7 or 14x14 pixels) are too
        // small to split between threads without them mostly waiting on each other.
        let parts = sub_batches(n, SUB_BATCH, rayon::current_num_threads());
        let features = |&(start, len): &(usize, usize), threads| self.pooled_features(&x.narrow(0, start, len)?, threads);
        let pooled: Vec<Tensor> = if parts.len() > 1 {
            use rayon::prelude::*;
            parts.par_iter().map(|p| features(p, Threads::One)).collect::<Result<_, _>>()?
        } else {
            parts.iter().map(|p| features(p, Threads::All)).collect::<Result<_, _>>()?
        };
        let pooled = Tensor::cat(&pooled, 0)?;
        let logits = self.fc.forward(&pooled)?;
        let probs = candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
        Ok(Classified { probs: probs.to_vec2()?, pooled: pooled.to_vec2()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folded convolution from plain weights `[out, in, k, k]` and a bias.
    fn host_conv(weight: &Tensor, bias: &[f32]) -> ConvBn {
        ConvBn { weight: weight.flatten_all().unwrap().to_vec1().unwrap(), bias: bias.to_vec(), k: weight.dim(3).unwrap() }
    }

    #[test]
    fn im2col_convolution_matches_candles_conv2d() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11, 10), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (5, 3, 3, 3), &dev).unwrap();
        for stride in [1, 2] {
            let ours = conv_same(&x, &host_conv(&w, &[0.0; 5]), stride, Threads::All).unwrap();
            let (pt, pb) = same_padding(11, 3, stride);
            let (pl, pr) = same_padding(10, 3, stride);
            let padded = x.pad_with_zeros(2, pt, pb).unwrap().pad_with_zeros(3, pl, pr).unwrap();
            let reference = padded.conv2d(&w, 0, stride, 1, 1).unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "stride {stride}: {diff}");
        }
    }

    #[test]
    fn sub_batches_cover_the_batch_evenly() {
        assert_eq!(sub_batches(1, 4, 2), vec![(0, 1)]);
        assert_eq!(sub_batches(2, 4, 2), vec![(0, 1), (1, 1)]);
        assert_eq!(sub_batches(5, 4, 2), vec![(0, 3), (3, 2)]);
        assert_eq!(sub_batches(16, 4, 2), vec![(0, 4), (4, 4), (8, 4), (12, 4)]);
        assert_eq!(sub_batches(3, 4, 1), vec![(0, 3)]);
    }

    #[test]
    fn one_by_one_convolution_with_fused_bias_and_residual_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 6, 5, 7), &dev).unwrap();
        let residual = Tensor::randn(0f32, 1.0, (2, 4, 5, 7), &dev).unwrap();
        let weight = Tensor::randn(0f32, 1.0, (4, 6, 1, 1), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let conv = host_conv(&weight, &bias.to_vec1::<f32>().unwrap());
        let plain = x.conv2d(&weight, 0, 1, 1, 1).unwrap();
        let with_bias = plain.broadcast_add(&bias.reshape((1, 4, 1, 1)).unwrap()).unwrap();
        for threads in [Threads::All, Threads::One] {
            for (ours, reference) in [
                (conv.pointwise(&x, false, None, threads).unwrap(), plain.clone()),
                (conv.pointwise(&x, true, None, threads).unwrap(), with_bias.clone()),
                (conv.pointwise(&x, true, Some(&residual), threads).unwrap(), (&with_bias + &residual).unwrap()),
            ] {
                let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-4, "{threads:?}: {diff}");
            }
        }
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(112, 5, 2), (1, 2));
        assert_eq!(same_padding(56, 3, 1), (1, 1));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
    }

    #[test]
    fn depthwise_loop_matches_candles_grouped_convolution() {
        let dev = Device::Cpu;
        let bias = [0.5f32, -0.25, 0.0, 1.0];
        // Widths from a few columns to more than two register chunks (150 = 64 + 64 + 22),
        // 3x3 and 5x5 kernels, as in the network.
        for (h, wd, k) in [(9, 9, 3), (6, 150, 5), (5, 40, 5), (4, 17, 3)] {
            let x = Tensor::randn(0f32, 1.0, (2, 4, h, wd), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (4, 1, k, k), &dev).unwrap();
            for (stride, relu, threads) in [(1, false, Threads::All), (2, false, Threads::One), (1, true, Threads::One), (2, true, Threads::All)] {
                let ours = depthwise_conv(&x, &host_conv(&w, &bias), None, relu, stride, threads).unwrap();
                let (pt, pb) = same_padding(h, k, stride);
                let (pl, pr) = same_padding(wd, k, stride);
                let padded = x.pad_with_zeros(2, pt, pb).unwrap().pad_with_zeros(3, pl, pr).unwrap();
                let b = Tensor::new(&bias, &dev).unwrap().reshape((1, 4, 1, 1)).unwrap();
                let mut reference = padded.conv2d(&w, 0, stride, 1, 4).unwrap().broadcast_add(&b).unwrap();
                if relu {
                    reference = reference.clamp(0f32, 6f32).unwrap();
                }
                assert_eq!(ours.dims(), reference.dims());
                let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-4, "{h}x{wd}, k {k}, stride {stride}, relu6 {relu}: {diff}");
            }
        }
        let x = Tensor::randn(0f32, 1.0, (2, 4, 9, 9), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 1, 3, 3), &dev).unwrap();
        // The fused input map equals relu6(x + b) applied first.
        let b = Tensor::new(&bias, &dev).unwrap().reshape((1, 4, 1, 1)).unwrap();
        let mapped = x.broadcast_add(&b).unwrap().clamp(0f32, 6f32).unwrap();
        for stride in [1, 2] {
            let fused = depthwise_conv(&x, &host_conv(&w, &bias), Some(&bias), true, stride, Threads::All).unwrap();
            let separate = depthwise_conv(&mapped, &host_conv(&w, &bias), None, true, stride, Threads::One).unwrap();
            let diff = (fused - separate).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-6, "fused input bias and ReLU6, stride {stride}: {diff}");
        }
    }
}
