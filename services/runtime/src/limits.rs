//! Explicit message-size limits for the generated servers.
//!
//! tonic's default (4 MiB decode, unlimited encode) is implicit and different for each
//! direction; every mmc server states both limits from one setting instead. The
//! generated server types have no common trait, so this module gives them one.

use mmc_proto::{caption, embed, gateway, speech, textgen};

/// A generated gRPC server whose message sizes can be bounded.
pub trait MessageLimits: Sized {
    /// Sets the largest message decoded from clients and encoded to them, in bytes.
    fn with_message_limit(self, max_bytes: usize) -> Self;
}

macro_rules! impl_limits {
    ($($server:ty => $svc:path),* $(,)?) => {$(
        impl<T: $svc> MessageLimits for $server {
            fn with_message_limit(self, max_bytes: usize) -> Self {
                self.max_decoding_message_size(max_bytes).max_encoding_message_size(max_bytes)
            }
        }
    )*};
}

impl_limits! {
    embed::v1::embed_service_server::EmbedServiceServer<T> => embed::v1::embed_service_server::EmbedService,
    caption::v1::caption_service_server::CaptionServiceServer<T> => caption::v1::caption_service_server::CaptionService,
    speech::v1::speech_service_server::SpeechServiceServer<T> => speech::v1::speech_service_server::SpeechService,
    textgen::v1::text_gen_service_server::TextGenServiceServer<T> => textgen::v1::text_gen_service_server::TextGenService,
    gateway::v1::gateway_service_server::GatewayServiceServer<T> => gateway::v1::gateway_service_server::GatewayService,
}
