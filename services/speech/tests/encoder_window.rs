//! Encoder windows fitted to each chunk (`--encoder-window fit`, the default) change how
//! much audio whisper.cpp's encoder reads, and whisper.cpp keeps the last decode's window in
//! the decoder state, where its language detection reads it. A detection must read the
//! window it asks for, whatever the state decoded before, or the same recording could be
//! given another language depending on the request before it.
//!
//! Needs the bundled multilingual model (`mmc models fetch`) and espeak-ng
//! (`deploy/setup.sh --test` installs both).

use std::{
    path::PathBuf,
    process::Command,
    sync::{atomic::AtomicBool, Arc},
};

use mmc_models::store::ModelStore;
use mmc_speech::engine::{
    audio::{decode_file, AudioInput},
    whisper::{DecodeOptions, EncoderWindow, WhisperModel},
};

fn german_speech(dir: &std::path::Path) -> Vec<f32> {
    let path: PathBuf = dir.join("de.wav");
    let text = "Guten Morgen. Wir haben beschlossen, das neue Produkt im März zu starten. Anna aktualisiert den Projektplan bis Freitag.";
    let status = Command::new("espeak-ng").args(["-v", "de", "-s", "150", "-w"]).arg(&path).arg(text).status().expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng failed");
    let mut samples = Vec::new();
    decode_file(&path, AudioInput::Container, &mut |s| {
        samples.extend_from_slice(s);
        Ok(())
    })
    .expect("the WAV decodes");
    samples
}

#[test]
fn a_language_detection_reads_its_own_window_whatever_the_state_decoded_before() {
    let path = ModelStore::from_env().file("whisper-base-ct2", "ggml-model.bin").unwrap_or_else(|e| panic!("{e}"));
    let model = WhisperModel::load(&path, "whisper-base-ct2", "test", 1, EncoderWindow::Fit, None).expect("the model loads");
    let dir = tempfile::tempdir().unwrap();
    let german = german_speech(dir.path());
    assert!(german.len() > 5 * 16_000, "a few seconds of speech");
    let threads = 2;

    let mut fresh = model.new_state().unwrap();
    let full = model.detect_language(&mut fresh, &german, 0, threads).unwrap();
    assert_eq!(full.code, "de", "{full:?}");

    // A state that has just decoded a 3 s chunk, on a fitted (10 s) window.
    let mut used = model.new_state().unwrap();
    let options = DecodeOptions { language: Some("de".into()), ..Default::default() };
    let segments = model.transcribe(&mut used, &german[..3 * 16_000], 0, &options, threads, &Arc::new(AtomicBool::new(false))).unwrap();
    assert!(!segments.is_empty(), "the chunk is transcribed");
    let after = model.detect_language(&mut used, &german, 0, threads).unwrap();
    assert_eq!(after, full, "the detection read the window the decode before it left");

    // The window does matter (so the equality above is not trivially true): 10 s of window
    // reads the same speech with another probability, and asking for the full one again
    // gives the first answer back.
    let short = model.detect_language(&mut used, &german, 500, threads).unwrap();
    assert_ne!(short.probability, full.probability, "{short:?} vs {full:?}");
    assert_eq!(model.detect_language(&mut used, &german, 0, threads).unwrap(), full);
}
