//! The encoder's matmuls on Intel AMX tiles (bf16 products, f32 sums), where the CPU has
//! them: `blas.rs` sends ggml's `cblas_sgemm` calls here ([`sgemm_a_bt`]) and
//! `attention.rs` its two products per head ([`PackedA`], [`PackedB`], [`Tiles`]).
//!
//! Why: after the attention, the mel spectrogram and the activations moved out of ggml's
//! way, `perf` put a third of a tiny.en transcription in `gemm`'s AVX-512 f32 kernels,
//! running the encoder's dense matmuls (window × width by width × width or 4 × width) at
//! about half the cores' f32 peak. Sapphire Rapids and later Xeons have AMX: eight tile
//! registers of 16 rows × 64 bytes and `tdpbf16ps`, which multiplies a 16 × 32 tile of
//! bf16 by a 32 × 16 one into 16 × 16 f32 sums in one instruction, many times the f32
//! FMA rate. Inputs are rounded to bf16 (8 bits of mantissa) and summed in f32: the
//! precision CTranslate2 and PyTorch use for bf16 inference, checked here against the
//! f64 definition and on the word error rate sets (docs/speech.md).
//!
//! Rust has no stable AMX intrinsics; the few instructions are written with `asm!`. The
//! kernel runs only when CPUID says the CPU has AMX-TILE and AMX-BF16 and Linux grants
//! the process the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); otherwise `blas.rs`
//! keeps `gemm`.

use std::arch::asm;
use std::sync::OnceLock;

/// Tile geometry: 16 rows of 64 bytes (32 bf16 or 16 f32).
const TILE_ROWS: usize = 16;
/// Depth of one tile product: 32 bf16 per row.
const TILE_K: usize = 32;
/// Each step computes a 32 × 32 block of C from two A tiles and two B tiles.
const BLOCK: usize = 2 * TILE_ROWS;

/// Whether AMX (tiles and bf16 products) is present and the OS lets this process use it.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var_os("MMC_SPEECH_NO_AMX").is_some() {
            return false;
        }
        // CPUID leaf 7 exists on every x86-64 CPU this binary runs on (x86-64-v3).
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        amx_bf16 && amx_tile && request_tile_permission()
    })
}

/// Asks Linux for the AMX tile data state (XTILEDATA, feature 18) for this process, which
/// its threads need before the first tile instruction.
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request only changes the process's permitted XSAVE
    // features; it returns nonzero where the kernel or CPU refuses.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

/// f32 to bf16, rounding to nearest even (inputs here are finite).
#[inline(always)]
fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// `C = A · Bᵀ`: `a` is `m` rows of `k` floats (`lda` apart), `b` is `n` rows of `k` floats
/// (`ldb` apart: the weights, one output column per row), `c` is `m` rows of `n` floats
/// (`ldc` apart), overwritten. Computed by `threads` threads (the caller included), each
/// a share of the rows of C.
///
/// # Safety
///
/// [`available`] returned true; the pointers hold matrices of those sizes and leading
/// dimensions; `c` is writable and overlaps neither input.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_a_bt(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    threads: usize,
) {
    // SAFETY: row `col` of b is its column `col` of Bᵀ, k floats (the caller's contract).
    let packed_b = unsafe { PackedB::new(n, k, b, ldb, 1) };
    let blocks = m.div_ceil(BLOCK);
    let threads = threads.clamp(1, blocks);
    let (a, c) = (SendPtr(a as *mut f32), SendPtr(c));
    let work = |part: usize| {
        let rows = (blocks * part / threads * BLOCK).min(m)..(blocks * (part + 1) / threads * BLOCK).min(m);
        if rows.is_empty() {
            return;
        }
        // SAFETY: rows `rows` of a hold k floats each (the caller's contract).
        let packed_a = unsafe { PackedA::new(rows.len(), k, a.get().add(rows.start * lda), lda, 1.0) };
        let _tiles = Tiles::configure();
        // SAFETY: each part writes only its own rows of C (inside C by the contract).
        unsafe { packed_a.times(&packed_b, c.get().add(rows.start * ldc), ldc) };
    };
    if threads == 1 {
        work(0);
    } else {
        std::thread::scope(|s| {
            for part in 1..threads {
                s.spawn(move || work(part));
            }
            work(0);
        });
    }
}

/// A raw pointer that scoped threads may share (each writes disjoint rows).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only as above: disjoint writes, reads of inputs nobody writes.
unsafe impl Send for SendPtr {}
// SAFETY: as Send: the threads only read the inputs and write disjoint rows of C.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so that closures capture the whole wrapper, not its field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// This thread's AMX tile configuration, released when dropped. Every tile instruction
/// below runs while one is alive on its thread.
pub struct Tiles(());

