//! The BLAS that whisper.cpp's encoder multiplies with: `cblas_sgemm`, in Rust, by the
//! `gemm` crate.
//!
//! Why: Whisper's encoder multiplies matrices of hundreds to 1 500 rows (one per 20 ms of
//! audio) by every weight matrix. ggml's own CPU matmul does that as 8-bit dot products
//! (quantizing the activations first) and was measured to spend about 590 ms per 30 s
//! window of tiny.en on 2 threads here; a blocked f32 GEMM does the same work in about
//! 400 ms, with the same transcript (docs/speech.md). ggml has a backend for exactly this
//! (`GGML_BLAS=ON`: every matmul with at least 32 rows, columns and depth goes to
//! `cblas_sgemm`, the weights dequantized to f32 on the way), but a system BLAS would be
//! one more thing to install and ship, and the ones measured did not pay: Debian's OpenBLAS
//! 0.3.21 made the encoder slower, Intel's MKL is a 220 MB wheel. The `gemm` crate (already
//! candle's f32 GEMM) chooses its kernels at run time from the CPU, so the binary stays
//! portable.
//!
//! The wiring: `.cargo/config.toml` builds whisper.cpp with `GGML_BLAS=ON` and points CMake
//! at `services/speech/whisper-cpp/` (a `FindBLAS.cmake` that finds "no library" and a
//! `cblas.h` that declares the two functions below); `build.rs` links ggml's BLAS backend;
//! these two functions are what it calls. The decoder's one-token steps stay on ggml's own
//! kernels (too few rows for the BLAS backend).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// Threads for this thread's next sgemm calls: ggml sets it (to the decode's thread
    /// count) before each matmul, on the thread that then calls `cblas_sgemm`, so two
    /// states decoding at once each keep their own.
    static THREADS: Cell<usize> = const { Cell::new(1) };
}

/// sgemm calls served since start (read by tests to prove the encoder goes through here).
static CALLS: AtomicU64 = AtomicU64::new(0);

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

/// Of those, the ones computed on AMX tiles (`amx.rs`).
static AMX_CALLS: AtomicU64 = AtomicU64::new(0);

/// Matrix multiplications whisper.cpp has sent here since the process started.
pub fn sgemm_calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

/// Of [`sgemm_calls`], those computed on AMX tiles (0 on CPUs without AMX).
pub fn amx_calls() -> u64 {
    AMX_CALLS.load(Ordering::Relaxed)
}

/// OpenBLAS's thread setting, which ggml's BLAS backend calls before each matmul.
#[unsafe(no_mangle)]
pub extern "C" fn openblas_set_num_threads(threads: i32) {
    THREADS.with(|t| t.set(threads.max(1) as usize));
}

