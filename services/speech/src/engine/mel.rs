//! Whisper's log-mel spectrogram frames, computed for whisper.cpp.
//!
//! Why: whisper.cpp computes each 400-sample frame's spectrum with its own recursive FFT,
//! which splits 400 = 16 × 25 and ends in a naive 25-point DFT (one table lookup and a
//! modulo per term), then projects the 201 power bins on each of the 80 (or 128) mel
//! filters by a full dot product, although each filter is nonzero on a few bins only. After
//! the encoder's costs were cut (`blas.rs`, `attention.rs`) that was 8% of a tiny.en
//! transcription (`perf`, the bench recording). Here each frame goes through realfft's
//! planned real FFT and each filter is summed over its nonzero bins only: the same
//! definition (same Hann window and filters, read from whisper.cpp, products summed in
//! f64), a small fraction of the work.
//!
//! The wiring: `services/speech/whisper-cpp/patch.cmake` puts a call to [`mmc_log_mel`]
//! before the frame loop of whisper.cpp's `log_mel_spectrogram` (CPU builds), which then
//! runs only if the call declines (a frame size other than Whisper's); whisper.cpp keeps
//! everything around it (the reflect and 30 s zero padding, the frame
//! count, the clamp to 8 below the maximum and the scaling), so what the decoder sees is
//! built as before.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use realfft::{num_complex::Complex, RealFftPlanner, RealToComplex};

/// Whisper's frame: 25 ms at 16 kHz. whisper.cpp supports no other.
const FRAME: usize = 400;

/// Frames computed here since start (read by tests to prove the patched build calls it).
static FRAMES: AtomicU64 = AtomicU64::new(0);

/// Spectrogram frames whisper.cpp has had computed here since the process started.
pub fn frames() -> u64 {
    FRAMES.load(Ordering::Relaxed)
}

/// The planned 400-point real FFT (planning costs far more than one transform).
fn plan() -> &'static Arc<dyn RealToComplex<f32>> {
    static PLAN: OnceLock<Arc<dyn RealToComplex<f32>>> = OnceLock::new();
    PLAN.get_or_init(|| RealFftPlanner::<f32>::new().plan_fft_forward(FRAME))
}

/// whisper.cpp's frame loop: column `i` of `out` (`n_mel` rows of `n_len` floats) gets
/// `log10(max(mel energy, 1e-10))` of the frame starting at sample `i * frame_step` of
/// `samples`, for every frame that starts within its `n_samples` samples (the audio and the
/// reflect padding before it); later frames, all padding, get `log10(1e-10)`. `hann` is
/// `frame_size` floats, `filters` `n_mel` rows of `n_fft = frame_size / 2 + 1` floats.
/// Returns 0, or -1 (nothing written) for a frame size other than Whisper's 400: then
/// whisper.cpp computes the frames itself, as the patch keeps its code for that case.
///
/// # Safety
///
/// `samples` holds at least `n_samples` floats, `hann` `frame_size`, `filters`
/// `n_mel * n_fft`, and `out` is `n_mel * n_len` writable floats not overlapping the others.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mmc_log_mel(
    samples: *const f32,
    n_samples: i32,
    frame_size: i32,
    frame_step: i32,
    hann: *const f32,
    filters: *const f32,
    n_fft: i32,
    n_mel: i32,
    n_len: i32,
    out: *mut f32,
) -> i32 {
    let (n_fft, n_mel, n_len) = (n_fft.max(0) as usize, n_mel.max(0) as usize, n_len.max(0) as usize);
    if frame_size as usize != FRAME || n_fft != FRAME / 2 + 1 || frame_step <= 0 {
        return -1;
    }
    // SAFETY: the lengths are the caller's contract above.
    let (samples, hann, filters, out) = unsafe {
        (
            std::slice::from_raw_parts(samples, n_samples.max(0) as usize),
            std::slice::from_raw_parts(hann, FRAME),
            std::slice::from_raw_parts(filters, n_mel * n_fft),
            std::slice::from_raw_parts_mut(out, n_mel * n_len),
        )
    };
    let computed = log_mel_frames(samples, frame_step as usize, hann, &MelFilters::new(filters, n_fft), n_len, out);
    FRAMES.fetch_add(computed as u64, Ordering::Relaxed);
    0
}

