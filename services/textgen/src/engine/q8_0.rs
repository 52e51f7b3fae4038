//! A Q8_0 matmul for several activation rows at once (x86-64 with AVX2, FMA and F16C).
//!
//! candle's CPU matmul for Q8_0 weights computes every (row, column) dot product on its own:
//! each weight block is re-read and re-processed (sign, absolute value, f16 scale) for every
//! activation row, so a batch of four sequences costs four times one, and batched decode
//! gains nothing. Here each weight block is loaded and prepared once and then dotted with up
//! to [`ROWS`] activation rows held in L1, which makes extra rows much cheaper than the first.
//!
//! Two kernels, chosen once per process from the CPU ([`Weights`] keeps the matching layout):
//! - **AVX2**, on GGUF's own block layout: per (row, column) it is candle's AVX2
//!   `vec_dot_q8_0_q8_0` instruction for instruction (activations quantized to Q8_0 as candle
//!   does, the same integer products, the same f32 scale product, fused multiply-adds in the
//!   same order, the same horizontal sum), so results are bit-identical to candle's.
//! - **AVX-512 VNNI**, on weights repacked at load ([`Packed`]): two blocks per `dpbusd`, no
//!   per-row sign work, one pointer per activation row. 16-lane sums, so results differ from
//!   candle's by float rounding. A 3072x576 matmul takes about 58 us for one row and 117 us
//!   for four, against 72 and 189 us with the GGUF layout (`kernel_time` below).
//!
//! In both, a row's results do not depend on how many rows share a call;
//! `tests/llama_batched.rs` checks that, and the unit tests below check both against candle.

use std::arch::x86_64::*;

/// Bytes of one Q8_0 block: an f16 scale and 32 signed 8-bit values.
pub const BLOCK_BYTES: usize = 34;
/// Values per block.
pub const BLOCK: usize = 32;
/// Activation rows dotted with each weight block in one pass (four accumulators, plus the
/// weight and temporaries, fit the sixteen AVX2 registers).
const ROWS: usize = 4;
/// Weight rows (output columns) per work item of the thread pool.
const COLUMNS_PER_ITEM: usize = 16;

/// Activation rows quantized to Q8_0 (what candle's `BlockQ8_0::from_float` computes).
struct Activations {
    /// `rows * k` values.
    qs: Vec<i8>,
    /// One scale per block, rounded through f16 as candle stores it.
    scales: Vec<f32>,
    blocks: usize,
}

fn f16_round_trip(x: f32) -> f32 {
    // SAFETY: F16C is enabled at compile time (this module is built only with it).
    unsafe {
        let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
        _mm_cvtss_f32(_mm_cvtph_ps(h))
    }
}

fn f16_bits_to_f32(lo: u8, hi: u8) -> f32 {
    // SAFETY: as above.
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([lo, hi]) as i32))) }
}

impl Activations {
    /// Quantizes `rows` rows of `k` values (`k` a multiple of [`BLOCK`]).
    fn quantize(x: &[f32], k: usize) -> Activations {
        let blocks = k / BLOCK;
        let mut qs = vec![0i8; x.len()];
        let mut scales = Vec::with_capacity(x.len() / BLOCK);
        for (src, dst) in x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK)) {
            let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (q, &v) in dst.iter_mut().zip(src) {
                *q = (v * id).round() as i8;
            }
            scales.push(f16_round_trip(d));
        }
        Activations { qs, scales, blocks }
    }

    #[inline(always)]
    fn row(&self, r: usize) -> (&[i8], &[f32]) {
        (&self.qs[r * self.blocks * BLOCK..(r + 1) * self.blocks * BLOCK], &self.scales[r * self.blocks..(r + 1) * self.blocks])
    }
}

/// candle's `hsum_float_8`.
#[inline(always)]
unsafe fn hsum(x: __m256) -> f32 {
    let res = _mm256_extractf128_ps(x, 1);
    let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    let res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

/// Dot products of one weight row (`blocks` Q8_0 blocks, GGUF layout) with `R` activation
/// rows: candle's AVX2 `vec_dot_q8_0_q8_0`, with each weight block prepared once.
#[inline(always)]
unsafe fn dot_rows_avx2<const R: usize>(w: &[u8], rows: [(&[i8], &[f32]); R], blocks: usize) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let wp = w.as_ptr().add(b * BLOCK_BYTES);
        let wd = f16_bits_to_f32(*wp, *wp.add(1));
        let bw = _mm256_loadu_si256(wp.add(2) as *const __m256i);
        let aw = _mm256_sign_epi8(bw, bw);
        for r in 0..R {
            let (qs, scales) = rows[r];
            let by = _mm256_loadu_si256(qs.as_ptr().add(b * BLOCK) as *const __m256i);
            let sy = _mm256_sign_epi8(by, bw);
            let dot = _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(aw, sy));
            let d = _mm256_set1_ps(wd * *scales.get_unchecked(b));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), acc[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]);
    }
    out
}

