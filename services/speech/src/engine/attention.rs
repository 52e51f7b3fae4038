//! Whisper's encoder self-attention, fused: `softmax(Q Kᵀ / √d) V` for every head, computed
//! a block of query rows at a time, called by whisper.cpp's encoder graph.
//!
//! Why: upstream whisper.cpp builds the encoder's attention as three graph nodes: the
//! scores `K·Q` (window × window floats per head: 54 MB per layer for tiny.en's six heads
//! over a 30 s window), a softmax over them, then `V·softmax`. On CPU that matrix does not
//! fit any cache, so the softmax and the second product each stream it from memory again;
//! after the matmuls moved to our GEMM (`blas.rs`) that traffic (the softmax alone 16% of a
//! transcription) was the next largest cost. Here each task takes 64 query rows of one head:
//! their scores (64 × window floats, at most 384 KB) are computed, exponentiated and
//! multiplied by `V` while they are still in the core's cache, and never stored whole. Same
//! arithmetic in f32 (upstream's scores were f32 too, its K and V f16), one pass fewer over
//! memory, and no per-state buffer for the whole score matrix.
//!
//! The wiring: `services/speech/whisper-cpp/patch.cmake` patches whisper.cpp's
//! encoder graph (CPU builds) to call [`mmc_encoder_attention`] through ggml's custom-op
//! node, which runs it on every thread of the decode with its own task index, on the
//! layer's `Qcur`, `Kcur` and `Vcur` (window × width, heads side by side in each row) and
//! writing the merged heads the next matmul reads.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use mmc_fastmath::exp_fast as exp;

/// Query rows per task. Their scores stay in L2 between the three steps.
const ROWS: usize = 64;

thread_local! {
    /// Scores of the current block (ROWS x window), reused across calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Encoder attention layers computed here since start (task 0 counts each once).
static LAYERS: AtomicU64 = AtomicU64::new(0);

/// Encoder attention layers whisper.cpp has computed here since the process started (read
/// by tests to prove the patched graph calls it).
pub fn layers() -> u64 {
    LAYERS.load(Ordering::Relaxed)
}

/// One layer's attention, the share of task `ith` of `nth`: rows `t` of `q`, `k`, `v` and
/// `out` are `n_ctx` audio positions, `row_*` floats apart; head `h` is columns
/// `h * d .. (h + 1) * d` of each row, `d = n_state / n_head`.
///
/// # Safety
///
/// `q`, `k`, `v` point to `n_ctx` rows of at least `n_state` floats at their strides, `out`
/// to `n_ctx` writable rows; `out` does not overlap the inputs. Tasks `0..nth` of one call
/// may run at once: each writes only its own (head, row block) parts of `out`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mmc_encoder_attention(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    n_ctx: i64,
    n_state: i64,
    n_head: i64,
    row_q: i64,
    row_k: i64,
    row_v: i64,
    row_out: i64,
    ith: i32,
    nth: i32,
) {
    if ith == 0 {
        LAYERS.fetch_add(1, Ordering::Relaxed);
    }
    let layer = Layer {
        q,
        k,
        v,
        out,
        n_ctx: n_ctx as usize,
        head_dim: (n_state / n_head.max(1)) as usize,
        n_head: n_head as usize,
        rows: [row_q as isize, row_k as isize, row_v as isize, row_out as isize],
    };
    // SAFETY: the caller's contract above is `Layer::task`'s.
    unsafe { layer.task(ith.max(0) as usize, nth.max(1) as usize) }
}

/// One layer's operands, as whisper.cpp lays them out.
struct Layer {
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    n_ctx: usize,
    n_head: usize,
    head_dim: usize,
    /// Row strides (floats) of q, k, v and out.
    rows: [isize; 4],
}

