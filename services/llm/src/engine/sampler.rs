//! Token selection from logits: repetition penalty, then (for temperature > 0) top-k, top-p
//! and min-p on the model's own probabilities, then temperature, then a draw.
//!
//! The order and the meaning of each control follow llama.cpp's default sampler chain
//! (`penalties -> top_k -> top_p -> min_p -> temperature -> dist`), so settings tuned against
//! llama.cpp behave the same here. Draws use ChaCha8 seeded from the request's seed, so a
//! seed reproduces its output exactly (on the same model and build).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::fastmath::exp_fast;

/// Sampling controls; zero values mean "off", as in the protocol.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingConfig {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability mass reaches p; 0 or >= 1 = off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p * p(most likely)`; 0 = off.
    pub min_p: f32,
    /// llama.cpp's repetition penalty over the last [`REPEAT_LAST_N`] tokens; 0 or 1 = off.
    pub repetition_penalty: f32,
    /// Seed of the draws; `None` = from the operating system.
    pub seed: Option<u64>,
}

/// How many recent tokens the repetition penalty looks at (llama.cpp's `repeat_last_n`).
pub const REPEAT_LAST_N: usize = 64;

/// A sampler for one sequence.
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(config: SamplingConfig) -> Sampler {
        let rng = match config.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        Sampler { config, rng }
    }

    /// Picks the next token from `logits`. `history` is the sequence so far (for the
    /// repetition penalty); `allowed` says which ids a constraint permits (all if `None`).
    /// Returns `None` if no token is allowed.
    pub fn sample(&mut self, logits: &[f32], history: &[u32], allowed: Option<&dyn Fn(u32) -> bool>) -> Option<u32> {
        let penalty = self.config.repetition_penalty;
        if self.config.temperature <= 0.0 && (penalty <= 0.0 || penalty == 1.0) {
            // Greedy without penalty: the argmax, without copying the vocabulary (this runs
            // once per token of every sequence on the scheduler thread). Ties go to the
            // lowest id, as below.
            if allowed.is_none() {
                // Unconstrained: the largest finite logit in one vectorized pass, then its
                // first position.
                let max = max_finite(logits);
                if !max.is_finite() {
                    return None;
                }
                // The first block of 64 holding it (a branch-free test per block), then
                // its place there.
                let block = logits.chunks(64).position(|c| c.iter().fold(false, |hit, &l| hit | (l == max)))?;
                return logits[block * 64..].iter().position(|&l| l == max).map(|i| (block * 64 + i) as u32);
            }
            let mut best: Option<(u32, f32)> = None;
            for (i, &l) in logits.iter().enumerate() {
                if l.is_finite() && best.is_none_or(|b| l > b.1) && allowed.is_none_or(|f| f(i as u32)) {
                    best = Some((i as u32, l));
                }
            }
            return best.map(|b| b.0);
        }
        let mut logits = logits.to_vec();
        if penalty > 0.0 && penalty != 1.0 {
            let start = history.len().saturating_sub(REPEAT_LAST_N);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[start..] {
                if let Some(l) = logits.get_mut(t as usize) {
                    if seen.insert(t) {
                        *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
                    }
                }
            }
        }
        // Candidates: (id, logit) of allowed, finite logits.
        let mut cand: Vec<(u32, f32)> =
            logits.iter().enumerate().filter(|(i, l)| l.is_finite() && allowed.is_none_or(|f| f(*i as u32))).map(|(i, &l)| (i as u32, l)).collect();
        if cand.is_empty() {
            return None;
        }
        if self.config.temperature <= 0.0 {
            // Greedy; ties go to the lowest id, as with llama.cpp's argmax.
            let mut best = cand[0];
            for &c in &cand[1..] {
                if c.1 > best.1 {
                    best = c;
                }
            }
            return Some(best.0);
        }
        // Only the head of the distribution is ever sorted: top-k selects in linear time,
        // and top-p / min-p widen a sorted prefix until it is provably enough. (Sorting the
        // whole vocabulary every step costs milliseconds on 50k-token vocabularies.)
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if self.config.top_k > 0 && self.config.top_k < cand.len() {
            cand.select_nth_unstable_by(self.config.top_k - 1, by_logit);
            cand.truncate(self.config.top_k);
        }
        let use_top_p = self.config.top_p > 0.0 && self.config.top_p < 1.0;
        let use_min_p = self.config.min_p > 0.0;
        if use_top_p || use_min_p {
            // Probabilities at temperature 1 over all remaining candidates.
            let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
            let norm: f32 = cand.iter().map(|c| (c.1 - max).exp()).sum();
            let prob = |l: f32| (l - max).exp() / norm;
            let mut m = cand.len().min(64);
            let keep = loop {
                if m < cand.len() {
                    cand.select_nth_unstable_by(m - 1, by_logit);
                }
                cand[..m].sort_by(by_logit);
                let mut keep = None;
                let mut mass = 0.0;
                let floor = self.config.min_p * prob(cand[0].1);
                for (i, c) in cand[..m].iter().enumerate() {
                    let p = prob(c.1);
                    if use_min_p && p < floor {
                        keep = Some(i.max(1));
                        break;
                    }
                    mass += p;
                    if use_top_p && mass >= self.config.top_p {
                        keep = Some(i + 1);
                        break;
                    }
                }
                match keep {
                    Some(k) => break k,
                    None if m == cand.len() => break m,
                    None => m = (m * 4).min(cand.len()),
                }
            };
            cand.truncate(keep);
        }
        let t = self.config.temperature;
        let probs = softmax(cand.iter().map(|c| c.1 / t));
        let draw: f32 = self.rng.random();
        let mut acc = 0.0;
        for (c, p) in cand.iter().zip(&probs) {
            acc += p;
            if draw < acc {
                return Some(c.0);
            }
        }
        Some(cand[cand.len() - 1].0)
    }
}