/// One weight row, ready to be dotted with groups of activation rows.
trait Kernel {
    /// What one activation row is to this kernel.
    type Row: Copy;
    fn row(&self, r: usize) -> Self::Row;
    /// The weight row against `R` activation rows.
    unsafe fn dot<const R: usize>(&self, rows: [Self::Row; R]) -> [f32; R];
}

/// AVX2 on GGUF's layout ([`dot_rows_avx2`]), bit-identical to candle.
struct Avx2<'a> {
    wrow: &'a [u8],
    acts: &'a Activations,
}
impl<'a> Kernel for Avx2<'a> {
    type Row = (&'a [i8], &'a [f32]);
    #[inline(always)]
    fn row(&self, r: usize) -> Self::Row {
        self.acts.row(r)
    }
    #[inline(always)]
    unsafe fn dot<const R: usize>(&self, rows: [Self::Row; R]) -> [f32; R] {
        dot_rows_avx2::<R>(self.wrow, rows, self.acts.blocks)
    }
}

/// One weight row against every activation row, [`ROWS`] at a time, writing `put(row, value)`.
#[inline(always)]
unsafe fn column<K: Kernel>(kernel: &K, rows: usize, put: impl Fn(usize, f32)) {
    let row = |r| kernel.row(r);
    let mut r = 0;
    while r + ROWS <= rows {
        let out = kernel.dot::<ROWS>([row(r), row(r + 1), row(r + 2), row(r + 3)]);
        out.iter().enumerate().for_each(|(i, v)| put(r + i, *v));
        r += ROWS;
    }
    match rows - r {
        3 => {
            let out = kernel.dot::<3>([row(r), row(r + 1), row(r + 2)]);
            out.iter().enumerate().for_each(|(i, v)| put(r + i, *v));
        }
        2 => {
            let out = kernel.dot::<2>([row(r), row(r + 1)]);
            out.iter().enumerate().for_each(|(i, v)| put(r + i, *v));
        }
        1 => put(r, kernel.dot::<1>([row(r)])[0]),
        _ => {}
    }
}

/// [`column`] with AVX2.
unsafe fn column_avx2(wrow: &[u8], acts: &Activations, rows: usize, put: impl Fn(usize, f32)) {
    column(&Avx2 { wrow, acts }, rows, put)
}

/// Q8_0 weights repacked for the AVX-512 VNNI kernel, built once at load.
///
/// VNNI's `dpbusd` multiplies unsigned by signed bytes. GGUF's layout makes the kernel
/// re-derive, for every activation row, a sign-corrected copy of the activations (|w| times
/// sign(w)·y), and unpack two f16 scales per pair of blocks, with 34-byte blocks that no
/// single load covers. Here each output row is stored as pairs of blocks:
/// - `quants`: 64 bytes per pair, the two blocks interleaved in 4-byte groups (group `g` of
///   block `j` at lane `2g + j`, so a lane's sum belongs to one block), each byte stored as
///   `w + 128` (unsigned). `dpbusd` then gives `Σ w·y + 128·Σ y` per lane, and the second
///   term is subtracted by starting the sum at `-128·Σ y`, precomputed once per activation
///   row ([`PackedActivations`]): the same integers as the sign trick, with no per-row work
///   on the weights.
/// - `scales`: the pair's two f16 scales as one `u32`; broadcast and converted, they land
///   on the lanes of their blocks (even lanes the first, odd lanes the second).
///
/// An odd last block is paired with a zero block (scale 0), which adds exactly nothing.
/// Same bytes per weight as GGUF's layout.
struct Packed {
    quants: Vec<u8>,
    scales: Vec<u32>,
    /// Pairs of blocks per output row.
    pairs: usize,
}

/// Bytes of one pair of blocks' values.
const PAIR: usize = 2 * BLOCK;

