//! Audio decoding (`mmc_speech::engine::audio::decode_file`): WAV, FLAC, MP3, OGG, M4A
//! detected from the bytes, and headerless PCM. Any upload must decode or be refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmc_speech::engine::audio::{decode_file, AudioInput, RawSample};

fuzz_target!(
    // libfuzzer-sys aborts on every panic, even one the code under test catches. The
    // speech service catches symphonia's panics on malformed streams (they refuse the
    // upload), so only a panic that escapes decode_file counts here: libfuzzer-sys still
    // aborts on that one.
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| {
    // The speech service spools uploads to a file; so does the target (tmpfs).
    let path = std::env::temp_dir().join(format!("mmc-fuzz-audio-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    // Stop after ten minutes of audio, as a request's own limit would.
    let mut samples = 0usize;
    let mut sink = |block: &[f32]| {
        samples += block.len();
        if samples > 16_000 * 600 {
            Err("too long".to_string())
        } else {
            Ok(())
        }
    };
    let _ = decode_file(&path, AudioInput::Container, &mut sink);
    let channels = data.first().map_or(1, |b| u16::from(b % 4) + 1);
    let raw = AudioInput::Raw { sample: RawSample::S16Le, sample_rate_hz: 8_000 + 8_000 * u32::from(channels), channels };
    let _ = decode_file(&path, raw, &mut sink);
    }
);
