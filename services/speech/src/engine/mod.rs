//! The speech engine: audio decoding, voice-activity chunking and Whisper itself. No
//! protobuf here; the core drives these pieces and the handlers translate.

#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod attention;
pub mod audio;
pub mod blas;
pub mod chunker;
pub mod declared_lengths;
pub mod gelu;
pub mod mel;
pub mod opus;
pub mod whisper;

/// Keeps the functions whisper.cpp calls back into this crate in the link: ggml's BLAS
/// backend and the patched whisper.cpp (C++ static libraries linked after this crate) refer
/// to them, and the linker only keeps what is referred to by the time it reads a library.
/// Called when a model loads.
pub fn keep_linked() {
    std::hint::black_box((
        blas::cblas_sgemm as *const (),
        blas::openblas_set_num_threads as *const (),
        attention::mmc_encoder_attention as *const (),
        gelu::mmc_bias_gelu as *const (),
        mel::mmc_log_mel as *const (),
    ));
}

/// Failures of the model itself (audio problems are [`audio::AudioError`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file is missing or whisper.cpp refused it.
    #[error("{0}")]
    Load(String),
    /// A request option the model cannot honour (unknown language, translate on an
    /// English-only model).
    #[error("{0}")]
    BadOption(String),
    /// whisper.cpp failed while decoding.
    #[error("{0}")]
    Whisper(String),
    /// The request was cancelled (client gone) and decoding stopped.
    #[error("cancelled")]
    Cancelled,
}
