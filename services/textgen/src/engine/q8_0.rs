//! A Q8_0 matmul for several activation rows at once (x86-64 with AVX2, FMA and F16C).
//!
//! candle's CPU matmul for Q8_0 weights computes every (row, column) dot product on its own:
//! each weight block is re-read and re-processed (sign, absolute value, f16 scale) for every
//! activation row, so a batch of four sequences costs four times one, and batched decode
//! gains nothing. Here each weight block is loaded and prepared once and then dotted with up
//! to [`ROWS`] activation rows held in L1, which makes extra rows much cheaper than the first.
//!
//! The arithmetic per (row, column) is candle's AVX2 `vec_dot_q8_0_q8_0` instruction for
//! instruction (activations quantized to Q8_0 as candle does, the same integer products,
//! the same f32 scale product, fused multiply-adds in the same order, the same horizontal
//! sum), so results are bit-identical to candle's and do not depend on how many rows share
//! a call; `tests/llama_batched.rs` checks both.

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

/// Dot products of one weight row (`blocks` Q8_0 blocks) with `R` activation rows. `dot4`
/// sums the products of each group of four bytes into an i32 lane (AVX2: `maddubs` then
/// `madd`; VNNI: one `dpbusd`, the same integers since `maddubs` cannot saturate here:
/// |w| <= 128 and |y| <= 127).
#[inline(always)]
unsafe fn dot_rows<const R: usize>(
    w: &[u8],
    rows: [(&[i8], &[f32]); R],
    blocks: usize,
    dot4: impl Fn(__m256i, __m256i) -> __m256i,
) -> [f32; R] {
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
            let q = _mm256_cvtepi32_ps(dot4(aw, sy));
            let d = _mm256_set1_ps(wd * *scales.get_unchecked(b));
            acc[r] = _mm256_fmadd_ps(d, q, acc[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]);
    }
    out
}

/// A dot-product kernel: one weight row against `R` activation rows.
trait Kernel {
    unsafe fn dot<const R: usize>(w: &[u8], rows: [(&[i8], &[f32]); R], blocks: usize) -> [f32; R];
}

/// AVX2 ([`dot_rows`] with `maddubs` + `madd`), bit-identical to candle.
struct Avx2;
impl Kernel for Avx2 {
    #[inline(always)]
    unsafe fn dot<const R: usize>(w: &[u8], rows: [(&[i8], &[f32]); R], blocks: usize) -> [f32; R] {
        dot_rows::<R>(w, rows, blocks, |a, b| dot4_avx2(a, b))
    }
}

/// AVX-512 VNNI ([`dot_rows_512`]).
struct Avx512;
impl Kernel for Avx512 {
    #[inline(always)]
    unsafe fn dot<const R: usize>(w: &[u8], rows: [(&[i8], &[f32]); R], blocks: usize) -> [f32; R] {
        dot_rows_512::<R>(w, rows, blocks)
    }
}

/// One weight row against every activation row, `ROWS` at a time, writing `put(row, value)`.
#[inline(always)]
unsafe fn column<K: Kernel>(wrow: &[u8], acts: &Activations, rows: usize, put: impl Fn(usize, f32)) {
    let blocks = acts.blocks;
    let mut r = 0;
    while r + ROWS <= rows {
        let out = K::dot::<ROWS>(wrow, [acts.row(r), acts.row(r + 1), acts.row(r + 2), acts.row(r + 3)], blocks);
        out.iter().enumerate().for_each(|(i, v)| put(r + i, *v));
        r += ROWS;
    }
    match rows - r {
        3 => {
            let out = K::dot::<3>(wrow, [acts.row(r), acts.row(r + 1), acts.row(r + 2)], blocks);
            out.iter().enumerate().for_each(|(i, v)| put(r + i, *v));
        }
        2 => {
            let out = K::dot::<2>(wrow, [acts.row(r), acts.row(r + 1)], blocks);
            out.iter().enumerate().for_each(|(i, v)| put(r + i, *v));
        }
        1 => put(r, K::dot::<1>(wrow, [acts.row(r)], blocks)[0]),
        _ => {}
    }
}

