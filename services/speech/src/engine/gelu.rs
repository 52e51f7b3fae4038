//! Whisper's encoder activations, fused: `GELU(x + bias)` in one vectorised pass, called by
//! whisper.cpp's encoder graph after both convolutions and each layer's first MLP matmul.
//!
//! Why: upstream adds the bias in one node and applies GELU in another, and ggml's CPU GELU
//! is a scalar loop that rounds each input to f16 to read a 65 536-entry table (and rounds
//! the result to f16). With the matmuls and the attention fast, those two nodes were 6% of a
//! tiny.en transcription (`perf`, the bench recording: 4.9% GELU, 1.5% bias adds); here they
//! are one pass over the activations, eight or sixteen values per instruction. Same formula
//! as ggml (the tanh form of GELU), computed in f32 without the f16 rounding.
//!
//! The wiring: `services/speech/whisper-cpp/patch.cmake` replaces the encoder's
//! `ggml_gelu(ggml_add(x, bias))` pairs with a ggml custom-op node calling
//! [`mmc_bias_gelu`] (when both are f32; otherwise upstream's two nodes stay).

use std::sync::atomic::{AtomicU64, Ordering};

use mmc_fastmath::exp_fast;

/// GELU nodes computed here since start (task 0 counts each once).
static NODES: AtomicU64 = AtomicU64::new(0);

/// Encoder bias + GELU nodes whisper.cpp has computed here since the process started (read
/// by tests to prove the patched graph calls it).
pub fn nodes() -> u64 {
    NODES.load(Ordering::Relaxed)
}

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, ggml's GELU, with `tanh` from one `e^-2|y|`
/// (always ≤ 0, the range `exp_fast` covers) so that a loop of it vectorises.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const CUBIC: f32 = 0.044_715;
    let y = SQRT_2_OVER_PI * x * (1.0 + CUBIC * x * x);
    let e = exp_fast(-2.0 * y.abs());
    let tanh = ((1.0 - e) / (1.0 + e)).copysign(y);
    0.5 * x * (1.0 + tanh)
}

/// One node, the share of task `ith` of `nth`: `out[r][c] = gelu(x[r][c] + b)` for the
/// `n_rows` rows of `n_cols` floats of `x` (`row_x` floats apart; `out`'s `row_out`), where
/// `b` is `bias[c]` (one bias per column: the MLP) or, with `bias_per_row` nonzero,
/// `bias[r]` (one per row: the convolutions, whose rows are channels).
///
/// # Safety
///
/// `x` and `out` hold `n_rows` rows of `n_cols` floats at their strides, `bias` `n_cols`
/// floats (`n_rows` with `bias_per_row`); `out` does not overlap `bias`, and is either `x`
/// itself (in place) or does not overlap it.
/// Tasks `0..nth` of one call may run at once: each writes only its own rows.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mmc_bias_gelu(
    x: *const f32,
    bias: *const f32,
    out: *mut f32,
    n_cols: i64,
    n_rows: i64,
    row_x: i64,
    row_out: i64,
    bias_per_row: i32,
    ith: i32,
    nth: i32,
) {
    if ith == 0 {
        NODES.fetch_add(1, Ordering::Relaxed);
    }
    let (n_cols, n_rows) = (n_cols.max(0) as usize, n_rows.max(0) as usize);
    let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
    // Contiguous row ranges per task: each streams its own part of memory.
    let rows = n_rows * ith / nth..n_rows * (ith + 1) / nth;
    for r in rows {
        // SAFETY: row r < n_rows of x and out, and the bias's length, are the contract above.
        unsafe {
            let (src, dst) = (x.offset(r as isize * row_x as isize), out.offset(r as isize * row_out as isize));
            let b = if bias_per_row != 0 { Bias::Row(*bias.add(r)) } else { Bias::Columns(std::slice::from_raw_parts(bias, n_cols)) };
            if std::ptr::eq(src, dst) {
                bias_gelu_in_place(std::slice::from_raw_parts_mut(dst, n_cols), b);
            } else {
                bias_gelu(std::slice::from_raw_parts(src, n_cols), std::slice::from_raw_parts_mut(dst, n_cols), b);
            }
        }
    }
}

/// The bias of one row: one value for all of it, or one per column.
#[derive(Clone, Copy)]
enum Bias<'a> {
    Row(f32),
    Columns(&'a [f32]),
}

fn bias_gelu(src: &[f32], dst: &mut [f32], bias: Bias) {
    match bias {
        Bias::Row(b) => dst.iter_mut().zip(src).for_each(|(o, &v)| *o = gelu(v + b)),
        Bias::Columns(b) => dst.iter_mut().zip(src).zip(b).for_each(|((o, &v), &b)| *o = gelu(v + b)),
    }
}

fn bias_gelu_in_place(row: &mut [f32], bias: Bias) {
    match bias {
        Bias::Row(b) => row.iter_mut().for_each(|v| *v = gelu(*v + b)),
        Bias::Columns(b) => row.iter_mut().zip(b).for_each(|(v, &b)| *v = gelu(*v + b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f64) -> f64 {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    }

    #[test]
    fn gelu_matches_the_tanh_formula_everywhere() {
        for i in -40_000..=40_000 {
            let x = i as f32 * 0.0005; // -20 ..= 20
            let (got, want) = (gelu(x), reference(f64::from(x)));
            assert!((f64::from(got) - want).abs() <= 2e-6 * want.abs().max(1.0), "x={x}: {got} vs {want}");
        }
        assert_eq!(gelu(-100.0), 0.0);
        assert_eq!(gelu(100.0), 100.0);
        assert_eq!(gelu(0.0), 0.0);
    }

    /// Both bias layouts, padded row strides, in place and not, one to three tasks.
    #[test]
    fn the_node_adds_the_bias_per_column_or_per_row_and_splits_rows_between_tasks() {
        let value = |i: usize| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 250.0 - 4.0;
        for (n_rows, n_cols, per_row, nth, in_place) in [(7usize, 33usize, false, 1usize, false), (10, 64, true, 3, false), (5, 17, false, 2, true)] {
            let stride = n_cols + 3;
            let x: Vec<f32> = (0..n_rows * stride).map(value).collect();
            let bias: Vec<f32> = (0..if per_row { n_rows } else { n_cols }).map(|i| value(i + 999)).collect();
            let mut out = if in_place { x.clone() } else { vec![f32::NAN; n_rows * stride] };
            let src = if in_place { out.as_ptr() } else { x.as_ptr() };
            for ith in 0..nth as i32 {
                // SAFETY: the buffers hold n_rows rows of `stride` floats and the bias its length.
                unsafe {
                    mmc_bias_gelu(
                        src,
                        bias.as_ptr(),
                        out.as_mut_ptr(),
                        n_cols as i64,
                        n_rows as i64,
                        stride as i64,
                        stride as i64,
                        per_row as i32,
                        ith,
                        nth as i32,
                    )
                };
            }
            for r in 0..n_rows {
                for c in 0..n_cols {
                    let b = if per_row { bias[r] } else { bias[c] };
                    let want = reference(f64::from(x[r * stride + c] + b));
                    let got = out[r * stride + c];
                    assert!((f64::from(got) - want).abs() <= 1e-5, "row {r} col {c}: {got} vs {want}");
                }
                for c in n_cols..stride {
                    let want = if in_place { x[r * stride + c] } else { f32::NAN };
                    assert!(out[r * stride + c].to_bits() == want.to_bits(), "padding of row {r} touched");
                }
            }
        }
    }
}
