//! Audio in: any container/codec symphonia reads (WAV, FLAC, MP3, OGG/Vorbis, AAC/M4A,
//! MKV/WebM with those codecs), Opus in Ogg/WebM/MKV (libopus, see [`super::opus`]) or
//! headerless PCM, at any rate and channel count, turned
//! into what Whisper needs: 16 kHz mono f32.
//!
//! Decoding streams: packets are decoded, downmixed and resampled block by block and handed
//! to a sink, so an hour-long recording never sits decoded in memory at once. Channels are
//! averaged (what ffmpeg's `-ac 1` does); the rate is converted with rubato's FFT resampler,
//! a band-limited (anti-aliased) converter, not sample dropping.

use std::{
    fs::File,
    io::{BufReader, Read},
    path::Path,
};

use rubato::{FftFixedIn, Resampler};
use symphonia::core::{
    audio::SampleBuffer,
    codecs::{DecoderOptions, CODEC_TYPE_NULL},
    errors::Error as SymphoniaError,
    formats::FormatOptions,
    io::MediaSourceStream,
    meta::MetadataOptions,
    probe::Hint,
};

/// Whisper's input rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// How to read the uploaded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioInput {
    /// A container (WAV, FLAC, MP3, OGG, M4A...), detected from the bytes.
    Container,
    /// Headerless interleaved PCM.
    Raw { sample: RawSample, sample_rate_hz: u32, channels: u16 },
}

/// Sample encodings of headerless PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSample {
    S16Le,
    F32Le,
}

/// What was decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    /// Rate of the source, in hertz.
    pub source_rate_hz: u32,
    /// Channels of the source.
    pub source_channels: u16,
    /// Codec name as symphonia reports it ("pcm_s16le", "mp3", "pcm" for raw input).
    pub codec: String,
    /// 16 kHz samples delivered to the sink.
    pub samples: u64,
    /// Packets that failed to decode and were skipped (damaged frames in lossy streams).
    pub skipped_packets: u64,
}

/// Why audio could not be read. Every variant is the client's input except `Io`.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("no audio received (the upload is empty)")]
    Empty,
    #[error("could not read the audio: {0}")]
    Unreadable(String),
    #[error("the recording is truncated: its header announces {announced_ms} ms, only {decoded_ms} ms are present")]
    Truncated { announced_ms: u64, decoded_ms: u64 },
    #[error("invalid raw PCM parameters: {0}")]
    BadRawFormat(String),
    #[error("the recording holds no decodable audio: {0}")]
    NoAudio(String),
    /// The sink refused more samples (too long, cancelled); carries the sink's reason.
    #[error("{0}")]
    Stopped(String),
    #[error("reading the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// Decodes the file at `path` and feeds 16 kHz mono samples to `sink` in blocks. The sink
/// returns `Err(reason)` to stop early (recording too long, request cancelled).
pub fn decode_file(path: &Path, input: AudioInput, sink: &mut dyn FnMut(&[f32]) -> Result<(), String>) -> Result<AudioInfo, AudioError> {
    if std::fs::metadata(path)?.len() == 0 {
        return Err(AudioError::Empty);
    }
    match input {
        // A panic in symphonia on a malformed stream (the fuzz target found one: ADTS with
        // a zero frame step) must refuse this upload, not take the service down.
        AudioInput::Container => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_container(path, sink)))
            .unwrap_or_else(|_| Err(AudioError::Unreadable("the decoder failed on this file (a malformed stream)".into()))),
        AudioInput::Raw { sample, sample_rate_hz, channels } => decode_raw(path, sample, sample_rate_hz, channels, sink),
    }
}

/// The recording's duration from its header alone (no decoding), when the format states
/// it: WAV, FLAC, M4A and raw PCM do; MP3 and OGG often do not. Used for progress.
pub fn probe_duration_ms(path: &Path, input: AudioInput) -> Option<u64> {
    match input {
        AudioInput::Raw { sample, sample_rate_hz, channels } => {
            let width = if sample == RawSample::S16Le { 2 } else { 4 };
            let frames = std::fs::metadata(path).ok()?.len() / (width * channels.max(1) as u64);
            Some(frames * 1000 / sample_rate_hz.max(1) as u64)
        }
        AudioInput::Container => {
            let stream = MediaSourceStream::new(Box::new(File::open(path).ok()?), Default::default());
            let probed = symphonia::default::get_probe().format(&Hint::new(), stream, &FormatOptions::default(), &MetadataOptions::default()).ok()?;
            let track = probed.format.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL)?;
            let (frames, rate) = (track.codec_params.n_frames?, track.codec_params.sample_rate?);
            Some(frames * 1000 / rate.max(1) as u64)
        }
    }
}