impl Layer {
    /// Units of work: (head, block of ROWS query rows), dealt round-robin to the tasks.
    ///
    /// # Safety
    ///
    /// As [`mmc_encoder_attention`].
    unsafe fn task(&self, ith: usize, nth: usize) {
        #[cfg(target_arch = "x86_64")]
        if super::amx::available() && AMX_ENABLED.load(Ordering::Relaxed) {
            // SAFETY: as this function's.
            return unsafe { self.task_on_amx(ith, nth) };
        }
        let blocks = self.n_ctx.div_ceil(ROWS);
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let [row_q, row_k, row_v, row_out] = self.rows;
        let d = self.head_dim;
        SCORES.with(|scores| {
            let mut scores = scores.borrow_mut();
            scores.resize(ROWS * self.n_ctx, 0.0);
            let mut inv_sums = [0.0f32; ROWS];
            for unit in (ith..self.n_head * blocks).step_by(nth) {
                let (h, block) = (unit / blocks, unit % blocks);
                let r0 = block * ROWS;
                let m = ROWS.min(self.n_ctx - r0);
                let col = (h * d) as isize;
                let s = &mut scores[..m * self.n_ctx];
                // Scores: s = scale * Q[r0.., head] * K[.., head]^T. gemm computes
                // dst = alpha * dst + beta * lhs * rhs (dst read only when asked).
                // SAFETY: rows r0..r0 + m and this head's columns of Q, all n_ctx rows of
                // K (the contract); `s` is m x n_ctx, row-major.
                unsafe {
                    gemm::gemm(
                        m,
                        self.n_ctx,
                        d,
                        s.as_mut_ptr(),
                        1,
                        self.n_ctx as isize,
                        false,
                        self.q.offset(r0 as isize * row_q + col),
                        1,
                        row_q,
                        self.k.offset(col),
                        row_k,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (row, inv_sum) in s.chunks_exact_mut(self.n_ctx).zip(inv_sums.iter_mut()) {
                    *inv_sum = 1.0 / exp_shifted_in_place(row);
                }
                // SAFETY: row r0 of `out` at this head's first column, inside `out`.
                let o = unsafe { self.out.offset(r0 as isize * row_out + col) };
                // Unnormalised output: o = exp(s - max) * V[.., head].
                // SAFETY: `s` as above; all n_ctx rows of V, this head's columns; rows
                // r0..r0 + m of `out`, this head's columns: this unit's own part.
                unsafe {
                    gemm::gemm(
                        m,
                        d,
                        self.n_ctx,
                        o,
                        1,
                        row_out,
                        false,
                        s.as_ptr(),
                        1,
                        self.n_ctx as isize,
                        self.v.offset(col),
                        1,
                        row_v,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (r, inv_sum) in inv_sums[..m].iter().enumerate() {
                    // SAFETY: row r0 + r of `out`, this head's d columns (this unit's own).
                    let row = unsafe { std::slice::from_raw_parts_mut(o.offset(r as isize * row_out), d) };
                    row.iter_mut().for_each(|x| *x *= inv_sum);
                }
            }
        });
    }
}

impl Layer {
    /// The same layer on AMX tiles (`amx.rs`): Q, K, V and the probabilities in bf16, sums
    /// in f32. Units of work are whole heads, dealt round-robin, so that each head's K and
    /// V are packed into tiles once (`n_ctx × d` each, in L2) and then serve every block
    /// of its query rows.
    ///
    /// # Safety
    ///
    /// As [`mmc_encoder_attention`], and AMX is available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn task_on_amx(&self, ith: usize, nth: usize) {
        use super::amx::{PackedA, PackedB, Tiles};
        let d = self.head_dim;
        let scale = 1.0 / (d as f32).sqrt();
        let [row_q, row_k, row_v, row_out] = self.rows;
        let _tiles = Tiles::configure();
        let mut block_out = vec![0f32; ROWS * d];
        // The same per-thread score buffer as the f32 path (grows to ROWS x window once).
        SCORES.with(|scores| {
            let mut scores = scores.borrow_mut();
            scores.resize(ROWS * self.n_ctx, 0.0);
            for h in (ith..self.n_head).step_by(nth) {
                let col = (h * d) as isize;
                // K: one column of the scores per audio position, of depth d.
                // SAFETY: this head's columns of all n_ctx rows of K (the contract).
                let k = unsafe { PackedB::new(self.n_ctx, d, self.k.offset(col), row_k as usize, 1) };
                // V: one output column per head dimension, of depth n_ctx.
                // SAFETY: this head's columns of all n_ctx rows of V (the contract).
                let v = unsafe { PackedB::new(d, self.n_ctx, self.v.offset(col), 1, row_v as usize) };
                for r0 in (0..self.n_ctx).step_by(ROWS) {
                    let m = ROWS.min(self.n_ctx - r0);
                    // SAFETY: rows r0..r0 + m of Q, this head's columns; scaled by 1/√d here.
                    let q = unsafe { PackedA::new(m, d, self.q.offset(r0 as isize * row_q + col), row_q as usize, scale) };
                    let s = &mut scores[..m * self.n_ctx];
                    // SAFETY: `s` is m rows of n_ctx; the tiles are configured above.
                    unsafe { q.times(&k, s.as_mut_ptr(), self.n_ctx) };
                    let mut inv_sums = [0.0f32; ROWS];
                    for (row, inv_sum) in s.chunks_exact_mut(self.n_ctx).zip(inv_sums.iter_mut()) {
                        *inv_sum = 1.0 / exp_shifted_in_place(row);
                    }
                    // SAFETY: `block_out` is m rows of d.
                    unsafe { PackedA::from_rows(s, self.n_ctx).times(&v, block_out.as_mut_ptr(), d) };
                    for (r, inv_sum) in inv_sums[..m].iter().enumerate() {
                        // SAFETY: row r0 + r of `out`, this head's d columns (this unit's own).
                        let row = unsafe { std::slice::from_raw_parts_mut(self.out.offset((r0 + r) as isize * row_out + col), d) };
                        for (o, &x) in row.iter_mut().zip(&block_out[r * d..][..d]) {
                            *o = x * inv_sum;
                        }
                    }
                }
            }
        });
    }
}

/// Whether [`Layer::task`] may use AMX where it is available (tests turn it off to
/// compare both paths).
static AMX_ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Lanes of the hand-split reductions below (two AVX-512 or four AVX2 registers), so the
/// compiler vectorises them (a plain float sum must keep its order and would not).
const LANES: usize = 16;

/// `row[i] = exp(row[i] - max(row))`; returns the sum of the new values (at least 1: the
/// maximum's own term).
fn exp_shifted_in_place(row: &mut [f32]) -> f32 {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in maxes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    let max = chunks.remainder().iter().chain(&maxes).fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sums = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, x) in sums.iter_mut().zip(chunk) {
            *x = exp(*x - max);
            *s += *x;
        }
    }
    let mut sum = 0.0;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    sum + sums.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer against the textbook formula in f64, for windows that are and are not a
    /// multiple of the block, and any number of tasks (each computing its own share): in
    /// f32 (1e-4), and on AMX tiles where the CPU has them (bf16 inputs: the bound is what
    /// rounding Q, K, V and the probabilities to 8 bits of mantissa can move). One test, so
    /// that switching paths does not race another test.
    #[test]
    fn attention_matches_the_definition_for_any_window_and_task_count() {
        AMX_ENABLED.store(false, Ordering::Relaxed);
        check_against_the_definition(1e-4);
        AMX_ENABLED.store(true, Ordering::Relaxed);
        #[cfg(target_arch = "x86_64")]
        if crate::engine::amx::available() {
            check_against_the_definition(2e-2);
        }
    }

    fn check_against_the_definition(tolerance: f64) {
        let mut worst = 0f64;
        let value = |i: usize| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 500.0 - 2.0;
        for (n_ctx, n_head, d, nth) in [(70usize, 2usize, 64usize, 1usize), (130, 3, 64, 2), (512, 6, 64, 3), (33, 1, 32, 4)] {
            let n_state = n_head * d;
            // Rows padded past n_state, as a view of a wider tensor would be.
            let stride = n_state + 5;
            let q: Vec<f32> = (0..n_ctx * stride).map(value).collect();
            let k: Vec<f32> = (0..n_ctx * stride).map(|i| value(i + 7_777)).collect();
            let v: Vec<f32> = (0..n_ctx * stride).map(|i| value(i + 31_337)).collect();
            let mut out = vec![f32::NAN; n_ctx * stride];
            for ith in 0..nth as i32 {
                // SAFETY: the buffers hold n_ctx rows of `stride` floats.
                unsafe {
                    mmc_encoder_attention(
                        q.as_ptr(),
                        k.as_ptr(),
                        v.as_ptr(),
                        out.as_mut_ptr(),
                        n_ctx as i64,
                        n_state as i64,
                        n_head as i64,
                        stride as i64,
                        stride as i64,
                        stride as i64,
                        stride as i64,
                        ith,
                        nth as i32,
                    )
                };
            }
            let scale = 1.0 / (d as f64).sqrt();
            for h in 0..n_head {
                for t in 0..n_ctx {
                    let at = |m: &[f32], row: usize, j: usize| m[row * stride + h * d + j] as f64;
                    let s: Vec<f64> = (0..n_ctx).map(|u| (0..d).map(|j| at(&q, t, j) * at(&k, u, j)).sum::<f64>() * scale).collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for j in 0..d {
                        let want = (0..n_ctx).map(|u| e[u] * at(&v, u, j)).sum::<f64>() / sum;
                        let got = out[t * stride + h * d + j] as f64;
                        worst = worst.max((got - want).abs() / (1.0 + want.abs()));
                        assert!((got - want).abs() <= tolerance * (1.0 + want.abs()), "window {n_ctx}, head {h}, row {t}, col {j}: {got} vs {want}");
                    }
                }
            }
            // The padding past n_state is not written.
            assert!(out.chunks(stride).all(|row| row[n_state..].iter().all(|x| x.is_nan())));
        }
        eprintln!("worst relative error {worst:.2e} (bound {tolerance:.0e})");
    }
}
