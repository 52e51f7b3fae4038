//! The 8-bit weights `mmc models fetch` makes are ggml's own Q8_0: the converter's
//! quantizer (mmc-fetch, pure Rust, run at fetch time) must write the very bytes that
//! ggml's `ggml_quantize_chunk` (the code whisper.cpp's `quantize` tool runs, linked into
//! this service) writes for the same values, or whisper.cpp would read other numbers.

use whisper_rs::whisper_rs_sys as ggml;

/// Values of many scales (as in Whisper's projections), with an all-zero block, a
/// constant block, one huge outlier and values on the rounding edges.
fn weights(rows: usize, per_row: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut x: Vec<f32> = (0..rows * per_row).map(|i| next() * [0.001, 0.02, 0.3, 4.0][(i / per_row) % 4]).collect();
    x[..32].fill(0.0);
    x[32..64].fill(-0.125);
    x[70] = 900.0;
    for (i, v) in x[96..128].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) * 0.5 / 127.0 * 16.0; // multiples of half a step: round() ties
    }
    x
}

#[test]
fn the_converter_quantizes_exactly_as_ggml_does() {
    let (rows, per_row) = (12, 384);
    let x = weights(rows, per_row);
    let ours = mmc_fetch::convert::ct2_whisper::quantize_q8_0(&x);
    assert_eq!(ours.len(), rows * per_row / 32 * 34, "34 bytes per block of 32");
    let mut theirs = vec![0u8; ours.len()];
    // SAFETY: `x` holds rows * per_row values and `theirs` the Q8_0 size of as many, which
    // is what ggml writes; no importance matrix is passed (Q8_0 takes none).
    let written = unsafe {
        ggml::ggml_quantize_chunk(
            ggml::ggml_type_GGML_TYPE_Q8_0,
            x.as_ptr(),
            theirs.as_mut_ptr().cast(),
            0,
            rows as i64,
            per_row as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(written, ours.len());
    let first_difference = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "our Q8_0 differs from ggml's at byte {first_difference:?}");
}
