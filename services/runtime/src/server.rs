//! Server bootstrap shared by every mmc service.
//!
//! A service's `main` parses its arguments, builds its gRPC service(s) and a warm-up
//! future (load the model, run one inference), and hands both to [`run_service`]:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     let args: Args = mmc_runtime::config::parse();
//!     let core = EmbedCore::new(config_from(&args));
//!     let handlers = EmbedHandlers::new(core.clone());
//!     mmc_runtime::run_service("embed", args.server, |s| s.add(EmbedServiceServer::new(handlers)), async move {
//!         core.load_and_warm_up().await.map_err(anyhow::Error::new)
//!     })
//! }
//! ```
//!
//! Lifecycle, as Kubernetes probes and `mmc up` observe it:
//! 1. The port opens at once; `grpc.health.v1` answers NOT_SERVING (overall and per
//!    service) while the warm-up future runs, so a startup probe can wait for it.
//! 2. Warm-up done: SERVING. Warm-up failed: the process exits non-zero (a supervisor
//!    restarts it) rather than serving a broken model.
//! 3. SIGTERM/SIGINT: NOT_SERVING again, while the server still accepts and serves for
//!    `--drain-grace-ms`, so load balancers, Kubernetes endpoints and the gateway's
//!    health-watching balancer ([`crate::client`]) move new calls to other replicas before
//!    anything is refused. Then new connections are refused, health `Watch` streams end,
//!    in-flight requests get up to `--drain-timeout-ms` to finish, and the process exits 0.
//!    A stream still running at the drain deadline is cut: its client sees the connection
//!    close (UNAVAILABLE at the gateway, which names the stage).
//!
//! A process may also serve HTTP ([`ServiceSet::http`], the gateway's OpenAI-compatible
//! API) on its own port, with the same lifecycle: `GET /healthz` answers 503 until warm
//! and again while draining, and the drain waits for in-flight HTTP requests too.