/// Downmixes interleaved frames, resamples to 16 kHz and forwards them.
struct ToWhisperRate<'s> {
    resampler: Option<FftFixedIn<f32>>,
    /// Mono samples waiting for a full resampler block.
    pending: Vec<f32>,
    /// Output frames still to drop: the resampler's delay, so timestamps stay aligned.
    delay: usize,
    channels: usize,
    /// Source frames seen, to cut the resampler's flush tail at the exact duration.
    frames_in: u64,
    rate: u32,
    /// Once known (at the end), the number of output samples the source amounts to.
    limit: Option<u64>,
    delivered: u64,
    sink: &'s mut dyn FnMut(&[f32]) -> Result<(), String>,
}

/// Input block of the resampler: 1024 frames (64 ms at 16 kHz).
const RESAMPLER_BLOCK: usize = 1024;

impl<'s> ToWhisperRate<'s> {
    fn new(rate: u32, channels: usize, sink: &'s mut dyn FnMut(&[f32]) -> Result<(), String>) -> Result<Self, AudioError> {
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(rate as usize, SAMPLE_RATE as usize, RESAMPLER_BLOCK, 2, 1)
                    .map_err(|e| AudioError::Unreadable(format!("cannot resample from {rate} Hz: {e}")))?,
            )
        };
        let delay = resampler.as_ref().map(|r| r.output_delay()).unwrap_or(0);
        Ok(Self { resampler, pending: Vec::new(), delay, channels, frames_in: 0, rate, limit: None, delivered: 0, sink })
    }

    fn push_interleaved(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        let ch = self.channels.max(1);
        self.frames_in += (samples.len() / ch) as u64;
        self.pending.extend(samples.chunks_exact(ch).map(|frame| frame.iter().sum::<f32>() / ch as f32));
        self.drain(false)
    }

    fn drain(&mut self, last: bool) -> Result<(), AudioError> {
        let Some(resampler) = self.resampler.as_mut() else {
            let block = std::mem::take(&mut self.pending);
            return self.emit(block);
        };
        let mut out = Vec::new();
        let mut used = 0;
        while self.pending.len() - used >= resampler.input_frames_next() {
            let n = resampler.input_frames_next();
            let r = resampler.process(&[&self.pending[used..used + n]], None).map_err(|e| AudioError::Unreadable(e.to_string()))?;
            out.extend_from_slice(&r[0]);
            used += n;
        }
        if last {
            let rest = &self.pending[used..];
            let r = resampler.process_partial(Some(&[rest]), None).map_err(|e| AudioError::Unreadable(e.to_string()))?;
            out.extend_from_slice(&r[0]);
            // Flush the samples still inside the filter.
            let r = resampler.process_partial(None::<&[&[f32]]>, None).map_err(|e| AudioError::Unreadable(e.to_string()))?;
            out.extend_from_slice(&r[0]);
            used = self.pending.len();
        }
        self.pending.drain(..used);
        self.emit(out)
    }

    fn emit(&mut self, mut block: Vec<f32>) -> Result<(), AudioError> {
        if self.delay > 0 {
            let drop = self.delay.min(block.len());
            block.drain(..drop);
            self.delay -= drop;
        }
        if let Some(limit) = self.limit {
            block.truncate(limit.saturating_sub(self.delivered) as usize);
        }
        if block.is_empty() {
            return Ok(());
        }
        self.delivered += block.len() as u64;
        (self.sink)(&block).map_err(AudioError::Stopped)
    }

    /// Flushes the resampler; returns the 16 kHz samples delivered.
    fn finish(mut self) -> Result<u64, AudioError> {
        self.limit = Some((self.frames_in * SAMPLE_RATE as u64).div_ceil(self.rate as u64));
        self.drain(true)?;
        Ok(self.delivered)
    }
}