#[inline(always)]
unsafe fn dot4_avx2(aw: __m256i, sy: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(aw, sy))
}

/// [`column`] with AVX2 only.
unsafe fn column_avx2(wrow: &[u8], acts: &Activations, rows: usize, put: impl Fn(usize, f32)) {
    column::<Avx2>(wrow, acts, rows, put)
}

/// Dot products of one weight row with `R` activation rows on AVX-512 VNNI, two blocks
/// (64 bytes) per instruction: the weight pair's absolute values, sign mask and scales are
/// prepared once; per row and pair it is one load, a masked negation, one `dpbusd`, a
/// conversion and a multiply-add, about half of the AVX2 path's work per row. Sums in
/// 16 lanes, so results differ from candle's by float rounding (not bit for bit); they
/// still do not depend on the other rows. An odd last block goes through the 256-bit
/// `dpbusd`.
#[inline(always)]
unsafe fn dot_rows_512<const R: usize>(w: &[u8], rows: [(&[i8], &[f32]); R], blocks: usize) -> [f32; R] {
    let zero = _mm512_setzero_si512();
    // Two accumulators per row (even and odd pairs) halve the dependency chain of FMAs.
    let mut acc = [_mm512_setzero_ps(); R];
    let mut acc2 = [_mm512_setzero_ps(); R];
    let mut b = 0;
    while b + 2 <= blocks {
        let wp = w.as_ptr().add(b * BLOCK_BYTES);
        let lo = _mm256_loadu_si256(wp.add(2) as *const __m256i);
        let hi = _mm256_loadu_si256(wp.add(BLOCK_BYTES + 2) as *const __m256i);
        let bw = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        let negative = _mm512_movepi8_mask(bw);
        let aw = _mm512_abs_epi8(bw);
        let (d0, d1) = (f16_bits_to_f32(*wp, *wp.add(1)), f16_bits_to_f32(*wp.add(BLOCK_BYTES), *wp.add(BLOCK_BYTES + 1)));
        let wd = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0), _mm512_set1_ps(d1));
        for r in 0..R {
            let (qs, scales) = rows[r];
            let y = _mm512_loadu_si512(qs.as_ptr().add(b * BLOCK) as *const _);
            let sy = _mm512_mask_sub_epi8(y, negative, zero, y);
            let q = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, aw, sy));
            let (y0, y1) = (*scales.get_unchecked(b), *scales.get_unchecked(b + 1));
            let dy = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(y0), _mm512_set1_ps(y1));
            if (b / 2) % 2 == 0 {
                acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(wd, dy), q, acc[r]);
            } else {
                acc2[r] = _mm512_fmadd_ps(_mm512_mul_ps(wd, dy), q, acc2[r]);
            }
        }
        b += 2;
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r], acc2[r]));
    }
    if b < blocks {
        let tail = dot_rows::<R>(&w[b * BLOCK_BYTES..], rows.map(|(qs, sc)| (&qs[b * BLOCK..], &sc[b..])), 1, |a, y| {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, y)
        });
        for r in 0..R {
            out[r] += tail[r];
        }
    }
    out
}

/// [`column`] on AVX-512 VNNI ([`dot_rows_512`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn column_vnni(wrow: &[u8], acts: &Activations, rows: usize, put: impl Fn(usize, f32)) {
    column::<Avx512>(wrow, acts, rows, put)
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

/// `x · wᵀ`: `w` is `n` rows of Q8_0 blocks (`k / 32` each, GGUF layout), `x` is `rows`
/// rows of `k` values; returns `rows * n` values. Columns are spread over candle's CPU
/// thread pool.
pub fn matmul(w: &[u8], n: usize, k: usize, x: &[f32], rows: usize) -> Vec<f32> {
    matmul_with(w, n, k, x, rows, has_vnni())
}