/// `C = alpha * op(A) * op(B) + beta * C` (CBLAS), with `op` a transpose or not, in row- or
/// column-major order, single precision.
///
/// # Safety
///
/// The CBLAS contract: `a`, `b` and `c` point to matrices of the given sizes and leading
/// dimensions (`c` writable and not overlapping the others).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cblas_sgemm(
    order: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    a: *const f32,
    lda: i32,
    b: *const f32,
    ldb: i32,
    beta: f32,
    c: *mut f32,
    ldc: i32,
) {
    CALLS.fetch_add(1, Ordering::Relaxed);
    if m <= 0 || n <= 0 {
        return;
    }
    // (row stride, column stride) of a stored matrix, then of its transpose if asked.
    let strides = |ld: i32| if order == ROW_MAJOR { (ld as isize, 1) } else { (1, ld as isize) };
    let op = |(rs, cs): (isize, isize), trans: i32| if trans == NO_TRANS { (rs, cs) } else { (cs, rs) };
    let (a_rs, a_cs) = op(strides(lda), trans_a);
    let (b_rs, b_cs) = op(strides(ldb), trans_b);
    let (c_rs, c_cs) = strides(ldc);
    let threads = THREADS.with(|t| t.get());
    // ggml's BLAS backend asks for C = A * B^T (activations times weights stored one output
    // per row), row-major, nothing scaled: on CPUs with AMX that goes to its tiles (amx.rs).
    #[cfg(target_arch = "x86_64")]
    if order == ROW_MAJOR && trans_a == NO_TRANS && trans_b == TRANS && alpha == 1.0 && beta == 0.0 && m >= 16 && n >= 16 && super::amx::available() {
        AMX_CALLS.fetch_add(1, Ordering::Relaxed);
        let (m, n, k) = (m as usize, n as usize, k.max(0) as usize);
        // SAFETY: AMX is available (checked); the CBLAS contract gives the sizes and strides.
        unsafe { super::amx::sgemm_a_bt(m, n, k, a, lda as usize, b, ldb as usize, c, ldc as usize, threads) };
        return;
    }
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the caller upholds the CBLAS contract (# Safety above), which is what `gemm`
    // needs: valid m x k, k x n and m x n matrices at these strides. `gemm` computes
    // `dst = alpha * dst + beta * lhs * rhs`, reading dst only when asked: our beta is its
    // alpha and the other way round.
    unsafe {
        gemm::gemm(
            m as usize,
            n as usize,
            k.max(0) as usize,
            c,
            c_cs,
            c_rs,
            beta != 0.0,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every order and transpose, against a plain triple loop.
    #[test]
    fn sgemm_matches_the_definition() {
        let (m, n, k) = (37usize, 45usize, 53usize);
        let value = |i: usize| ((i * 7919) % 101) as f32 / 50.0 - 1.0;
        for order in [ROW_MAJOR, 102] {
            for (ta, tb) in [(111, 111), (111, 112), (112, 111), (112, 112)] {
                for threads in [1, 2] {
                    // Logical op(A) is m x k, op(B) is k x n; store A and B as asked.
                    let at = |i: usize, p: usize| value(i * k + p);
                    let bt = |p: usize, j: usize| value(1000 + p * n + j);
                    let (ar, ac) = if ta == NO_TRANS { (m, k) } else { (k, m) };
                    let (br, bc) = if tb == NO_TRANS { (k, n) } else { (n, k) };
                    let store = |rows: usize, cols: usize, f: &dyn Fn(usize, usize) -> f32| {
                        let mut v = vec![0.0f32; rows * cols];
                        for r in 0..rows {
                            for col in 0..cols {
                                let idx = if order == ROW_MAJOR { r * cols + col } else { col * rows + r };
                                v[idx] = f(r, col);
                            }
                        }
                        (v, if order == ROW_MAJOR { cols } else { rows } as i32)
                    };
                    let (a, lda) = store(ar, ac, &|r, col| if ta == NO_TRANS { at(r, col) } else { at(col, r) });
                    let (b, ldb) = store(br, bc, &|r, col| if tb == NO_TRANS { bt(r, col) } else { bt(col, r) });
                    let (mut c, ldc) = store(m, n, &|r, col| value(r + col));
                    let c0 = c.clone();
                    openblas_set_num_threads(threads);
                    // SAFETY: the buffers have exactly the sizes and leading dimensions given.
                    unsafe {
                        cblas_sgemm(order, ta, tb, m as i32, n as i32, k as i32, 0.5, a.as_ptr(), lda, b.as_ptr(), ldb, 2.0, c.as_mut_ptr(), ldc)
                    };
                    for i in 0..m {
                        for j in 0..n {
                            let idx = if order == ROW_MAJOR { i * n + j } else { j * m + i };
                            let want = 0.5 * (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f32>() + 2.0 * c0[idx];
                            assert!(
                                (c[idx] - want).abs() < 1e-3,
                                "order {order} trans {ta}/{tb} threads {threads} at ({i},{j}): {} vs {want}",
                                c[idx]
                            );
                        }
                    }
                }
            }
        }
        openblas_set_num_threads(1);
    }
}