/// Moves two 32-value blocks into the interleaved order of [`Packed`] (4-byte groups,
/// alternating blocks), applying `f` to each byte.
#[inline(always)]
fn interleave<T: Copy>(b0: &[T], b1: &[T], out: &mut [T], f: impl Fn(T) -> T) {
    for g in 0..BLOCK / 4 {
        for i in 0..4 {
            out[8 * g + i] = f(b0[4 * g + i]);
            out[8 * g + 4 + i] = f(b1[4 * g + i]);
        }
    }
}

impl Packed {
    fn from_gguf(w: &[u8], n: usize, k: usize) -> Packed {
        let blocks = k / BLOCK;
        let pairs = blocks.div_ceil(2);
        let zero = [0u8; BLOCK_BYTES];
        let mut quants = vec![0u8; n * pairs * PAIR];
        let mut scales = vec![0u32; n * pairs];
        for row in 0..n {
            let wrow = &w[row * blocks * BLOCK_BYTES..(row + 1) * blocks * BLOCK_BYTES];
            for p in 0..pairs {
                let b0 = &wrow[2 * p * BLOCK_BYTES..(2 * p + 1) * BLOCK_BYTES];
                let b1 = if 2 * p + 1 < blocks { &wrow[(2 * p + 1) * BLOCK_BYTES..(2 * p + 2) * BLOCK_BYTES] } else { &zero[..] };
                let at = (row * pairs + p) * PAIR;
                interleave(&b0[2..], &b1[2..], &mut quants[at..at + PAIR], |v| v ^ 0x80);
                scales[row * pairs + p] = u32::from_le_bytes([b0[0], b0[1], b1[0], b1[1]]);
            }
        }
        Packed { quants, scales, pairs }
    }
}

/// 64 bytes, aligned as one AVX-512 register.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Activation rows in [`Packed`]'s order, with what the VNNI kernel needs per lane. Per row
/// and pair of blocks, three [`Line`]s side by side (so one pointer per row serves the
/// kernel): the 64 values interleaved as the weights; per lane `-128 · Σ` of its four
/// values (i32, the offset correction); per lane the scale of its block (f32).
struct PackedActivations {
    lines: Vec<Line>,
    pairs: usize,
}

impl PackedActivations {
    fn new(acts: &Activations, rows: usize, pairs: usize) -> PackedActivations {
        let mut lines = vec![Line([0; 64]); rows * pairs * 3];
        let zero = [0i8; BLOCK];
        for r in 0..rows {
            let (qs, sc) = acts.row(r);
            for p in 0..pairs {
                let b1 = 2 * p + 1 < acts.blocks;
                let y1 = if b1 { &qs[(2 * p + 1) * BLOCK..(2 * p + 2) * BLOCK] } else { &zero[..] };
                let mut y = [0i8; PAIR];
                interleave(&qs[2 * p * BLOCK..(2 * p + 1) * BLOCK], y1, &mut y, |v| v);
                let (s0, s1) = (sc[2 * p], if b1 { sc[2 * p + 1] } else { 0.0 });
                let at = (r * pairs + p) * 3;
                for lane in 0..PAIR / 4 {
                    let corr = -128 * y[4 * lane..4 * lane + 4].iter().map(|&v| v as i32).sum::<i32>();
                    let scale = if lane % 2 == 0 { s0 } else { s1 };
                    lines[at + 1].0[4 * lane..4 * lane + 4].copy_from_slice(&corr.to_le_bytes());
                    lines[at + 2].0[4 * lane..4 * lane + 4].copy_from_slice(&scale.to_le_bytes());
                }
                lines[at].0.iter_mut().zip(y).for_each(|(d, v)| *d = v as u8);
            }
        }
        PackedActivations { lines, pairs }
    }

    /// Row `r`'s first line.
    #[inline(always)]
    fn row(&self, r: usize) -> *const Line {
        self.lines[r * self.pairs * 3..].as_ptr()
    }
}

/// Pair `p` of [`dot_rows_512`]: adds its products to `acc`, one accumulator per row.
#[inline(always)]
unsafe fn pair_512<const R: usize>(wq: *const u8, ws: *const u32, p: usize, rows: [*const Line; R], acc: &mut [__m512; R]) {
    let w = _mm512_loadu_si512(wq.add(p * PAIR) as *const _);
    let wd = _mm512_cvtph_ps(_mm256_set1_epi32(*ws.add(p) as i32));
    for r in 0..R {
        let line = rows[r].add(3 * p);
        let c = _mm512_load_si512(line.add(1) as *const _);
        let q = _mm512_dpbusd_epi32(c, w, _mm512_load_si512(line as *const _));
        let d = _mm512_mul_ps(wd, _mm512_load_ps(line.add(2) as *const f32));
        acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(q), acc[r]);
    }
}

