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
//!   per-row sign work, one pointer per activation row, four rows' sums reduced together.
//!   16-lane sums, so results differ from candle's by float rounding. A 3072x576 matmul
//!   takes about 50 us for one row and 99 us for four, against 72 and 189 us with the GGUF
//!   layout (`kernel_time` below, 2-core AMD EPYC).
//!
//! In both, a row's results do not depend on how many rows share a call;
//! `tests/llama_batched.rs` checks that, and the unit tests below check both against candle.

use std::arch::x86_64::*;

use super::shared_out::SharedOut;

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

/// Quantizes one block of 32 values at `src` into `dst` exactly as candle's
/// `BlockQ8_0::from_float` does (scale `max|x| / 127`, values `round(x / scale)`, rounding
/// half away from zero), in AVX2: this runs for every row of every matmul on the calling
/// thread, while the pool waits, and the scalar loop took about a tenth of a decode step.
/// Returns the scale rounded through f16, as candle stores it.
///
/// # Safety
///
/// `src` must be valid for reading 32 `f32`s and `dst` for writing 32 `i8`s; the CPU must have AVX2 and F16C (this module is only built with them).
#[inline(always)]
unsafe fn quantize_block(src: *const f32, dst: *mut i8) -> f32 {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
        let v = [_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)), _mm256_loadu_ps(src.add(16)), _mm256_loadu_ps(src.add(24))];
        let sign = _mm256_set1_ps(-0.0);
        let abs = |x| _mm256_andnot_ps(sign, x);
        let m = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
        let m = _mm_max_ps(_mm256_extractf128_ps::<1>(m), _mm256_castps256_ps128(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
        let q = v.map(|x| {
            let x = _mm256_mul_ps(x, id);
            // Round half away from zero (Rust's `f32::round`): truncate, then step away from
            // zero where the dropped fraction (exact) is at least one half.
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
            let away = _mm256_cmp_ps::<_CMP_GE_OQ>(abs(_mm256_sub_ps(x, t)), half);
            let step = _mm256_and_ps(away, _mm256_or_ps(_mm256_and_ps(x, sign), one));
            _mm256_cvttps_epi32(_mm256_add_ps(t, step))
        });
        // Saturating packs (as `as i8` saturates), then undo their in-lane interleaving.
        let q16 = (_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16.0, q16.1), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(dst as *mut __m256i, q8);
        f16_round_trip(d)
    }
}

impl Activations {
    /// Quantizes `rows` rows of `k` values (`k` a multiple of [`BLOCK`]).
    fn quantize(x: &[f32], k: usize) -> Activations {
        let blocks = k / BLOCK;
        let mut qs = vec![0i8; x.len()];
        let mut scales = Vec::with_capacity(x.len() / BLOCK);
        for (src, dst) in x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK)) {
            // SAFETY: `src` and `dst` hold one whole block each.
            scales.push(unsafe { quantize_block(src.as_ptr(), dst.as_mut_ptr()) });
        }
        Activations { qs, scales, blocks }
    }

    #[inline(always)]
    fn row(&self, r: usize) -> (&[i8], &[f32]) {
        (&self.qs[r * self.blocks * BLOCK..(r + 1) * self.blocks * BLOCK], &self.scales[r * self.blocks..(r + 1) * self.blocks])
    }
}

/// candle's `hsum_float_8`.
///
/// # Safety
///
/// The CPU must have AVX (this module is only built with AVX2).
#[inline(always)]
unsafe fn hsum(x: __m256) -> f32 {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
        let res = _mm256_extractf128_ps(x, 1);
        let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
        let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        let res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }
}

/// Dot products of one weight row (`blocks` Q8_0 blocks, GGUF layout) with `R` activation
/// rows: candle's AVX2 `vec_dot_q8_0_q8_0`, with each weight block prepared once.
///
/// # Safety
///
/// `w` must hold `blocks` whole Q8_0 blocks and each activation row at least `blocks` blocks of values and scales; the CPU must have AVX2, FMA and F16C.
#[inline(always)]
unsafe fn dot_rows_avx2<const R: usize>(w: &[u8], rows: [(&[i8], &[f32]); R], blocks: usize) -> [f32; R] {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
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
}

/// One weight row, ready to be dotted with groups of activation rows.
trait Kernel {
    /// What one activation row is to this kernel.
    type Row: Copy;
    fn row(&self, r: usize) -> Self::Row;
    /// The weight row against `R` activation rows.
    ///
    /// # Safety
    ///
    /// Each of `rows` must come from [`Kernel::row`] of this kernel, `R <= 4`, and the CPU
    /// must have the kernel's instruction set.
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
        // SAFETY: the rows are this kernel's (the trait's contract), of `acts.blocks` blocks.
        unsafe { dot_rows_avx2::<R>(self.wrow, rows, self.acts.blocks) }
    }
}

