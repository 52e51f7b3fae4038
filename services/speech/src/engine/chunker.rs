//! Voice-activity-based chunking of long recordings.
//!
//! Whisper sees at most 30 s at a time. Cutting a recording blindly every 30 s splits words
//! and sentences at the seams; feeding it silence makes it invent text ("Thank you.").
//! So the stream of 16 kHz samples is cut into chunks of at most 30 s at the quietest
//! 200 ms stretch between 15 s and 30 s (a pause between phrases), and chunks with no
//! stretch above the speech threshold are marked silent and never reach the model.
//!
//! Memory stays bounded: at most one chunk (30 s = 480,000 samples) is held.

/// Whisper's input rate.
const RATE: usize = super::audio::SAMPLE_RATE as usize;
/// Energy frames of 10 ms.
const FRAME: usize = RATE / 100;
/// Pause detection looks at 200 ms windows (20 frames).
const WINDOW_FRAMES: usize = 20;

/// Where to cut and what counts as speech.
#[derive(Debug, Clone, Copy)]
pub struct ChunkerConfig {
    /// Longest chunk (Whisper's window): 30 s.
    pub max_samples: usize,
    /// Shortest chunk cut at a pause (later pauses are preferred up to `max_samples`).
    pub min_samples: usize,
    /// RMS level (full scale = 1.0) a 200 ms window must exceed to count as speech:
    /// 0.003 is about -50 dBFS, well under quiet speech and over digital or room silence.
    pub speech_rms: f32,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig { max_samples: 30 * RATE, min_samples: 15 * RATE, speech_rms: 0.003 }
    }
}

/// A piece of the recording ready for the model.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Start of the chunk in the recording, in 16 kHz samples.
    pub offset_samples: u64,
    /// The samples.
    pub samples: Vec<f32>,
    /// Whether any 200 ms window in it reaches the speech level.
    pub has_speech: bool,
}

impl Chunk {
    /// Start of the chunk in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        (self.offset_samples * 1000 / RATE as u64) as i64
    }
    /// Length of the chunk in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        (self.samples.len() * 1000 / RATE) as i64
    }
}

/// Accumulates samples and hands out chunks cut at pauses.
pub struct Chunker {
    config: ChunkerConfig,
    buffer: Vec<f32>,
    offset: u64,
}

impl Chunker {
    pub fn new(config: ChunkerConfig) -> Self {
        let config = ChunkerConfig { min_samples: config.min_samples.min(config.max_samples), ..config };
        Chunker { config, buffer: Vec::with_capacity(config.max_samples), offset: 0 }
    }

    /// Adds samples; every chunk completed by them is passed to `emit`, in order.
    pub fn push<E>(&mut self, mut samples: &[f32], emit: &mut dyn FnMut(Chunk) -> Result<(), E>) -> Result<(), E> {
        while !samples.is_empty() {
            let room = self.config.max_samples - self.buffer.len();
            let take = room.min(samples.len());
            self.buffer.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.buffer.len() == self.config.max_samples {
                let cut = self.cut_point();
                let rest = self.buffer.split_off(cut);
                let chunk = std::mem::replace(&mut self.buffer, rest);
                self.emit(chunk, emit)?;
            }
        }
        Ok(())
    }

    /// Emits what is left.
    pub fn finish<E>(mut self, emit: &mut dyn FnMut(Chunk) -> Result<(), E>) -> Result<(), E> {
        if !self.buffer.is_empty() {
            let chunk = std::mem::take(&mut self.buffer);
            self.emit(chunk, emit)?;
        }
        Ok(())
    }

    fn emit<E>(&mut self, samples: Vec<f32>, emit: &mut dyn FnMut(Chunk) -> Result<(), E>) -> Result<(), E> {
        let has_speech = window_energies(&samples).iter().any(|&e| rms(e, WINDOW_FRAMES * FRAME) > self.config.speech_rms);
        let offset = self.offset;
        self.offset += samples.len() as u64;
        emit(Chunk { offset_samples: offset, samples, has_speech })
    }

    /// Where to cut: the last pause (a 200 ms window under the speech level) that starts
    /// between `min_samples` and the end, so chunks are as long as the pauses allow (every
    /// chunk costs one 30 s encoder pass); without a pause, the middle of the quietest
    /// window.
    fn cut_point(&self) -> usize {
        let energies = window_energies(&self.buffer);
        let first = self.config.min_samples / FRAME;
        let silent = |e: f64| rms(e, WINDOW_FRAMES * FRAME) <= self.config.speech_rms;
        let candidates = || energies.iter().enumerate().skip(first);
        let cut = match candidates().rfind(|(_, &e)| silent(e)) {
            Some((w, _)) => (w + WINDOW_FRAMES / 2) * FRAME,
            None => {
                let mut best = (f64::INFINITY, self.buffer.len());
                for (w, &e) in candidates() {
                    if e < best.0 * 0.999 {
                        best = (e, (w + WINDOW_FRAMES / 2) * FRAME);
                    }
                }
                best.1
            }
        };
        cut.clamp(FRAME, self.buffer.len())
    }
}

