//! Generated code for the mmc gRPC contracts (`proto/` at the repository root).
//!
//! Services and clients import messages and stubs from here and never see the build
//! machinery. Each package is versioned (`mmc.<service>.v1`); a breaking change gets a
//! new package (`v2`) beside the old one.

#![allow(clippy::all, missing_docs)]

/// Shared messages: model identity, timings, images, audio formats, progress, tensors.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("mmc.common.v1");
    }
}

/// Latent (embedding) service: text and images in one space; image latents.
pub mod embed {
    pub mod v1 {
        tonic::include_proto!("mmc.embed.v1");
    }
}

/// Caption service: alt text and descriptions from encoder latents.
pub mod caption {
    pub mod v1 {
        tonic::include_proto!("mmc.caption.v1");
    }
}

/// Speech service: Whisper transcription with streamed segments.
pub mod speech {
    pub mod v1 {
        tonic::include_proto!("mmc.speech.v1");
    }
}

/// Text-generation service: streamed tokens, sampling, constrained output.
pub mod textgen {
    pub mod v1 {
        tonic::include_proto!("mmc.textgen.v1");
    }
}

/// Gateway: the user flows.
pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("mmc.gateway.v1");
    }
}

/// Encoded `FileDescriptorSet` of every mmc package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mmc_descriptor");

/// Fully-qualified gRPC service names, as reported by health and reflection.
pub mod service_names {
    pub const EMBED: &str = "mmc.embed.v1.EmbedService";
    pub const CAPTION: &str = "mmc.caption.v1.CaptionService";
    pub const SPEECH: &str = "mmc.speech.v1.SpeechService";
    pub const TEXTGEN: &str = "mmc.textgen.v1.TextGenService";
    pub const GATEWAY: &str = "mmc.gateway.v1.GatewayService";
}