/// One weight row against every activation row, [`ROWS`] at a time, writing `put(row, value)`.
///
/// # Safety
///
/// The kernel's [`Kernel::dot`] contract must hold for every row `0..rows`.
#[inline(always)]
unsafe fn column<K: Kernel>(kernel: &K, rows: usize, put: impl Fn(usize, f32)) {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
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
}

/// [`column`] with AVX2.
///
/// # Safety
///
/// `wrow` must hold one whole weight row of `acts.blocks` Q8_0 blocks, and `acts` at least `rows` rows; the CPU must have AVX2, FMA and F16C.
unsafe fn column_avx2(wrow: &[u8], acts: &Activations, rows: usize, put: impl Fn(usize, f32)) {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe { column(&Avx2 { wrow, acts }, rows, put) }
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

/// Writes two blocks' 32 values each in [`Packed`]'s order (4-byte groups, alternating
/// blocks), as unsigned `w + 128`.
fn interleave_offset(b0: &[u8], b1: &[u8], out: &mut [u8]) {
    for g in 0..BLOCK / 4 {
        for i in 0..4 {
            out[8 * g + i] = b0[4 * g + i] ^ 0x80;
            out[8 * g + 4 + i] = b1[4 * g + i] ^ 0x80;
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
                interleave_offset(&b0[2..], &b1[2..], &mut quants[at..at + PAIR]);
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
        for r in 0..rows {
            let (qs, sc) = acts.row(r);
            for p in 0..pairs {
                let second = 2 * p + 1 < acts.blocks;
                let at = (r * pairs + p) * 3;
                // SAFETY: `packed` is built only where the CPU has AVX-512 VNNI; the block
                // reads stay in `qs` (the second only when it exists).
                unsafe {
                    pack_pair(
                        qs.as_ptr().add(2 * p * BLOCK),
                        second.then(|| qs.as_ptr().add((2 * p + 1) * BLOCK)),
                        (sc[2 * p], if second { sc[2 * p + 1] } else { 0.0 }),
                        &mut lines[at..at + 3],
                    )
                };
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

/// Writes one pair of activation blocks as [`PackedActivations`]' three lines: values
/// interleaved in 4-byte groups, per-lane offset corrections (`dpbusd` of ones with the
/// values gives each lane's sum), per-lane scales. A missing second block counts as zeros.
///
/// # Safety
///
/// `y0` (and `y1` when given) must be valid for reading 32 `i8`s, `out` must hold at least three lines, and the CPU must have the AVX-512 features enabled here.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_pair(y0: *const i8, y1: Option<*const i8>, (s0, s1): (f32, f32), out: &mut [Line]) {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
        let lo = _mm256_loadu_si256(y0 as *const __m256i);
        let hi = y1.map_or(_mm256_setzero_si256(), |y1| _mm256_loadu_si256(y1 as *const __m256i));
        let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        let y = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), both);
        let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), y);
        let corr = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<7>(sums));
        let scales = _mm512_mask_blend_ps(0xAAAA, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
        _mm512_store_si512(out[0].0.as_mut_ptr() as *mut _, y);
        _mm512_store_si512(out[1].0.as_mut_ptr() as *mut _, corr);
        _mm512_store_ps(out[2].0.as_mut_ptr() as *mut f32, scales);
    }
}

/// Pair `p` of [`dot_rows_512`]: adds its products to `acc`, one accumulator per row.
///
/// # Safety
///
/// `wq` and `ws` must point at one packed weight row with more than `p` pairs, and each of `rows` at a packed activation row with more than `p` pairs; the CPU must have AVX-512 F, BW, VL and VNNI.
#[inline(always)]
unsafe fn pair_512<const R: usize>(wq: *const u8, ws: *const u32, p: usize, rows: [*const Line; R], acc: &mut [__m512; R]) {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
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
}

/// Dot products of one packed weight row with `R` packed activation rows on AVX-512 VNNI.
/// Per pair of blocks the weights cost one load and one scale conversion; each row then
/// costs one `dpbusd` (started at the row's offset correction), a conversion, a scale
/// product and a multiply-add. Sums in 16 lanes with two accumulators per row (even and
/// odd pairs, halving the multiply-add dependency chain), so results differ from candle's
/// by float rounding (not bit for bit); they do not depend on the other rows.
///
/// # Safety
///
/// As [`pair_512`] for every pair `0..pairs`, and `R <= 4`.
#[inline(always)]
unsafe fn dot_rows_512<const R: usize>(wq: *const u8, ws: *const u32, pairs: usize, rows: [*const Line; R]) -> [f32; R] {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
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
        let mut sums = [_mm512_setzero_ps(); 4];
        for r in 0..R {
            sums[r] = _mm512_add_ps(even[r], odd[r]);
        }
        let all = reduce4(sums);
        std::array::from_fn(|r| all[r])
    }
}

