//! Elementwise math that must vectorize: it runs over whole vocabularies (log-probabilities)
//! and attention rows, where libm's scalar `expf` showed up in profiles. Shared by the text
//! generation engine (`mmc-llm`: sampler, attention) and the speech service's fused encoder
//! attention (`mmc-speech`, `engine/attention.rs`).

/// `e^x` for `x <= 0` to about 2e-7 relative (Cephes' `expf` polynomial after reducing by
/// powers of two), written so that the compiler vectorizes a loop of it (no libm call).
/// Below -87 it returns about 1e-38 or 0, where a sum of exponentials no longer sees it.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Round to nearest by adding 1.5 * 2^23 (no libm call, so the loop vectorizes).
    const ROUND: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from n's bits in `t`'s mantissa (integer arithmetic only; wrapping, so that the
    // dev profile's overflow checks do not stop vectorization).
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    e * f32::from_bits(biased << 23)
}

#[cfg(test)]
mod tests {
    use super::exp_fast;

    #[test]
    fn fast_exp_matches_libm() {
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.00435;
            let (ours, libm) = (exp_fast(x), x.exp());
            assert!((ours - libm).abs() <= 4e-7 * libm + 1e-38, "x={x}: {ours} vs {libm}");
        }
        assert!(exp_fast(-200.0) < 1e-37);
    }
}
