//! Opus (in Ogg, WebM or MKV) for symphonia, which demuxes Opus streams but has no Opus
//! decoder: this plugs libopus (the reference decoder, built from source by `opusic-sys`
//! and linked statically) into symphonia's codec registry, so Opus goes through the same
//! streaming path as every other codec. Opus is what browsers record
//! (`MediaRecorder`), what WhatsApp and Signal voice notes are, and what most meeting
//! tools export to save space.
//!
//! Decoded at 48 kHz (Opus's own rate) in mono or stereo; the stream's pre-skip (the
//! encoder's look-ahead, from the OpusHead header) is dropped so that times line up with
//! the source. Streams of more than two channels (surround mappings) are refused with a
//! clear error.

use std::sync::{Mutex, OnceLock};

use symphonia::core::{
    audio::{AsAudioBufferRef, AudioBuffer, AudioBufferRef, Channels, Signal, SignalSpec},
    codecs::{CodecDescriptor, CodecParameters, CodecRegistry, Decoder, DecoderOptions, FinalizeResult, CODEC_TYPE_OPUS},
    errors::{decode_error, unsupported_error, Result},
    formats::Packet,
    support_codec,
};

/// Opus's sample rate: decoders may output other rates, but 48 kHz is the exact one.
const RATE: u32 = 48_000;
/// Longest Opus packet: 120 ms.
const MAX_FRAMES: usize = RATE as usize * 120 / 1000;

/// The codecs every audio upload is decoded with: symphonia's own plus Opus.
pub fn codecs() -> &'static CodecRegistry {
    static REGISTRY: OnceLock<CodecRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_all::<OpusDecoder>();
        registry
    })
}

/// libopus behind symphonia's [`Decoder`] trait.
pub struct OpusDecoder {
    /// `Mutex` only to make the decoder `Sync` as the trait asks; it is used through
    /// `get_mut`, never locked.
    inner: Mutex<opus::Decoder>,
    params: CodecParameters,
    channels: usize,
    /// Decoded frames still to drop from the start (the stream's pre-skip).
    skip: usize,
    interleaved: Vec<f32>,
    buffer: AudioBuffer<f32>,
}

impl Decoder for OpusDecoder {
    fn try_new(params: &CodecParameters, _options: &DecoderOptions) -> Result<Self> {
        let count = params.channels.map(|c| c.count()).unwrap_or(1);
        let (channels, layout) = match count {
            1 => (opus::Channels::Mono, Channels::FRONT_LEFT),
            2 => (opus::Channels::Stereo, Channels::FRONT_LEFT | Channels::FRONT_RIGHT),
            _ => return unsupported_error("opus streams of more than 2 channels (surround mappings) are not supported"),
        };
        let inner = opus::Decoder::new(RATE, channels).map_err(|_| symphonia::core::errors::Error::Unsupported("opus decoder"))?;
        Ok(Self {
            inner: Mutex::new(inner),
            params: params.clone(),
            channels: count,
            skip: params.delay.unwrap_or(0) as usize,
            interleaved: vec![0.0; MAX_FRAMES * count],
            buffer: AudioBuffer::new(MAX_FRAMES as u64, SignalSpec::new(RATE, layout)),
        })
    }