fn decode_container(path: &Path, sink: &mut dyn FnMut(&[f32]) -> Result<(), String>) -> Result<AudioInfo, AudioError> {
    super::declared_lengths::check(path).map_err(|e| AudioError::Unreadable(format!("the file is malformed: {e}")))?;
    let file = File::open(path)?;
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let probed = symphonia::default::get_probe()
        .format(&Hint::new(), stream, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|e| AudioError::Unreadable(format!("not a recognised audio file ({e})")))?;
    let mut format = probed.format;
    let track =
        format.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL).ok_or_else(|| AudioError::NoAudio("no audio track".into()))?;
    let (track_id, params) = (track.id, track.codec_params.clone());
    let codec = super::opus::codecs().get_codec(params.codec).map(|d| d.short_name.to_string()).unwrap_or_else(|| format!("{:?}", params.codec));
    let mut decoder = super::opus::codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| AudioError::Unreadable(format!("unsupported codec {codec}: {e}")))?;

    let mut rate = params.sample_rate;
    let mut channels = params.channels.map(|c| c.count() as u16);
    let mut converter: Option<ToWhisperRate> = None;
    let (mut skipped, mut decoded_packets) = (0u64, 0u64);
    let mut buffer: Option<SampleBuffer<f32>> = None;
    let mut sink = Some(sink);
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(AudioError::Unreadable(format!("damaged container: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged frame in a lossy stream: skip it, as every player does.
            Err(SymphoniaError::DecodeError(_)) => {
                skipped += 1;
                continue;
            }
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(AudioError::Unreadable(format!("decoding {codec}: {e}"))),
        };
        decoded_packets += 1;
        let spec = *decoded.spec();
        if converter.is_none() {
            rate = Some(spec.rate);
            channels = Some(spec.channels.count() as u16);
            let rate = spec.rate;
            if !(1_000..=768_000).contains(&rate) {
                return Err(AudioError::Unreadable(format!("implausible sample rate {rate} Hz")));
            }
            converter = Some(ToWhisperRate::new(rate, spec.channels.count(), sink.take().expect("sink used once"))?);
        }
        let buf = match &mut buffer {
            Some(b) if b.capacity() >= decoded.capacity() * spec.channels.count() => b,
            _ => buffer.insert(SampleBuffer::<f32>::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        converter.as_mut().expect("created above").push_interleaved(buf.samples())?;
    }
    let (Some(rate), Some(converter)) = (rate, converter) else {
        return Err(AudioError::NoAudio(if skipped > 0 {
            format!("all {skipped} packets of the {codec} stream failed to decode")
        } else {
            "the audio track has no samples".into()
        }));
    };
    let frames = converter.frames_in;
    if decoded_packets == 0 || frames == 0 {
        return Err(AudioError::NoAudio("the audio track has no samples".into()));
    }
    // A header that announces more frames than the file holds means a cut-off upload.
    if let Some(announced) = params.n_frames {
        if frames + (rate as u64 / 10) < announced {
            return Err(AudioError::Truncated { announced_ms: announced * 1000 / rate as u64, decoded_ms: frames * 1000 / rate as u64 });
        }
    }
    let samples = converter.finish()?;
    Ok(AudioInfo { source_rate_hz: rate, source_channels: channels.unwrap_or(1), codec, samples, skipped_packets: skipped })
}

fn decode_raw(
    path: &Path,
    sample: RawSample,
    rate: u32,
    channels: u16,
    sink: &mut dyn FnMut(&[f32]) -> Result<(), String>,
) -> Result<AudioInfo, AudioError> {
    if !(1_000..=768_000).contains(&rate) {
        return Err(AudioError::BadRawFormat(format!("sample_rate_hz must be in 1000..=768000, got {rate}")));
    }
    if !(1..=32).contains(&channels) {
        return Err(AudioError::BadRawFormat(format!("channels must be in 1..=32, got {channels}")));
    }
    let width = match sample {
        RawSample::S16Le => 2,
        RawSample::F32Le => 4,
    };
    let frame_bytes = width * channels as usize;
    let len = std::fs::metadata(path)?.len();
    if len % frame_bytes as u64 != 0 {
        return Err(AudioError::BadRawFormat(format!(
            "{len} bytes is not a whole number of {frame_bytes}-byte frames ({channels} channel(s) of {width}-byte samples)"
        )));
    }
    let mut reader = BufReader::new(File::open(path)?);
    let mut converter = ToWhisperRate::new(rate, channels as usize, sink)?;
    let mut bytes = vec![0u8; frame_bytes * 4096];
    let mut samples = Vec::with_capacity(channels as usize * 4096);
    loop {
        let n = read_full(&mut reader, &mut bytes)?;
        if n == 0 {
            break;
        }
        samples.clear();
        match sample {
            RawSample::S16Le => samples.extend(bytes[..n].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)),
            RawSample::F32Le => samples.extend(bytes[..n].chunks_exact(4).map(|b| {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if v.is_finite() {
                    v.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            })),
        }
        converter.push_interleaved(&samples)?;
    }
    let samples = converter.finish()?;
    Ok(AudioInfo { source_rate_hz: rate, source_channels: channels, codec: "pcm".into(), samples, skipped_packets: 0 })
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let data_len = (samples.len() * 2) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data_len).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * channels as u32 * 2).to_le_bytes());
        v.extend_from_slice(&(channels * 2).to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    fn decode(bytes: &[u8], input: AudioInput) -> Result<(AudioInfo, Vec<f32>), AudioError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let info = decode_file(f.path(), input, &mut |s| {
            out.extend_from_slice(s);
            Ok(())
        })?;
        Ok((info, out))
    }

    /// The `audio_decode` fuzz target's crash: junk, then an ADTS stream whose frames make
    /// symphonia 0.5 divide its step by zero (a panic inside the probe).
    #[test]
    fn a_stream_that_panics_the_decoder_is_refused() {
        let hex = concat!(
            "491e52ff2d6868686868686868686868686868686868686868686868686868686868686868686868686868686868b3b3b3b3",
            "b3b3686868686868686868686868686868686868686868686868686868686868686868686868686868686868686868686868",
            "68fa4646c7fff1524946462419000057415645666d742010024000000000017e1f0000007d00000400100064617461001900",
            "00520352030658f658f758394f394f8a3b8b3b58215821b802b8fff15249464624190000574156450238e439666de499c898",
            "000000000000c874e4b3",
        );
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let err = decode(&bytes, AudioInput::Container).unwrap_err();
        assert!(matches!(err, AudioError::Unreadable(_)), "{err}");
    }

    /// A 440 Hz tone, interleaved stereo with the right channel silent.
    fn tone(rate: u32, seconds: f32) -> Vec<i16> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .flat_map(|i| {
                let v = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin() * 16000.0;
                [v as i16, 0]
            })
            .collect()
    }

    #[test]
    fn stereo_44k_wav_becomes_16k_mono_of_the_same_duration_and_pitch() {
        let (info, out) = decode(&wav(44_100, 2, &tone(44_100, 2.0)), AudioInput::Container).unwrap();
        assert_eq!((info.source_rate_hz, info.source_channels), (44_100, 2));
        assert!((out.len() as i64 - 32_000).abs() < 200, "{} samples", out.len());
        // Mono = average: amplitude halves (16000/32768/2 ~ 0.244).
        let peak = out[1000..30_000].iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.244).abs() < 0.02, "peak {peak}");
        // Pitch survives: 440 Hz = 880 zero crossings per second.
        let crossings = out[1000..17_000].windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        assert!((crossings as i64 - 880).abs() < 10, "{crossings} crossings in 1 s");
    }

    #[test]
    fn raw_pcm_is_read_with_the_given_rate_and_channels() {
        let pcm: Vec<u8> = tone(8_000, 1.0).iter().flat_map(|s| s.to_le_bytes()).collect();
        let input = AudioInput::Raw { sample: RawSample::S16Le, sample_rate_hz: 8_000, channels: 2 };
        let (_, out) = decode(&pcm, input).unwrap();
        assert!((out.len() as i64 - 16_000).abs() < 200, "{}", out.len());
        let odd = &pcm[..pcm.len() - 1];
        assert!(matches!(decode(odd, input), Err(AudioError::BadRawFormat(_))));
        let bad_rate = AudioInput::Raw { sample: RawSample::S16Le, sample_rate_hz: 0, channels: 1 };
        assert!(matches!(decode(&pcm, bad_rate), Err(AudioError::BadRawFormat(_))));
    }

    #[test]
    fn empty_garbage_and_truncated_inputs_are_refused_with_reasons() {
        assert!(matches!(decode(b"", AudioInput::Container), Err(AudioError::Empty)));
        let garbage: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert!(matches!(decode(&garbage, AudioInput::Container), Err(AudioError::Unreadable(_))));
        let full = wav(16_000, 1, &vec![1000; 32_000]);
        let cut = &full[..full.len() / 2];
        match decode(cut, AudioInput::Container) {
            Err(AudioError::Truncated { announced_ms, decoded_ms }) => {
                assert_eq!(announced_ms, 2000);
                assert!(decoded_ms < 1100);
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        assert!(decode(&full[..20], AudioInput::Container).is_err());
    }
}
