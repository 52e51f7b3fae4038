//! whisper.cpp's encoder multiplies through our `cblas_sgemm` (`engine/blas.rs`, the
//! `gemm` crate) rather than ggml's own kernels: the build wires ggml's BLAS backend to it
//! (`.cargo/config.toml`, `build.rs`). If that wiring breaks, whisper.cpp silently falls
//! back to its own, slower kernels; this test notices. The same for the encoder's
//! self-attention, its bias + GELU activations and the log-mel spectrogram's frames, which
//! the build's `whisper-cpp/patch.cmake` sends to `engine/attention.rs`, `engine/gelu.rs`
//! and `engine/mel.rs`. It also
//! checks that one thread and
//! two (the `gemm` crate's parallel path) hear the same words.
//!
//! Needs the bundled tiny.en (`mmc models fetch`) and Debian's pocketsphinx-testdata
//! (`deploy/setup.sh --test` installs both).

use std::sync::{atomic::AtomicBool, Arc};

use mmc_models::store::ModelStore;
use mmc_speech::engine::{
    attention,
    audio::{decode_file, AudioInput},
    blas, gelu, mel,
    whisper::{DecodeOptions, EncoderWindow, WhisperModel},
};

const CLIP: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav";

fn words(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_encoder_multiplies_through_our_sgemm_and_attention_and_our_mel_on_one_thread_or_two() {
    let path = ModelStore::from_env().file("whisper-tiny.en-ct2", "ggml-model-q8_0.bin").unwrap_or_else(|e| panic!("{e}"));
    let model = WhisperModel::load(&path, "whisper-tiny.en-ct2", "test", 1, EncoderWindow::Fit, None).expect("the model loads");
    let mut samples = Vec::new();
    decode_file(std::path::Path::new(CLIP), AudioInput::Container, &mut |s| {
        samples.extend_from_slice(s);
        Ok(())
    })
    .expect("the clip decodes");

    let options = DecodeOptions { language: Some("en".into()), ..Default::default() };
    let mut texts = Vec::new();
    for threads in [1, 2] {
        let mut state = model.new_state().unwrap();
        let (before, layers_before, frames_before, gelus_before) = (blas::sgemm_calls(), attention::layers(), mel::frames(), gelu::nodes());
        let amx_before = blas::amx_calls();
        let segments = model.transcribe(&mut state, &samples, 0, &options, threads, &Arc::new(AtomicBool::new(false))).unwrap();
        let (calls, layers, frames, gelus) =
            (blas::sgemm_calls() - before, attention::layers() - layers_before, mel::frames() - frames_before, gelu::nodes() - gelus_before);
        // tiny.en's encoder, per window: 6 dense matmuls in each of 4 layers (24), then the
        // cross-attention keys and values of 4 decoder layers (8) (measured: 32 for this
        // one-window clip).
        assert!(calls >= 32, "{threads} thread(s): only {calls} sgemm calls reached engine/blas.rs");
        // On a CPU with AMX (and an OS that grants it), the encoder's dense matmuls (24) run
        // on its tiles (engine/amx.rs); elsewhere none do.
        let amx_calls = blas::amx_calls() - amx_before;
        #[cfg(target_arch = "x86_64")]
        let amx = mmc_speech::engine::amx::available();
        #[cfg(not(target_arch = "x86_64"))]
        let amx = false;
        if amx {
            assert!(amx_calls >= 24, "{threads} thread(s): AMX is available but only {amx_calls} matmuls used it");
        } else {
            assert_eq!(amx_calls, 0);
        }
        // And the self-attention of each of the 4 layers in engine/attention.rs (the graph
        // patch of whisper-cpp/patch.cmake; unpatched, this stays 0).
        assert!(layers >= 4, "{threads} thread(s): only {layers} encoder attention layers reached engine/attention.rs");
        // And the bias + GELU after both convolutions and in each layer's MLP (6) in
        // engine/gelu.rs (same patch).
        assert!(gelus >= 6, "{threads} thread(s): only {gelus} encoder bias + GELU nodes reached engine/gelu.rs");
        // And every 10 ms frame of the clip's spectrogram in engine/mel.rs (same patch).
        let clip_frames = samples.len() as u64 / 160;
        assert!(frames >= clip_frames, "{threads} thread(s): {frames} of the clip's {clip_frames} spectrogram frames came from engine/mel.rs");
        let text = words(&segments.iter().map(|s| s.text.as_str()).collect::<String>());
        assert!(text.contains("dashwood had then leisure to consider"), "{threads} thread(s) heard: {text}");
        texts.push(text);
    }
    assert_eq!(texts[0], texts[1], "one thread and two heard different words");
}