    fn supported_codecs() -> &'static [CodecDescriptor] {
        &[support_codec!(CODEC_TYPE_OPUS, "opus", "Opus (libopus)")]
    }

    fn reset(&mut self) {
        if let Ok(decoder) = self.inner.get_mut() {
            let _ = decoder.reset_state();
        }
    }

    fn codec_params(&self) -> &CodecParameters {
        &self.params
    }

    fn decode(&mut self, packet: &Packet) -> Result<AudioBufferRef<'_>> {
        let decoder = self.inner.get_mut().map_err(|_| symphonia::core::errors::Error::DecodeError("opus: decoder poisoned"))?;
        let frames = match decoder.decode_float(&packet.data, &mut self.interleaved, false) {
            Ok(n) => n,
            Err(_) => return decode_error("opus: damaged packet"),
        };
        let drop = self.skip.min(frames);
        self.skip -= drop;
        self.buffer.clear();
        self.buffer.render_reserved(Some(frames - drop));
        for ch in 0..self.channels {
            let out = self.buffer.chan_mut(ch);
            for (i, sample) in out.iter_mut().enumerate() {
                *sample = self.interleaved[(drop + i) * self.channels + ch];
            }
        }
        Ok(self.buffer.as_audio_buffer_ref())
    }

    fn finalize(&mut self) -> FinalizeResult {
        FinalizeResult::default()
    }

    fn last_decoded(&self) -> AudioBufferRef<'_> {
        self.buffer.as_audio_buffer_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opus_params(channels: Channels, pre_skip: u32) -> CodecParameters {
        let mut p = CodecParameters::new();
        p.for_codec(CODEC_TYPE_OPUS).with_sample_rate(RATE).with_channels(channels).with_delay(pre_skip);
        p
    }

    #[test]
    fn the_registry_has_opus_and_symphonias_codecs() {
        assert_eq!(codecs().get_codec(CODEC_TYPE_OPUS).map(|d| d.short_name), Some("opus"));
        assert!(codecs().get_codec(symphonia::core::codecs::CODEC_TYPE_MP3).is_some());
    }

    /// Packets from libopus's encoder decode to the same tone, minus the pre-skip.
    #[test]
    fn encoded_packets_decode_to_the_tone_and_drop_the_pre_skip() {
        let mut encoder = opus::Encoder::new(RATE, opus::Channels::Stereo, opus::Application::Voip).unwrap();
        let frame = RATE as usize / 50; // 20 ms
        let pre_skip = 312;
        let mut decoder =
            OpusDecoder::try_new(&opus_params(Channels::FRONT_LEFT | Channels::FRONT_RIGHT, pre_skip), &DecoderOptions::default()).unwrap();
        let (mut total, mut energy) = (0usize, 0f64);
        for k in 0..50 {
            let tone: Vec<f32> =
                (0..frame * 2).map(|i| ((k * frame + i / 2) as f32 * 440.0 * std::f32::consts::TAU / RATE as f32).sin() * 0.5).collect();
            let mut out = vec![0u8; 4000];
            let n = encoder.encode_float(&tone, &mut out).unwrap();
            let packet = Packet::new_from_slice(0, 0, frame as u64, &out[..n]);
            let decoded = decoder.decode(&packet).unwrap();
            let AudioBufferRef::F32(buf) = decoded else { panic!("f32 output") };
            assert_eq!(buf.spec().channels.count(), 2);
            total += buf.frames();
            if k > 10 {
                energy += buf.chan(0).iter().map(|&x| f64::from(x * x)).sum::<f64>() / buf.frames() as f64;
            }
        }
        assert_eq!(total, 50 * frame - pre_skip as usize);
        let rms = (energy / 39.0).sqrt();
        assert!((rms - 0.5 / 2f64.sqrt()).abs() < 0.05, "rms {rms}");
        // A damaged packet is a decode error (skipped by the caller), not a failure.
        let damaged = Packet::new_from_slice(0, 0, 0, &[0xff; 3]);
        assert!(matches!(decoder.decode(&damaged), Err(symphonia::core::errors::Error::DecodeError(_))));
    }

    #[test]
    fn surround_streams_are_refused_clearly() {
        let five = Channels::FRONT_LEFT | Channels::FRONT_RIGHT | Channels::FRONT_CENTRE | Channels::REAR_LEFT | Channels::REAR_RIGHT;
        let Err(e) = OpusDecoder::try_new(&opus_params(five, 0), &DecoderOptions::default()) else { panic!("accepted") };
        assert!(e.to_string().contains("more than 2 channels"), "{e}");
    }
}