/// The mel filter bank with each filter's nonzero span: summing a filter over its span
/// equals summing it over all bins (the rest are exact zeros) and skips most of them.
pub struct MelFilters<'a> {
    weights: &'a [f32],
    n_fft: usize,
    spans: Vec<Range<usize>>,
}

impl<'a> MelFilters<'a> {
    /// `weights`: filters of `n_fft` bins each, one after another.
    pub fn new(weights: &'a [f32], n_fft: usize) -> Self {
        let spans = weights
            .chunks_exact(n_fft.max(1))
            .map(|filter| match filter.iter().position(|&w| w != 0.0) {
                Some(first) => first..filter.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1),
                None => 0..0,
            })
            .collect();
        Self { weights, n_fft, spans }
    }

    fn bands(&self) -> usize {
        self.spans.len()
    }

    /// `log10(max(Σ power[k] · filter[band][k], 1e-10))`, summed in f64 like whisper.cpp.
    fn log_energy(&self, band: usize, power: &[f32]) -> f32 {
        let span = self.spans[band].clone();
        let filter = &self.weights[band * self.n_fft..][span.clone()];
        let sum: f64 = power[span].iter().zip(filter).map(|(&p, &w)| f64::from(p * w)).sum();
        sum.max(1e-10).log10() as f32
    }
}