/// The lane sums of four vectors at once (about half the instructions of four separate
/// reductions; for a 576-wide matmul the reductions are a sixth of the work). Each vector's
/// sum goes through the same additions in the same order whatever the other three hold, so
/// a row's result does not depend on the rows beside it (unused slots are zeros).
///
/// # Safety
///
/// The CPU must have AVX-512 F.
#[inline(always)]
unsafe fn reduce4([a, b, c, d]: [__m512; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
        // 128-bit lanes: [a0 a1 b0 b1] + [a2 a3 b2 b3], and the same for c, d.
        let ab = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b));
        let cd = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(c, d), _mm512_shuffle_f32x4::<0b11_10_11_10>(c, d));
        // [A0 B0 C0 D0] + [A1 B1 C1 D1]: one 128-bit lane per vector.
        let s = _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd), _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd));
        // Within each lane: (x0 + x1) + (x2 + x3), in every element.
        let s = _mm512_add_ps(s, _mm512_permute_ps::<0b10_11_00_01>(s));
        let s = _mm512_add_ps(s, _mm512_permute_ps::<0b01_00_11_10>(s));
        let mut out = [0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), s);
        [out[0], out[4], out[8], out[12]]
    }
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
        // SAFETY: the rows are this kernel's (the trait's contract), packed with `pairs` pairs.
        unsafe { dot_rows_512::<R>(self.wq, self.ws, self.pairs, rows) }
    }
}

/// [`column`] on AVX-512 VNNI, for output row `col` of `w`.
///
/// # Safety
///
/// `col` must be an output row of `w`, `acts` must be packed for `w` (same pairs) with at least `rows` rows, and the CPU must have the AVX-512 features enabled here.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn column_vnni(w: &Packed, col: usize, acts: &PackedActivations, rows: usize, put: impl Fn(usize, f32)) {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
        let kernel = Vnni { wq: w.quants.as_ptr().add(col * w.pairs * PAIR), ws: w.scales.as_ptr().add(col * w.pairs), pairs: w.pairs, acts };
        column(&kernel, rows, put)
    }
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
        let out = SharedOut::new(&mut dst);
        let items = n.div_ceil(COLUMNS_PER_ITEM);
        candle_core::utils::barrier_pool().execute_chunked(items, |range| {
            for item in range {
                for col in item * COLUMNS_PER_ITEM..n.min((item + 1) * COLUMNS_PER_ITEM) {
                    let put = |r: usize, v: f32| {
                        // SAFETY: each (row, column) of `dst` is written by exactly one work
                        // item, `r * n + col < rows * n`, and `dst` outlives the pool call.
                        unsafe { out.write(r * n + col, v) }
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
        quantized::{
            k_quants::{BlockQ8_0, GgmlType},
            GgmlDType, QTensor,
        },
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
    fn activations_quantize_as_candle_does() {
        // Random rows, an all-zero block, and a block whose values land exactly on halves
        // (127 * i / 254 with max 127: x / d = i / 2), where rounding direction shows.
        let mut x: Vec<f32> = Tensor::randn(0f32, 2.0, 6 * 32, &Device::Cpu).unwrap().to_vec1().unwrap();
        x.extend(std::iter::repeat_n(0.0, 32));
        x.extend((0..32).map(|i| if i == 31 { -127.0 } else { (i as f32 - 16.0) / 2.0 }));
        let ours = super::Activations::quantize(&x, x.len());
        let mut want = vec![BlockQ8_0::zeros(); x.len() / 32];
        BlockQ8_0::from_float(&x, &mut want);
        // SAFETY: BlockQ8_0 is repr(C), 34 bytes (f16 + 32 x i8).
        let bytes = unsafe { std::slice::from_raw_parts(want.as_ptr() as *const u8, want.len() * super::BLOCK_BYTES) };
        for (b, block) in bytes.chunks_exact(super::BLOCK_BYTES).enumerate() {
            let qs: Vec<i8> = block[2..].iter().map(|&v| v as i8).collect();
            assert_eq!(&ours.qs[b * 32..(b + 1) * 32], &qs[..], "block {b}");
            assert_eq!(ours.scales[b], super::f16_bits_to_f32(block[0], block[1]), "block {b}");
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
    /// Kernel time for 1 and 4 rows (a measurement: `cargo test -p mmc-llm --lib
    /// kernel_time -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn kernel_time() {
        use candle_core::{
            quantized::{GgmlDType, QTensor},
            Device, Tensor,
        };
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
#[cfg(test)]
mod qtiming {
    #[test]
    #[ignore]
    fn quantize_time() {
        let (rows, k) = (4usize, 1536usize);
        let x: Vec<f32> = (0..rows * k).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            let a = super::Activations::quantize(&x, k);
            std::hint::black_box(super::PackedActivations::new(&a, rows, k / 64));
        }
        println!("quantize+pack {rows}x{k}: {:.1} us", t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(super::Activations::quantize(&x, k));
        }
        println!("quantize {rows}x{k}: {:.1} us", t.elapsed().as_secs_f64() * 1e3);
    }
}