impl Tiles {
    /// Loads palette 1 with eight tiles of 16 rows × 64 bytes. Panics where AMX is not
    /// [`available`] (a tile instruction there would kill the process with SIGILL).
    pub fn configure() -> Self {
        assert!(available(), "AMX tiles used where the CPU or the OS does not provide them");
        let mut cfg = [0u8; 64];
        cfg[0] = 1; // palette
        for t in 0..8 {
            cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            cfg[48 + t] = TILE_ROWS as u8;
        }
        // SAFETY: a valid palette-1 configuration; AMX is available (asserted above).
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly)) };
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: releases this thread's tile state; no tile instruction follows.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// The left operand as AMX A tiles: rows of bf16, the depth padded to whole tiles with
/// zeros, the rows to whole 32-row blocks.
pub struct PackedA {
    data: Vec<u16>,
    rows: usize,
    k_pad: usize,
}

impl PackedA {
    /// `rows` rows of `k` floats, `lda` apart, each multiplied by `scale` on the way.
    ///
    /// # Safety
    ///
    /// `a` holds those rows.
    pub unsafe fn new(rows: usize, k: usize, a: *const f32, lda: usize, scale: f32) -> Self {
        let k_pad = k.div_ceil(TILE_K) * TILE_K;
        let mut data = vec![0u16; rows.div_ceil(BLOCK) * BLOCK * k_pad];
        for r in 0..rows {
            // SAFETY: row r of a holds k floats (the contract).
            let src = unsafe { std::slice::from_raw_parts(a.add(r * lda), k) };
            for (d, &v) in data[r * k_pad..][..k].iter_mut().zip(src) {
                *d = bf16(v * scale);
            }
        }
        Self { data, rows, k_pad }
    }

    /// From rows of floats already in memory order: `rows` rows of `k` (the scores).
    pub fn from_rows(rows: &[f32], k: usize) -> Self {
        let n_rows = rows.len() / k.max(1);
        // SAFETY: `rows` holds n_rows rows of k floats.
        unsafe { Self::new(n_rows, k, rows.as_ptr(), k, 1.0) }
    }

    /// `C = self · Bᵀ` for this operand's rows (C's first `rows` rows, `ldc` apart), every
    /// column of `b`.
    ///
    /// # Safety
    ///
    /// The depths agree (`b` packed with the same padded depth); `c` holds `self.rows` rows
    /// of `b.n` writable floats `ldc` apart. A [`Tiles`] is alive on this thread.
    pub unsafe fn times(&self, b: &PackedB, c: *mut f32, ldc: usize) {
        assert_eq!(self.k_pad, b.k_pad, "operands of different depths");
        let (k_pad, k_blocks, col_blocks) = (self.k_pad, self.k_pad / TILE_K, b.n.div_ceil(TILE_ROWS));
        let mut edge = [0f32; BLOCK * BLOCK];
        for mb in 0..self.rows.div_ceil(BLOCK) {
            for cb in (0..col_blocks).step_by(2) {
                let two_b = cb + 1 < col_blocks;
                // SAFETY: every tile load reads inside self.data (32 rows of k_pad at this
                // block) and b.data (tiles cb and cb + 1, or cb twice at the last odd block).
                unsafe {
                    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                    for kb in 0..k_blocks {
                        let a0 = self.data.as_ptr().add(mb * BLOCK * k_pad + kb * TILE_K);
                        let a1 = a0.add(TILE_ROWS * k_pad);
                        let b0 = b.data.as_ptr().add((cb * k_blocks + kb) * TILE_ROWS * TILE_K);
                        let b1 = if two_b { b.data.as_ptr().add(((cb + 1) * k_blocks + kb) * TILE_ROWS * TILE_K) } else { b0 };
                        asm!(
                            "tileloadd tmm4, [{a0} + {sa}]",
                            "tileloadd tmm5, [{a1} + {sa}]",
                            "tileloadd tmm6, [{b0} + {sb}]",
                            "tileloadd tmm7, [{b1} + {sb}]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            "tdpbf16ps tmm2, tmm5, tmm6",
                            "tdpbf16ps tmm3, tmm5, tmm7",
                            a0 = in(reg) a0,
                            a1 = in(reg) a1,
                            b0 = in(reg) b0,
                            b1 = in(reg) b1,
                            sa = in(reg) k_pad * 2,
                            sb = in(reg) TILE_K * 2,
                            options(nostack, readonly),
                        );
                    }
                    // C's 32 x 32 block: tmm0 | tmm1 over tmm2 | tmm3.
                    let e = edge.as_mut_ptr();
                    asm!(
                        "tilestored [{e0} + {s}], tmm0",
                        "tilestored [{e1} + {s}], tmm1",
                        "tilestored [{e2} + {s}], tmm2",
                        "tilestored [{e3} + {s}], tmm3",
                        e0 = in(reg) e,
                        e1 = in(reg) e.add(TILE_ROWS),
                        e2 = in(reg) e.add(TILE_ROWS * BLOCK),
                        e3 = in(reg) e.add(TILE_ROWS * BLOCK + TILE_ROWS),
                        s = in(reg) BLOCK * 4,
                        options(nostack),
                    );
                }
                let (r0, c0) = (mb * BLOCK, cb * TILE_ROWS);
                let (m_valid, n_valid) = ((self.rows - r0).min(BLOCK), (b.n - c0).min(if two_b { BLOCK } else { TILE_ROWS }));
                for i in 0..m_valid {
                    // SAFETY: row r0 + i < self.rows, columns c0 .. c0 + n_valid <= b.n of C.
                    let dst = unsafe { std::slice::from_raw_parts_mut(c.add((r0 + i) * ldc + c0), n_valid) };
                    dst.copy_from_slice(&edge[i * BLOCK..][..n_valid]);
                }
            }
        }
    }
}