use std::{convert::Infallible, future::Future, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{body::Body, server::NamedService, service::RoutesBuilder, transport::Server};
use tower::Service;

use crate::{
    config::ServerArgs,
    health::Health,
    limits::MessageLimits,
    metrics as m,
    policy::{PolicyConfig, PolicyLayer},
    shutdown, telemetry,
    tls::{self, ServerTls},
};

/// The gRPC services one process serves (besides health and reflection), and optionally
/// an HTTP router on a second address.
#[derive(Default)]
pub struct ServiceSet {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    max_message_bytes: Option<usize>,
    http: Option<(SocketAddr, axum::Router)>,
}

impl ServiceSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bounds every service added afterwards to `max_bytes` per message.
    pub fn message_limit(mut self, max_bytes: usize) -> Self {
        self.max_message_bytes = Some(max_bytes);
        self
    }

    /// Adds a generated tonic server, with the message limit applied. (A builder method
    /// named as tonic's `Router::add_service` reads, not `std::ops::Add`.)
    #[allow(clippy::should_implement_trait)]
    pub fn add<S>(mut self, svc: S) -> Self
    where
        S: MessageLimits
            + Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let svc = match self.max_message_bytes {
            Some(n) => svc.with_message_limit(n),
            None => svc,
        };
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Serves `router` over HTTP on `listen` as well (`/healthz` is added).
    pub fn http(mut self, listen: SocketAddr, router: axum::Router) -> Self {
        self.http = Some((listen, router));
        self
    }

    /// Fully-qualified names of the services added.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// Tunes the heap ([`crate::memory`]), builds the Tokio runtime, installs logs/traces and
/// metrics for `service`, runs `main` and turns its result into the process exit code.
pub fn run<F, Fut>(service: &'static str, args: ServerArgs, main: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::memory::retain_freed_memory();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mmc-{service}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let _telemetry = telemetry::init(service, &args)?;
        m::install(service, args.metrics_listen)?;
        tracing::info!(service, metrics = %args.metrics_listen, "starting");
        let result = main().await;
        if let Err(e) = &result {
            tracing::error!(service, error = %format!("{e:#}"), "exiting with an error");
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmc-{service}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves `services` on `args.listen` until a shutdown signal, following the lifecycle
/// in the module docs. `warm_up` loads and exercises the model; the services report
/// SERVING only after it succeeds.
pub async fn serve<W>(args: &ServerArgs, services: ServiceSet, warm_up: W) -> anyhow::Result<()>
where
    W: Future<Output = anyhow::Result<()>>,
{
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding gRPC address {}", args.listen))?;
    serve_on(listener, args, services, warm_up, shutdown::signal()).await
}

/// As [`serve`], on a bound listener and with an explicit shutdown future (tests).
pub async fn serve_on<W, S>(
    listener: tokio::net::TcpListener,
    args: &ServerArgs,
    services: ServiceSet,
    warm_up: W,
    shutdown_signal: S,
) -> anyhow::Result<()>
where
    W: Future<Output = anyhow::Result<()>>,
    S: Future,
    S::Output: std::fmt::Display,
{
    let addr: SocketAddr = listener.local_addr()?;
    let ServiceSet { mut routes, names, http, .. } = services;
    let api_keys = args.api_keys()?;
    if api_keys.is_some() {
        tracing::info!("API keys required (health checks and reflection stay open)");
    }

    let readiness = Health::new(&names);
    let tls_files = args.tls_files();
    let http = match http {
        Some((listen, router)) => {
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding HTTP address {listen}"))?;
            let limits = HttpLimits {
                header_timeout: Duration::from_millis(args.http_header_timeout_ms),
                body_timeout: Duration::from_millis(args.http_body_timeout_ms),
                max_connections: args.http_max_connections,
                max_connections_per_client: args.http_max_connections_per_client,
            };
            let tls = tls_files.clone().map(|f| ServerTls::load(f, &[b"http/1.1"])).transpose().context("TLS for the HTTP listener")?;
            Some(spawn_http(listener, router, readiness.clone(), limits, tls)?)
        }
        None => None,
    };
    // The metrics port, with the plain-HTTP probes (its own limits: scrapers are few).
    let metrics_http = match m::take_endpoint() {
        Some((listener, router)) => {
            let limits = HttpLimits {
                header_timeout: Duration::from_secs(10),
                body_timeout: Duration::from_secs(10),
                max_connections: 64,
                max_connections_per_client: 16,
            };
            Some(spawn_http(listener, router, readiness.clone(), limits, None)?)
        }
        None => None,
    };
    let grpc_tls = tls_files.map(|f| ServerTls::load(f, &[b"h2"])).transpose().context("TLS for the gRPC listener")?;
    if grpc_tls.is_some() {
        tracing::info!(mutual = args.tls_client_ca.is_some(), "TLS on");
    }

    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mmc_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection");
    for name in &names {
        reflection = reflection.with_service_name(*name);
    }
    let reflection_v1 = reflection.build_v1().context("building reflection service")?;
    routes.add_service(readiness.service()).add_service(reflection_v1);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .tcp_nodelay(true)
        .layer(PolicyLayer::new(PolicyConfig { max_concurrency: args.max_concurrency, default_timeout: args.request_timeout(), api_keys }))
        .add_routes(routes.routes());
    let stopped = async {
        let _ = stop_rx.await;
    };
    let server: futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> = match grpc_tls {
        Some(tls) => {
            let handshake_timeout = Duration::from_millis(args.http_header_timeout_ms);
            Box::pin(router.serve_with_incoming_shutdown(tls::incoming(listener, tls, handshake_timeout), stopped))
        }
        None => {
            // `.tcp_nodelay(true)` above is ignored for an incoming stream of our own: set it
            // on each socket, or Nagle holds an answer's last frames (the trailers) until the
            // client's delayed ACK, 40 ms on Linux, on every unary call.
            let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |accepted| {
                if let Ok(stream) = &accepted {
                    let _ = stream.set_nodelay(true);
                }
                accepted
            });
            Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
        }
    };
    let mut server = tokio::spawn(server);
    tracing::info!(%addr, services = ?names, "gRPC server listening (NOT_SERVING until warm)");

    tokio::pin!(shutdown_signal);
    tokio::pin!(warm_up);
    let mut warm = false;
    let reason = loop {
        tokio::select! {
            result = &mut warm_up, if !warm => {
                if let Err(e) = result {
                    readiness.set(false);
                    readiness.close();
                    let _ = stop_tx.send(());
                    let _ = server.await;
                    if let Some(http) = http {
                        http.stop().await;
                    }
                    return Err(e.context("model warm-up failed"));
                }
                warm = true;
                readiness.set(true);
                tracing::info!(%addr, "SERVING");
            }
            signal = &mut shutdown_signal => break signal.to_string(),
            result = &mut server => return ended(result),
        }
    };

    tracing::info!(reason, drain_grace_ms = args.drain_grace_ms, drain_timeout_ms = args.drain_timeout_ms, "draining");
    readiness.set(false);
    // Still serving while the news spreads; a second signal skips the wait.
    if !args.drain_grace().is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(args.drain_grace()) => {}
            _ = shutdown::signal() => tracing::info!("second signal: stopping now"),
            result = &mut server => return ended(result),
        }
    }
    readiness.close();
    let _ = stop_tx.send(());
    let drain_deadline = tokio::time::Instant::now() + args.drain_timeout();
    if let Some(mut http) = http {
        let _ = http.stop_tx.send(true);
        if tokio::time::timeout_at(drain_deadline, &mut http.task).await.is_err() {
            http.task.abort();
            tracing::warn!("drain deadline passed; remaining HTTP requests were cut");
        }
    }
    match tokio::time::timeout_at(drain_deadline, &mut server).await {
        Ok(Ok(Ok(()))) => tracing::info!("drained; stopped"),
        Ok(Ok(Err(e))) => return Err(anyhow::Error::new(e).context("gRPC server failed while draining")),
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("gRPC server task panicked")),
        Err(_) => {
            server.abort();
            tracing::warn!("drain deadline passed; remaining requests were cut");
        }
    }
    if let Some(metrics_http) = metrics_http {
        metrics_http.stop().await;
    }
    Ok(())
}