/// The frame loop of [`mmc_log_mel`] on slices; returns how many frames were transformed
/// (the rest are padding).
pub fn log_mel_frames(samples: &[f32], frame_step: usize, hann: &[f32], filters: &MelFilters, n_len: usize, out: &mut [f32]) -> usize {
    let fft = plan();
    let mut frame = vec![0f32; FRAME];
    let mut spectrum = vec![Complex::default(); FRAME / 2 + 1];
    let mut scratch = vec![Complex::default(); fft.get_scratch_len()];
    let mut power = vec![0f32; FRAME / 2 + 1];
    // whisper.cpp transforms frames 0 ..= n_samples / frame_step (a frame may start at the
    // last sample or just past it: then it is all zeros, like its padding).
    let computed = (samples.len() / frame_step + 1).min(n_len);
    for i in 0..computed {
        let start = i * frame_step;
        let data = &samples[start.min(samples.len())..(start + FRAME).min(samples.len())];
        for ((f, &s), &w) in frame.iter_mut().zip(data).zip(hann) {
            *f = w * s;
        }
        frame[data.len()..].fill(0.0);
        // realfft only fails on wrongly sized buffers, which these are not.
        fft.process_with_scratch(&mut frame, &mut spectrum, &mut scratch).expect("buffers sized for the plan");
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.re * c.re + c.im * c.im;
        }
        for band in 0..filters.bands() {
            out[band * n_len + i] = filters.log_energy(band, &power);
        }
    }
    let silence = (1e-10f64).log10() as f32;
    for band in 0..filters.bands() {
        out[band * n_len + computed..(band + 1) * n_len].fill(silence);
    }
    computed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whisper's periodic Hann window, as whisper.cpp fills it.
    fn hann() -> Vec<f32> {
        (0..FRAME).map(|i| 0.5 * (1.0 - (2.0 * std::f32::consts::PI * i as f32 / FRAME as f32).cos())).collect()
    }

    /// Triangular filters over a few bins each, zero elsewhere, like the slaney bank.
    fn filters(n_mel: usize) -> Vec<f32> {
        let n_fft = FRAME / 2 + 1;
        let mut w = vec![0f32; n_mel * n_fft];
        for band in 0..n_mel {
            let (lo, width) = (1 + band * 2, 3 + band / 4);
            for k in lo..(lo + 2 * width).min(n_fft) {
                let x = (k - lo) as f32 / width as f32;
                w[band * n_fft + k] = 0.01 * if x <= 1.0 { x } else { 2.0 - x };
            }
        }
        w
    }

    /// The definition in f64: a direct DFT of the windowed frame, |X|², the filter sums
    /// over every bin, log10 with the floor.
    fn reference(samples: &[f32], step: usize, hann: &[f32], weights: &[f32], n_mel: usize, n_len: usize) -> Vec<f32> {
        let n_fft = FRAME / 2 + 1;
        let mut out = vec![0f32; n_mel * n_len];
        for i in 0..n_len {
            let x: Vec<f64> = (0..FRAME).map(|j| samples.get(i * step + j).map_or(0.0, |&s| f64::from(s) * f64::from(hann[j]))).collect();
            let power: Vec<f64> = (0..n_fft)
                .map(|k| {
                    let (mut re, mut im) = (0.0f64, 0.0f64);
                    for (n, &v) in x.iter().enumerate() {
                        let t = 2.0 * std::f64::consts::PI * (k * n) as f64 / FRAME as f64;
                        re += v * t.cos();
                        im -= v * t.sin();
                    }
                    re * re + im * im
                })
                .collect();
            for band in 0..n_mel {
                let sum: f64 = (0..n_fft).map(|k| power[k] * f64::from(weights[band * n_fft + k])).sum();
                out[band * n_len + i] = sum.max(1e-10).log10() as f32;
            }
        }
        out
    }

    #[test]
    fn frames_match_the_definition_and_padding_frames_are_silence() {
        let step = 160;
        // A chirp plus a little noise-like term, 0.3 s, then the frame grid runs past it.
        let samples: Vec<f32> = (0..4_800)
            .map(|n| {
                let t = n as f32 / 16_000.0;
                0.4 * (2.0 * std::f32::consts::PI * (200.0 + 3_000.0 * t) * t).sin() + 0.01 * (((n * 7_919) % 97) as f32 / 97.0 - 0.5)
            })
            .collect();
        let (hann, n_mel) = (hann(), 80);
        let weights = filters(n_mel);
        let n_len = samples.len() / step + 1 + 5;
        let mut out = vec![f32::NAN; n_mel * n_len];
        // SAFETY: every buffer is the size the contract asks for.
        let rc = unsafe {
            mmc_log_mel(
                samples.as_ptr(),
                samples.len() as i32,
                FRAME as i32,
                step as i32,
                hann.as_ptr(),
                weights.as_ptr(),
                (FRAME / 2 + 1) as i32,
                n_mel as i32,
                n_len as i32,
                out.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        let computed = samples.len() / step + 1;
        let want = reference(&samples, step, &hann, &weights, n_mel, computed);
        for band in 0..n_mel {
            for i in 0..computed {
                let (got, want) = (out[band * n_len + i], want[band * computed + i]);
                // log10 units: 1e-4 is a 0.02% difference in energy (f32 FFT against f64).
                assert!((got - want).abs() < 1e-4, "band {band} frame {i}: {got} vs {want}");
            }
            for i in computed..n_len {
                assert_eq!(out[band * n_len + i], -10.0, "padding frame {i} of band {band}");
            }
        }
    }

    #[test]
    fn only_whispers_frame_size_is_accepted() {
        let mut out = vec![0f32; 10];
        let x = [0f32; 512];
        // SAFETY: nothing is read or written for a refused frame size.
        let rc = unsafe { mmc_log_mel(x.as_ptr(), 512, 512, 160, x.as_ptr(), x.as_ptr(), 257, 1, 10, out.as_mut_ptr()) };
        assert_eq!(rc, -1);
        assert!(out.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn each_filter_is_summed_over_its_nonzero_bins() {
        let weights = [0.0, 0.5, 1.0, 0.0, 0.0, /* second */ 0.0, 0.0, 0.0, 0.0, 0.0, /* third */ 2.0, 0.0, 0.0, 0.0, 3.0];
        let f = MelFilters::new(&weights, 5);
        assert_eq!(f.spans, vec![1..3, 0..0, 0..5]);
        let power = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((f.log_energy(0, &power) - 4.0f32.log10()).abs() < 1e-6);
        assert_eq!(f.log_energy(1, &power), -10.0);
        assert!((f.log_energy(2, &power) - 17.0f32.log10()).abs() < 1e-6);
    }
}
