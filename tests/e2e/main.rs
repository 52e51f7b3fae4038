//! End-to-end tests: the real binaries, started as processes, called over gRPC/HTTP on
//! loopback. Run after `cargo build --workspace` and `mmc models fetch` (the README's
//! test command does both).

mod api_keys;
mod bench_models;
mod caption_service;
mod cli_client;
mod cluster_up;
mod embed_service;
mod gateway_images;
mod gateway_meetings;
mod hostile;
mod http_api;
mod hub_fetch;
mod hub_profile;
mod meeting_eval;
mod models_fetch;
mod openai_api;
mod otlp_export;
mod postgres_store;
mod review;
mod rolling_restart;
mod speech_service;
mod textgen_service;
mod tls;
mod web_ui;