/// The largest finite value (`-inf` if none), in 16 independent lanes so that it vectorizes
/// (a single running maximum is an ordered chain the compiler keeps scalar).
fn max_finite(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &l| if l.is_finite() { m.max(l) } else { m });
    for c in chunks {
        for (m, &l) in lanes.iter_mut().zip(c) {
            *m = if l.is_finite() { m.max(l) } else { *m };
        }
    }
    lanes.iter().fold(tail, |a, &b| a.max(b))
}

/// Log-probability of `token` under softmax(`logits`).
///
/// Runs for every generated token of every sequence on the scheduler thread, over the whole
/// vocabulary, so the exponentials are [`exp_fast`]'s (vectorized; libm's scalar `expf`
/// made this a sixth of a batched decode step).
pub fn logprob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0f32; 16];
    let chunks = logits.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&l| exp_fast(l - max)).sum();
    for c in chunks {
        for (acc, &l) in lanes.iter_mut().zip(c) {
            *acc += exp_fast(l - max);
        }
    }
    logits[token as usize] - max - (lanes.iter().sum::<f32>() + tail).ln()
}

fn softmax(logits: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ln of the probabilities 0.5, 0.25, 0.15, 0.07, 0.03 (ids 0..5).
    fn logits() -> Vec<f32> {
        [0.5f32, 0.25, 0.15, 0.07, 0.03].iter().map(|p| p.ln()).collect()
    }

    fn frequencies(config: SamplingConfig, n: usize) -> Vec<f64> {
        let mut s = Sampler::new(SamplingConfig { seed: Some(7), ..config });
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[s.sample(&logits(), &[], None).unwrap() as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    fn close(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 0.015, "frequencies {got:?}, expected {want:?}");
        }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingConfig::default());
        assert_eq!(s.sample(&logits(), &[], None), Some(0));
        // A vocabulary-sized row: ties go to the lowest id, non-finite logits never win,
        // and the same answer with and without a (permissive) constraint.
        let mut big = vec![-1.0f32; 49_155];
        big[3] = f32::INFINITY;
        big[7] = f32::NAN;
        big[40_000] = 2.5;
        big[49_154] = 2.5;
        assert_eq!(s.sample(&big, &[], None), Some(40_000));
        assert_eq!(s.sample(&big, &[], Some(&|_| true)), Some(40_000));
        assert_eq!(s.sample(&[f32::NAN, f32::NEG_INFINITY], &[], None), None);
    }

    #[test]
    fn temperature_one_draws_the_model_distribution() {
        close(&frequencies(SamplingConfig { temperature: 1.0, ..Default::default() }, 40_000), &[0.5, 0.25, 0.15, 0.07, 0.03]);
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        // p^(1/T), renormalised.
        let expect = |t: f64| {
            let w: Vec<f64> = [0.5f64, 0.25, 0.15, 0.07, 0.03].iter().map(|p| p.powf(1.0 / t)).collect();
            let s: f64 = w.iter().sum();
            w.iter().map(|x| x / s).collect::<Vec<_>>()
        };
        close(&frequencies(SamplingConfig { temperature: 0.5, ..Default::default() }, 40_000), &expect(0.5));
        close(&frequencies(SamplingConfig { temperature: 2.0, ..Default::default() }, 40_000), &expect(2.0));
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        // top_k = 2 keeps ids 0, 1: 2/3, 1/3.
        close(&frequencies(SamplingConfig { temperature: 1.0, top_k: 2, ..Default::default() }, 40_000), &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0, 0.0]);
        // top_p = 0.8 keeps the smallest prefix with mass >= 0.8: ids 0, 1, 2 (0.9).
        close(
            &frequencies(SamplingConfig { temperature: 1.0, top_p: 0.8, ..Default::default() }, 40_000),
            &[0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0, 0.0],
        );
        // min_p = 0.2 drops p < 0.1: ids 3, 4.
        close(
            &frequencies(SamplingConfig { temperature: 1.0, min_p: 0.2, ..Default::default() }, 40_000),
            &[0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0, 0.0],
        );
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let draw = |seed| {
            let mut s = Sampler::new(SamplingConfig { temperature: 1.0, seed: Some(seed), ..Default::default() });
            (0..64).map(|_| s.sample(&logits(), &[], None).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn constraint_and_penalty_apply() {
        let mut s = Sampler::new(SamplingConfig::default());
        assert_eq!(s.sample(&logits(), &[], Some(&|t| t >= 2)), Some(2));
        assert_eq!(s.sample(&logits(), &[], Some(&|_| false)), None);
        // Logits 2.0 and 1.5: a penalty of 2 on id 0 (2.0 -> 1.0) hands greedy to id 1.
        let mut s = Sampler::new(SamplingConfig { repetition_penalty: 2.0, ..Default::default() });
        assert_eq!(s.sample(&[2.0, 1.5], &[0], None), Some(1));
    }

    #[test]
    fn logprob_is_log_softmax() {
        assert!((logprob(&logits(), 1) - 0.25f32.ln()).abs() < 1e-5);
    }
}
