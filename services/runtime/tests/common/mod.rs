//! Test services and a loopback server harness shared by the runtime's tests.

#![allow(dead_code)]

use std::{net::SocketAddr, pin::Pin, time::Duration};

use clap::Parser;
use futures::Stream;
use mmc_proto::{
    embed::v1::{
        embed_service_server::{EmbedService, EmbedServiceServer},
        EmbedTextRequest, EmbedTextResponse,
    },
    textgen::v1::{
        generate_response,
        text_gen_service_server::{TextGenService, TextGenServiceServer},
        GenerateRequest, GenerateResponse, TokenChunk,
    },
};
use mmc_runtime::{server::serve_on, ServerArgs, ServiceSet};
use tokio::sync::oneshot;
use tonic::{transport::Channel, Request, Response, Status};

/// Test engine: `EmbedText(["sleep:MS"])` sleeps MS milliseconds, then answers.
pub struct Sleepy;

#[tonic::async_trait]
impl EmbedService for Sleepy {
    async fn embed_text(&self, req: Request<EmbedTextRequest>) -> Result<Response<EmbedTextResponse>, Status> {
        let first = req.into_inner().texts.into_iter().next().unwrap_or_default();
        if let Some(ms) = first.strip_prefix("sleep:") {
            let ms: u64 = ms.parse().map_err(|_| Status::invalid_argument("bad sleep"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(Response::new(EmbedTextResponse::default()))
    }
}

/// Test engine: `Generate` streams one token every 50 ms, `max_tokens` of them.
pub struct Ticker;

pub type TokenStream = Pin<Box<dyn Stream<Item = Result<GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TextGenService for Ticker {
    async fn generate(&self, req: Request<GenerateRequest>) -> Result<Response<TokenStream>, Status> {
        let n = req.into_inner().options.map(|o| o.max_tokens).unwrap_or(1);
        let stream = futures::stream::unfold(0u32, move |i| async move {
            if i >= n {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let token = TokenChunk { text: format!("t{i}"), token_id: i, logprob: 0.0 };
            Some((Ok(GenerateResponse { event: Some(generate_response::Event::Token(token)) }), i + 1))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[derive(Parser)]
pub struct Cli {
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn args(extra: &[&str]) -> ServerArgs {
    let mut argv = vec!["test", "--listen", "127.0.0.1:0"];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).server
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<&'static str>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(args: ServerArgs) -> Self {
        Self::start_with_warmup(args, async { Ok(()) }).await
    }

    pub async fn start_with_warmup(args: ServerArgs, warm_up: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<&'static str>();
        let services =
            ServiceSet::new().message_limit(args.max_message_bytes).add(EmbedServiceServer::new(Sleepy)).add(TextGenServiceServer::new(Ticker));
        let task = tokio::spawn(async move { serve_on(listener, &args, services, warm_up, async { rx.await.unwrap_or("dropped") }).await });
        Self { addr, stop: Some(tx), task }
    }

    pub async fn channel(&self) -> Channel {
        let url = format!("http://{}", self.addr);
        for _ in 0..100 {
            if let Ok(ch) = Channel::from_shared(url.clone()).unwrap().connect().await {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server at {url} did not accept connections");
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send("test stop");
        self.task.await.unwrap()
    }
}

pub fn sleep_req(ms: u64) -> EmbedTextRequest {
    EmbedTextRequest { texts: vec![format!("sleep:{ms}")], ..Default::default() }
}