/// [`matmul`], on AVX-512 VNNI when `vnni` (which the CPU must have).
fn matmul_with(w: &[u8], n: usize, k: usize, x: &[f32], rows: usize, vnni: bool) -> Vec<f32> {
    let row_bytes = k / BLOCK * BLOCK_BYTES;
    debug_assert_eq!(w.len(), n * row_bytes);
    debug_assert_eq!(x.len(), rows * k);
    let acts = Activations::quantize(x, k);
    let mut dst = vec![0f32; rows * n];
    let dst_ptr = dst.as_mut_ptr() as usize;
    let items = n.div_ceil(COLUMNS_PER_ITEM);
    candle_core::utils::barrier_pool().execute_chunked(items, |range| {
        let put = |r: usize, col: usize, v: f32| {
            // SAFETY: each (row, column) of `dst` is written by exactly one work item, and
            // `dst` outlives the pool call.
            unsafe { *(dst_ptr as *mut f32).add(r * n + col) = v }
        };
        for item in range {
            for col in item * COLUMNS_PER_ITEM..n.min((item + 1) * COLUMNS_PER_ITEM) {
                let wrow = &w[col * row_bytes..(col + 1) * row_bytes];
                let put = |r: usize, v: f32| put(r, col, v);
                // SAFETY: the loads stay inside `wrow` and the activation rows (whole
                // blocks); the VNNI variant runs only where the CPU has it.
                unsafe {
                    if vnni {
                        column_vnni(wrow, &acts, rows, put);
                    } else {
                        column_avx2(wrow, &acts, rows, put);
                    }
                }
            }
        }
    });
    dst
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
        let (n, k) = (37, 576);
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let wq = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let bytes = wq.data().unwrap().into_owned();
        let wb = blocks(&bytes);
        let variants: &[bool] = if super::has_vnni() { &[false, true] } else { &[false] };
        for (rows, &vnni) in (1..=9).flat_map(|r| variants.iter().map(move |v| (r, v))) {
            let x: Vec<f32> = Tensor::randn(0f32, 3.0, (rows, k), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let ours = super::matmul_with(&bytes, n, k, &x, rows, vnni);
            for r in 0..rows {
                let mut xb = vec![BlockQ8_0::zeros(); k / 32];
                BlockQ8_0::from_float(&x[r * k..(r + 1) * k], &mut xb);
                for c in 0..n {
                    let want = BlockQ8_0::vec_dot(k, &wb[c * k / 32..(c + 1) * k / 32], &xb);
                    if vnni {
                        // 16-lane sums: float rounding apart from candle's 8-lane order (the
                        // dot products here are sums of terms up to ~100 that may cancel).
                        assert!((ours[r * n + c] - want).abs() <= 1e-3 + 1e-5 * want.abs(), "rows={rows} r={r} c={c}: {} vs {want}", ours[r * n + c]);
                    } else {
                        assert_eq!(ours[r * n + c].to_bits(), want.to_bits(), "rows={rows} r={r} c={c}");
                    }
                }
            }
        }
    }

    #[test]
    fn zero_rows_and_zero_activations() {
        let bytes = vec![0u8; 2 * super::BLOCK_BYTES];
        assert!(super::matmul(&bytes, 2, 32, &[], 0).is_empty());
        assert_eq!(super::matmul(&bytes, 2, 32, &[0.0; 32], 1), vec![0.0, 0.0]);
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
        let bytes = w.data().unwrap().into_owned();
        for rows in [1usize, 4] {
            let x = vec![0.5f32; rows * k];
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                for _ in 0..100 {
                    std::hint::black_box(super::matmul(&bytes, n, k, &x, rows));
                }
                best = best.min(t.elapsed().as_secs_f64() / 100.0);
            }
            println!("{n}x{k}, {rows} row(s): {:.1} us", best * 1e6);
        }
    }
}