/// Dot products of one packed weight row with `R` packed activation rows on AVX-512 VNNI.
/// Per pair of blocks the weights cost one load and one scale conversion; each row then
/// costs one `dpbusd` (started at the row's offset correction), a conversion, a scale
/// product and a multiply-add. Sums in 16 lanes with two accumulators per row (even and
/// odd pairs, halving the multiply-add dependency chain), so results differ from candle's
/// by float rounding (not bit for bit); they do not depend on the other rows.
#[inline(always)]
unsafe fn dot_rows_512<const R: usize>(wq: *const u8, ws: *const u32, pairs: usize, rows: [*const Line; R]) -> [f32; R] {
    let (mut even, mut odd) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
    let mut p = 0;
    while p + 2 <= pairs {
        pair_512(wq, ws, p, rows, &mut even);
        pair_512(wq, ws, p + 1, rows, &mut odd);
        p += 2;
    }
    if p < pairs {
        pair_512(wq, ws, p, rows, &mut even);
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(even[r], odd[r]));
    }
    out
}

/// AVX-512 VNNI on the [`Packed`] layout ([`dot_rows_512`]).
struct Vnni<'a> {
    wq: *const u8,
    ws: *const u32,
    pairs: usize,
    acts: &'a PackedActivations,
}
impl Kernel for Vnni<'_> {
    type Row = *const Line;
    #[inline(always)]
    fn row(&self, r: usize) -> Self::Row {
        self.acts.row(r)
    }
    #[inline(always)]
    unsafe fn dot<const R: usize>(&self, rows: [Self::Row; R]) -> [f32; R] {
        dot_rows_512::<R>(self.wq, self.ws, self.pairs, rows)
    }
}

/// [`column`] on AVX-512 VNNI, for output row `col` of `w`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn column_vnni(w: &Packed, col: usize, acts: &PackedActivations, rows: usize, put: impl Fn(usize, f32)) {
    let kernel = Vnni { wq: w.quants.as_ptr().add(col * w.pairs * PAIR), ws: w.scales.as_ptr().add(col * w.pairs), pairs: w.pairs, acts };
    column(&kernel, rows, put)
}

/// Whether this CPU has AVX-512 VNNI (checked once).
fn has_vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        std::env::var("MMC_Q8_0_AVX2_ONLY").is_err()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    })
}

/// An `[n, k]` Q8_0 weight matrix in the layout of the kernel this CPU runs: GGUF's own
/// for AVX2, [`Packed`] where AVX-512 VNNI is available.
pub struct Weights {
    n: usize,
    k: usize,
    layout: Layout,
}

enum Layout {
    Gguf(Vec<u8>),
    Vnni(Packed),
}

impl Weights {
    /// From `n` rows of GGUF Q8_0 blocks (`k / 32` each).
    pub fn from_gguf(blocks: Vec<u8>, n: usize, k: usize) -> Weights {
        Weights::with_layout(blocks, n, k, has_vnni())
    }

    fn with_layout(blocks: Vec<u8>, n: usize, k: usize, vnni: bool) -> Weights {
        assert_eq!(blocks.len(), n * k / BLOCK * BLOCK_BYTES, "Q8_0 matrix of {n}x{k}");
        let layout = if vnni { Layout::Vnni(Packed::from_gguf(&blocks, n, k)) } else { Layout::Gguf(blocks) };
        Weights { n, k, layout }
    }