/// The right operand as AMX B tiles: for each 16 columns of C and each 32 of depth, one
/// 1 KB tile whose row `r` holds, for each of the 16 columns, the bf16 pair at depths
/// `2r` and `2r + 1` ("VNNI" order). Zero past the last column and the depth.
pub struct PackedB {
    data: Vec<u16>,
    n: usize,
    k_pad: usize,
}

impl PackedB {
    /// `n` columns of depth `k`: element `p` of column `j` is at `b + j * col_stride +
    /// p * depth_stride` (weights stored one column per row: `(ldb, 1)`; a matrix `k × n`
    /// stored by rows: `(1, ld)`).
    ///
    /// # Safety
    ///
    /// Every such element is readable.
    pub unsafe fn new(n: usize, k: usize, b: *const f32, col_stride: usize, depth_stride: usize) -> Self {
        let k_pad = k.div_ceil(TILE_K) * TILE_K;
        let k_blocks = k_pad / TILE_K;
        let mut data = vec![0u16; n.div_ceil(TILE_ROWS) * k_blocks * TILE_ROWS * TILE_K];
        for col in 0..n {
            let (cb, j) = (col / TILE_ROWS, col % TILE_ROWS);
            for p in 0..k {
                // SAFETY: the contract.
                let v = unsafe { *b.add(col * col_stride + p * depth_stride) };
                let (kb, kk) = (p / TILE_K, p % TILE_K);
                data[((cb * k_blocks + kb) * TILE_ROWS + kk / 2) * TILE_K + j * 2 + kk % 2] = bf16(v);
            }
        }
        Self { data, n, k_pad }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the f64 definition, for sizes that are and are not whole tiles, padded
    /// leading dimensions and one to three threads. bf16 keeps 8 bits of each input, so
    /// the bound is relative to the sum of |a||b| (what rounding can move).
    #[test]
    fn amx_products_match_the_definition_to_bf16_precision() {
        if !available() {
            eprintln!("no AMX here (or the OS refused it): the kernel is not exercised");
            return;
        }
        let value = |i: usize| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 1000.0 - 1.0;
        for (m, n, k, threads) in [(32usize, 32usize, 32usize, 1usize), (70, 48, 100, 2), (1500, 384, 384, 2), (33, 17, 1536, 3), (5, 40, 64, 2)] {
            let (lda, ldb, ldc) = (k + 3, k + 1, n + 2);
            let a: Vec<f32> = (0..m * lda).map(value).collect();
            let b: Vec<f32> = (0..n * ldb).map(|i| value(i + 12_345)).collect();
            let mut c = vec![f32::NAN; m * ldc];
            // SAFETY: available() above; the buffers have these sizes and strides.
            unsafe { sgemm_a_bt(m, n, k, a.as_ptr(), lda, b.as_ptr(), ldb, c.as_mut_ptr(), ldc, threads) };
            for i in 0..m {
                for j in 0..n {
                    let (mut want, mut scale) = (0f64, 0f64);
                    for p in 0..k {
                        let (x, y) = (f64::from(a[i * lda + p]), f64::from(b[j * ldb + p]));
                        want += x * y;
                        scale += (x * y).abs();
                    }
                    let got = f64::from(c[i * ldc + j]);
                    assert!((got - want).abs() <= 1e-2 * scale + 1e-6, "{m}x{n}x{k} at ({i},{j}): {got} vs {want}");
                }
                for j in n..ldc {
                    assert!(c[i * ldc + j].is_nan(), "{m}x{n}x{k}: padding of row {i} written");
                }
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even (1.0) wins.
        assert_eq!(bf16(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16(1.0 + 3.0 / 512.0), 0x3F81);
        assert_eq!(bf16(-2.5), 0xC020);
    }
}