/// The result of a gRPC server task that ended before it was told to stop.
fn ended(result: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("gRPC server failed")),
        Err(e) => Err(anyhow::Error::new(e).context("gRPC server task panicked")),
    }
}

/// A running HTTP server and the switch that starts its graceful shutdown.
struct HttpServer {
    stop_tx: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }
}

/// Bounds of the HTTP listener (see [`ServerArgs::http_header_timeout_ms`]).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Time a connection gets to send a request's headers (from connecting, or from the
    /// end of its previous request).
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (0 = no cap).
    pub max_connections_per_client: usize,
}

/// Open connections per client address, and the slot a connection holds until it ends.
#[derive(Clone, Default)]
struct PerClient(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

struct ClientSlot(PerClient, std::net::IpAddr);

impl PerClient {
    fn take(&self, ip: std::net::IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().expect("per-client lock");
        let n = open.entry(ip).or_insert(0);
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = (self.0).0.lock().expect("per-client lock");
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Starts serving `router` (plus `GET /healthz`) on `listener` until told to stop.
///
/// Why not `axum::serve`: it holds a connection that never sends its headers, or sits idle
/// between requests, for as long as the client likes, and accepts without bound, so a few
/// hundred half-open sockets pin memory and file descriptors (issue #28). This loop serves
/// each connection with hyper's HTTP/1.1, a header-read timeout that runs from the moment
/// of connecting (and between keep-alive requests), and a cap on open connections; on stop
/// it stops accepting and lets open requests finish. HTTP/2 is left out on purpose: its
/// version detection waits for the first bytes without any timeout, and browsers speak
/// HTTP/2 only over TLS, which a proxy in front terminates (our own TLS offers HTTP/1.1).
fn spawn_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    health: Health,
    limits: HttpLimits,
    tls: Option<ServerTls>,
) -> anyhow::Result<HttpServer> {
    use axum::{http::StatusCode, response::IntoResponse, routing::get};
    use hyper_util::{
        rt::{TokioIo, TokioTimer},
        server::graceful::GracefulShutdown,
        service::TowerToHyperService,
    };
    let addr = listener.local_addr()?;
    let router = router.route(
        "/healthz",
        get(move || {
            let serving = health.serving();
            async move {
                if serving {
                    (StatusCode::OK, "SERVING\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
                }
            }
        }),
    );
    // A body that stops arriving fails the read instead of holding the request open, and the
    // answer is 408 Request Timeout whatever the handler made of the failed read.
    let body_timeout = limits.body_timeout;
    let router = router.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| async move {
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (parts, body) = request.into_parts();
        let body = axum::body::Body::new(StallGuard { inner: body, limit: body_timeout, timer: None, stalled: stalled.clone() });
        let response = next.run(axum::extract::Request::from_parts(parts, body)).await;
        if !stalled.load(std::sync::atomic::Ordering::SeqCst) {
            return response;
        }
        let message = format!("the request body stalled: no data for {} ms", body_timeout.as_millis());
        let body = serde_json::json!({ "error": { "message": message, "type": "invalid_request_error", "param": null, "code": "request_timeout" } });
        (StatusCode::REQUEST_TIMEOUT, [(axum::http::header::CONNECTION, "close")], axum::Json(body)).into_response()
    }));
    // Outermost: every answer, refusals by the layers inside included, carries the request
    // id; the router's own span records it from the request's extensions.
    let router = router.layer(axum::middleware::from_fn(|mut request: axum::extract::Request, next: axum::middleware::Next| async move {
        let id = crate::request_id::RequestId::of(request.headers());
        request.extensions_mut().insert(id.clone());
        let mut response = next.run(request).await;
        response.headers_mut().insert(crate::request_id::HEADER, id.header_value());
        response
    }));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_client = PerClient::default();
    let task = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        // 64 KiB of request line and headers at most (hyper's default is its 400 KiB read
        // buffer): more is answered 431, and a thousand connections cannot pin 400 MB.
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_header_size(64 * 1024).max_buf_size(64 * 1024);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop_rx.wait_for(|stop| *stop) => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accepting an HTTP connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                metrics::counter!("mmc_http_connections_refused_total", "reason" => "total").increment(1);
                drop(stream);
                continue;
            };
            let Some(slot) = per_client.take(peer.ip(), limits.max_connections_per_client) else {
                metrics::counter!("mmc_http_connections_refused_total", "reason" => "per_client").increment(1);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (builder, router, watcher, tls) = (builder.clone(), router.clone(), graceful.watcher(), tls.clone());
            tokio::spawn(async move {
                let service = TowerToHyperService::new(router);
                match tls {
                    // The handshake counts against the header-read timeout.
                    Some(tls) => {
                        if let Some(stream) = tls.accept(stream, peer, limits.header_timeout, "http").await {
                            let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                        }
                    }
                    None => {
                        let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                    }
                }
                drop((permit, slot));
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok::<(), std::io::Error>(())
    });
    tracing::info!(%addr, "HTTP server listening");
    Ok(HttpServer { stop_tx, task })
}

/// A request body that fails when no data arrives for `limit` (between two pieces, or
/// before the first), and records that it did in `stalled`.
struct StallGuard {
    inner: axum::body::Body,
    limit: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for StallGuard {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let limit = this.limit;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.stalled.store(true, std::sync::atomic::Ordering::SeqCst);
                        Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body stalled")))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The whole `main` of a service: [`run`] + [`serve`] with the message limit from
/// `args`. `add` registers the service's gRPC servers; `warm_up` loads the model.
pub fn run_service<A, W>(service: &'static str, args: ServerArgs, add: A, warm_up: W) -> ExitCode
where
    A: FnOnce(ServiceSet) -> ServiceSet,
    W: Future<Output = anyhow::Result<()>>,
{
    let services = add(ServiceSet::new().message_limit(args.max_message_bytes));
    let serve_args = args.clone();
    run(service, args, || async move { serve(&serve_args, services, warm_up).await })
}