    /// `x · wᵀ` for `rows` rows of `k` values; returns `rows * n` values. Columns are
    /// spread over candle's CPU thread pool.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), rows * k);
        let acts = Activations::quantize(x, k);
        let packed = match &self.layout {
            Layout::Vnni(w) => Some(PackedActivations::new(&acts, rows, w.pairs)),
            Layout::Gguf(_) => None,
        };
        let mut dst = vec![0f32; rows * n];
        let dst_ptr = dst.as_mut_ptr() as usize;
        let items = n.div_ceil(COLUMNS_PER_ITEM);
        candle_core::utils::barrier_pool().execute_chunked(items, |range| {
            for item in range {
                for col in item * COLUMNS_PER_ITEM..n.min((item + 1) * COLUMNS_PER_ITEM) {
                    let put = |r: usize, v: f32| {
                        // SAFETY: each (row, column) of `dst` is written by exactly one work
                        // item, and `dst` outlives the pool call.
                        unsafe { *(dst_ptr as *mut f32).add(r * n + col) = v }
                    };
                    // SAFETY: the loads stay inside the weight row and the activation rows
                    // (whole blocks or pairs); the packed layout exists only where the CPU
                    // has VNNI.
                    unsafe {
                        match (&self.layout, &packed) {
                            (Layout::Vnni(w), Some(p)) => column_vnni(w, col, p, rows, put),
                            (Layout::Gguf(w), _) => {
                                let row_bytes = k / BLOCK * BLOCK_BYTES;
                                column_avx2(&w[col * row_bytes..(col + 1) * row_bytes], &acts, rows, put)
                            }
                            (Layout::Vnni(_), None) => unreachable!("packed activations are built for packed weights"),
                        }
                    }
                }
            }
        });
        dst
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{
        quantized::{k_quants::{BlockQ8_0, GgmlType}, GgmlDType, QTensor},
        Device, Tensor,
    };

    /// Weights in candle's block type, from GGUF-layout bytes.
    fn blocks(bytes: &[u8]) -> Vec<BlockQ8_0> {
        let mut out = vec![BlockQ8_0::zeros(); bytes.len() / super::BLOCK_BYTES];
        // SAFETY: BlockQ8_0 is repr(C), 34 bytes (f16 + 32 x i8), as in the file.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr() as *mut u8, bytes.len()) };
        out
    }

    #[test]
    fn every_row_count_matches_candles_dot_product() {
        // 576 values: 18 blocks (9 pairs); 800: 25 blocks, the last paired with a zero block.
        for (n, k) in [(37, 576), (5, 800)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let wq = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
            let bytes = wq.data().unwrap().into_owned();
            let wb = blocks(&bytes);
            let variants: &[bool] = if super::has_vnni() { &[false, true] } else { &[false] };
            for &vnni in variants {
                let weights = super::Weights::with_layout(bytes.clone(), n, k, vnni);
                for rows in 1..=9 {
                    let x: Vec<f32> = Tensor::randn(0f32, 3.0, (rows, k), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                    let ours = weights.matmul(&x, rows);
                    for r in 0..rows {
                        let mut xb = vec![BlockQ8_0::zeros(); k / 32];
                        BlockQ8_0::from_float(&x[r * k..(r + 1) * k], &mut xb);
                        for c in 0..n {
                            let want = BlockQ8_0::vec_dot(k, &wb[c * k / 32..(c + 1) * k / 32], &xb);
                            let got = ours[r * n + c];
                            if vnni {
                                // 16-lane sums: float rounding apart from candle's 8-lane order
                                // (the dot products here are sums of terms up to ~100 that may
                                // cancel).
                                assert!((got - want).abs() <= 1e-3 + 1e-5 * want.abs(), "k={k} rows={rows} r={r} c={c}: {got} vs {want}");
                            } else {
                                assert_eq!(got.to_bits(), want.to_bits(), "k={k} rows={rows} r={r} c={c}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn zero_rows_and_zero_activations() {
        for vnni in [false, super::has_vnni()] {
            let weights = super::Weights::with_layout(vec![0u8; 2 * super::BLOCK_BYTES], 2, 32, vnni);
            assert!(weights.matmul(&[], 0).is_empty());
            assert_eq!(weights.matmul(&[0.0; 32], 1), vec![0.0, 0.0]);
        }
    }
}
#[cfg(test)]
mod timing {
    /// Kernel time for 1 and 4 rows (a measurement: `cargo test -p mmc-textgen --lib
    /// kernel_time -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn kernel_time() {
        use candle_core::{quantized::{GgmlDType, QTensor}, Device, Tensor};
        let (n, k) = (3072, 576);
        let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
        let weights = super::Weights::from_gguf(w.data().unwrap().into_owned(), n, k);
        for rows in [1usize, 4] {
            let x = vec![0.5f32; rows * k];
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                for _ in 0..100 {
                    std::hint::black_box(weights.matmul(&x, rows));
                }
                best = best.min(t.elapsed().as_secs_f64() / 100.0);
            }
            println!("{n}x{k}, {rows} row(s): {:.1} us", best * 1e6);
        }
    }
}