/// The first and last sample of speech in `samples` (10 ms resolution, judged on 100 ms
/// windows against `speech_rms`), or `None` if nothing in it reaches the speech level.
///
/// Whisper's segment times are coarse: a segment after a pause often "starts" where the
/// previous one ended. Clamping each segment to the speech inside it puts subtitle cues and
/// citations where the words are.
pub fn speech_bounds(samples: &[f32], speech_rms: f32) -> Option<(usize, usize)> {
    const W: usize = 10; // 100 ms windows of 10 ms frames
    let frames: Vec<f64> = samples.chunks(FRAME).map(|f| f.iter().map(|&s| (s as f64) * (s as f64)).sum()).collect();
    if frames.is_empty() {
        return None;
    }
    let loud = |i: usize| {
        let end = (i + W).min(frames.len());
        let n = (end - i) * FRAME;
        rms(frames[i..end].iter().sum(), n) > speech_rms
    };
    let frame_loud = |i: usize| rms(frames[i], FRAME) > speech_rms;
    // The first window with speech, then its first loud frame; the same from the end.
    let w = (0..frames.len()).find(|&i| loud(i))?;
    let first = (w..(w + W).min(frames.len())).find(|&i| frame_loud(i)).unwrap_or(w);
    let w = (0..frames.len()).rev().find(|&i| loud(i.saturating_sub(W - 1)))?;
    let last = (w.saturating_sub(W - 1)..=w).rev().find(|&i| frame_loud(i)).unwrap_or(w);
    Some((first * FRAME, ((last + 1) * FRAME).min(samples.len())))
}

/// Sum of squares of every 200 ms window, stepping by 10 ms.
fn window_energies(samples: &[f32]) -> Vec<f64> {
    let frames: Vec<f64> = samples.chunks(FRAME).map(|f| f.iter().map(|&s| (s as f64) * (s as f64)).sum()).collect();
    if frames.len() < WINDOW_FRAMES {
        return vec![frames.iter().sum()];
    }
    let mut out = Vec::with_capacity(frames.len() - WINDOW_FRAMES + 1);
    let mut sum: f64 = frames[..WINDOW_FRAMES].iter().sum();
    out.push(sum);
    for i in WINDOW_FRAMES..frames.len() {
        sum += frames[i] - frames[i - WINDOW_FRAMES];
        out.push(sum.max(0.0));
    }
    out
}

fn rms(energy: f64, n: usize) -> f32 {
    (energy / n as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, level: f32, seed: &mut u32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((*seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0 * level
            })
            .collect()
    }

    fn chunks_of(samples: &[f32], block: usize) -> Vec<Chunk> {
        let mut c = Chunker::new(ChunkerConfig::default());
        let mut out = Vec::new();
        for b in samples.chunks(block) {
            c.push::<()>(b, &mut |ch| {
                out.push(ch);
                Ok(())
            })
            .unwrap();
        }
        c.finish::<()>(&mut |ch| {
            out.push(ch);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn cuts_at_the_pause_and_keeps_every_sample_in_order() {
        let mut seed = 7;
        // 22 s "speech", 1 s silence, 20 s "speech", 0.5 s silence, 5 s "speech".
        let mut audio = noise(22 * RATE, 0.3, &mut seed);
        audio.extend(vec![0.0; RATE]);
        audio.extend(noise(20 * RATE, 0.3, &mut seed));
        audio.extend(vec![0.0; RATE / 2]);
        audio.extend(noise(5 * RATE, 0.3, &mut seed));
        let chunks = chunks_of(&audio, 1234);
        let total: usize = chunks.iter().map(|c| c.samples.len()).sum();
        assert_eq!(total, audio.len());
        let joined: Vec<f32> = chunks.iter().flat_map(|c| c.samples.iter().copied()).collect();
        assert_eq!(joined, audio);
        // First cut inside the 1 s pause (22-23 s), near its end (the chunk is as long as it can be).
        let first_end = chunks[0].samples.len() as f64 / RATE as f64;
        assert!((22.5..23.0).contains(&first_end), "first cut at {first_end} s");
        for c in &chunks {
            assert!(c.samples.len() <= 30 * RATE);
            assert!(c.has_speech);
        }
        assert_eq!(chunks[1].offset_samples as usize, chunks[0].samples.len());
    }

    #[test]
    fn silence_and_faint_noise_are_not_speech() {
        let mut seed = 3;
        let chunks = chunks_of(&[vec![0.0; 40 * RATE], noise(5 * RATE, 0.001, &mut seed)].concat(), 16_000);
        assert!(chunks.iter().all(|c| !c.has_speech), "{:?}", chunks.iter().map(|c| c.has_speech).collect::<Vec<_>>());
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn speech_bounds_find_the_loud_part() {
        let mut seed = 5;
        let audio = [vec![0.0; 2 * RATE], noise(RATE, 0.3, &mut seed), vec![0.0; RATE]].concat();
        let (a, b) = speech_bounds(&audio, 0.003).unwrap();
        assert!((a as i64 - 2 * RATE as i64).abs() <= FRAME as i64, "{a}");
        assert!((b as i64 - 3 * RATE as i64).abs() <= 2 * FRAME as i64, "{b}");
        assert_eq!(speech_bounds(&vec![0.0; RATE], 0.003), None);
    }

    #[test]
    fn speech_without_pauses_is_cut_at_thirty_seconds() {
        let mut seed = 11;
        let chunks = chunks_of(&noise(65 * RATE, 0.3, &mut seed), 4096);
        assert!(chunks.iter().all(|c| c.samples.len() <= 30 * RATE && c.has_speech));
        assert!(chunks[0].samples.len() >= 15 * RATE);
    }
}
