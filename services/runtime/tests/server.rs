//! The shared server on loopback: load shedding, deadlines, message limits, readiness,
//! and draining, against real tonic clients.

mod common;

use std::time::Duration;

use common::{args, sleep_req, TestServer};
use mmc_proto::{
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedTextRequest},
    textgen::v1::{text_gen_service_client::TextGenServiceClient, GenerateRequest},
};
use tokio::sync::oneshot;
use tonic::{transport::Channel, Code, Request};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

async fn health(ch: Channel, service: &str) -> ServingStatus {
    let resp = HealthClient::new(ch).check(HealthCheckRequest { service: service.into() }).await.unwrap();
    resp.into_inner().status()
}

#[tokio::test]
async fn load_shedding_refuses_at_once_and_spares_health_checks() {
    let server = TestServer::start(args(&["--max-concurrency", "1"])).await;
    let ch = server.channel().await;
    let mut slow = EmbedServiceClient::new(ch.clone());
    let in_flight = tokio::spawn(async move { slow.embed_text(sleep_req(3000)).await });
    // Generous, so a loaded CI machine has surely admitted the first call by then.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let err = EmbedServiceClient::new(ch.clone()).embed_text(sleep_req(0)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("capacity"), "{}", err.message());
    assert!(!in_flight.is_finished(), "the second call must be refused while the first still runs");
    // Probes are exempt from the limit.
    assert_eq!(health(ch.clone(), "mmc.embed.v1.EmbedService").await, ServingStatus::Serving);

    in_flight.await.unwrap().expect("the admitted call completes");
    // The permit is back: a new call is admitted.
    EmbedServiceClient::new(ch).embed_text(sleep_req(0)).await.unwrap();
    server.stop().await.unwrap();
}

// The caller's `grpc-timeout` is tested on the layer itself (policy.rs): over a real
// channel the tonic client enforces the same deadline locally and may answer first.

#[tokio::test]
async fn server_default_timeout_applies_without_grpc_timeout() {
    let server = TestServer::start(args(&["--request-timeout-ms", "200"])).await;
    let mut client = EmbedServiceClient::new(server.channel().await);
    let err = client.embed_text(sleep_req(5000)).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn deadline_cuts_a_server_stream_mid_way() {
    let server = TestServer::start(args(&[])).await;
    let mut client = TextGenServiceClient::new(server.channel().await);
    let mut req = Request::new(GenerateRequest {
        options: Some(mmc_proto::textgen::v1::GenerationOptions { max_tokens: 100, ..Default::default() }),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(1000));
    let mut stream = client.generate(req).await.unwrap().into_inner();
    let mut tokens = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => tokens += 1,
            Ok(None) => panic!("stream ended normally after {tokens} tokens; expected a deadline"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(tokens > 0 && tokens < 100, "got {tokens} tokens before the deadline");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_message_is_refused_and_the_server_stays_up() {
    let server = TestServer::start(args(&["--max-message-bytes", "1024"])).await;
    let ch = server.channel().await;
    let mut client = EmbedServiceClient::new(ch.clone());
    let big = EmbedTextRequest { texts: vec!["x".repeat(4096)], ..Default::default() };
    let err = client.embed_text(big).await.unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted), "unexpected status {err:?}");
    assert!(err.message().contains("1024"), "message names the limit: {}", err.message());
    client.embed_text(sleep_req(0)).await.expect("server still serves");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn not_serving_until_warm() {
    let (warm_tx, warm_rx) = oneshot::channel::<()>();
    let server = TestServer::start_with_warmup(args(&[]), async move {
        warm_rx.await?;
        Ok(())
    })
    .await;
    let ch = server.channel().await;
    assert_eq!(health(ch.clone(), "").await, ServingStatus::NotServing);
    assert_eq!(health(ch.clone(), "mmc.embed.v1.EmbedService").await, ServingStatus::NotServing);
    warm_tx.send(()).unwrap();
    let mut status = ServingStatus::NotServing;
    for _ in 0..100 {
        status = health(ch.clone(), "").await;
        if status == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(health(ch, "mmc.textgen.v1.TextGenService").await, ServingStatus::Serving);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn failed_warm_up_is_an_error_not_a_broken_server() {
    let server = TestServer::start_with_warmup(args(&[]), async { anyhow::bail!("weights missing") }).await;
    let err = server.task.await.unwrap().unwrap_err();
    assert!(format!("{err:#}").contains("weights missing"), "{err:#}");
}

#[tokio::test]
async fn draining_finishes_in_flight_calls_and_reports_not_serving() {
    let server = TestServer::start(args(&["--drain-timeout-ms", "3000"])).await;
    let ch = server.channel().await;
    let mut watch = HealthClient::new(ch.clone()).watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let mut slow = EmbedServiceClient::new(ch);
    let in_flight = tokio::spawn(async move { slow.embed_text(sleep_req(1500)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = tokio::spawn(server.stop());

    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::NotServing);
    in_flight.await.unwrap().expect("a call in flight at shutdown completes");
    // The watch ends when the server stops accepting (after the grace period), so it does
    // not hold the connection, and the drain, open.
    assert!(watch.message().await.map(|m| m.is_none()).unwrap_or(true), "the health watch ends");
    stopped.await.unwrap().expect("server shuts down cleanly");
}

/// Rolling restart, as the gateway sees it: one of two replicas is stopped under load,
/// with no retries anywhere. The replica says NOT_SERVING and keeps serving for its grace
/// period; the balanced channel's health watch takes it out; so no call fails, and the
/// replica still exits soon after the grace period (the watch does not hold it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_replica_leaves_the_balancer_before_it_refuses_anything() {
    use std::sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    };
    let a = TestServer::start(args(&["--drain-grace-ms", "1000", "--drain-timeout-ms", "5000"])).await;
    let b = TestServer::start(args(&[])).await;
    let _ = (a.channel().await, b.channel().await);
    let channel = mmc_runtime::client::connect_balanced(&[format!("http://{}", a.addr), format!("http://{}", b.addr)], None).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (channel, stop, ok, failed) = (channel.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut client = EmbedServiceClient::new(channel);
                while !stop.load(Ordering::SeqCst) {
                    match client.embed_text(sleep_req(20)).await {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("failed call: {e:?}");
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    a.stop().await.expect("the replica drains cleanly");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(failed, 0, "{failed} of {} calls failed while a replica stopped", ok + failed);
    assert!(before > 0 && ok > before, "calls ran before and after the stop ({before}, {ok})");
    assert!(took >= Duration::from_millis(1000), "the grace period was kept ({took:?})");
    assert!(took < Duration::from_millis(3000), "the replica exits soon after its grace period ({took:?})");
}

/// Bytes as they are: a client that sends what no generated client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = bytes::Buf::chunk(src).to_vec();
        bytes::Buf::advance(src, bytes.len());
        Ok(Some(bytes))
    }
}

/// A message that is not protobuf, or a string field that is not UTF-8, is the client's
/// mistake: INVALID_ARGUMENT with a short reason, not INTERNAL; the server goes on.
#[tokio::test]
async fn undecodable_requests_are_client_errors() {
    let server = TestServer::start(args(&[])).await;
    let ch = server.channel().await;
    let path = http::uri::PathAndQuery::from_static("/mmc.embed.v1.EmbedService/EmbedText");
    // Field 1 (texts), length 2, bytes that are not UTF-8; then a truncated varint.
    for body in [vec![0x0a, 0x02, 0xff, 0xfe], vec![0x08, 0xff, 0xff, 0xff]] {
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        grpc.ready().await.unwrap();
        let err = grpc.unary(Request::new(body.clone()), path.clone(), RawCodec).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{body:?}: {err:?}");
        assert!(err.message().starts_with("the request is not a valid"), "{}", err.message());
    }
    EmbedServiceClient::new(ch).embed_text(sleep_req(0)).await.expect("still serving");
}

#[tokio::test]
async fn api_keys_are_required_but_probes_stay_open() {
    let dir = std::env::temp_dir().join(format!("mmc-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    let key = "test-key-0123456789abcdef";
    std::fs::write(&file, format!("# test\n{key}\n")).unwrap();
    let server = TestServer::start(args(&["--api-keys-file", file.to_str().unwrap()])).await;
    let ch = server.channel().await;
    let call = |authorization: Option<String>| {
        let ch = ch.clone();
        async move {
            let mut request = Request::new(sleep_req(0));
            if let Some(a) = authorization {
                request.metadata_mut().insert("authorization", a.parse().unwrap());
            }
            EmbedServiceClient::new(ch).embed_text(request).await
        }
    };
    let missing = call(None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    assert!(missing.message().contains("Bearer"), "{}", missing.message());
    assert_eq!(call(Some("Bearer wrong-key-0123456789".into())).await.unwrap_err().code(), Code::Unauthenticated);
    call(Some(format!("Bearer {key}"))).await.expect("the right key is accepted");
    // Probes need no key.
    assert_eq!(health(ch.clone(), "mmc.embed.v1.EmbedService").await, ServingStatus::Serving);
    server.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads until the peer closes; true when it did so within `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => return true,
            Err(_) => return false,
        }
    }
}

/// A free loopback port below the kernel's ephemeral range. A port found with `:0` lies in
/// that range, and between its release and the server's bind the other tests' outgoing
/// connections can take it as their source port (seen in CI: "no HTTP listener").
fn free_port_below_ephemeral() -> u16 {
    // Tests of this process take turns along the range, so two never pick one port.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let turn = NEXT.fetch_add(101, std::sync::atomic::Ordering::SeqCst);
    let mut port = 20_000 + (nanos ^ std::process::id()).wrapping_add(turn) % 10_000;
    loop {
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
        port = 20_000 + (port - 20_000 + 7) % 10_000;
    }
}

/// A server whose HTTP listener (flags `extra`) has one route, `POST /echo`: its stop
/// switch, its task, and a function that connects to it (waiting for the listener).
async fn echo_server(
    extra: &[&str],
) -> (oneshot::Sender<&'static str>, tokio::task::JoinHandle<anyhow::Result<()>>, impl Fn() -> std::net::TcpStream + Send + 'static) {
    let port = free_port_below_ephemeral();
    let http: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let args = args(extra);
    let echo = axum::Router::new().route("/echo", axum::routing::post(|body: axum::body::Bytes| async move { body }));
    let services = mmc_runtime::server::ServiceSet::new().http(http, echo);
    let (tx, rx) = oneshot::channel::<&'static str>();
    let task = tokio::spawn(async move {
        mmc_runtime::server::serve_on(listener, &args, services, async { Ok(()) }, async { rx.await.unwrap_or("dropped") }).await
    });
    let connect = move || {
        for _ in 0..100 {
            if let Ok(s) = std::net::TcpStream::connect(http) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no HTTP listener on {http}");
    };
    (tx, task, connect)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_that_send_no_headers_are_closed_and_capped() {
    use std::io::Write;
    let (tx, task, connect) =
        echo_server(&["--http-header-timeout-ms", "1500", "--http-body-timeout-ms", "1000", "--http-max-connections", "2"]).await;
    tokio::task::spawn_blocking(move || {
        // Two connections: one silent, one that stops half-way through its headers.
        let mut silent = connect();
        let mut partial = connect();
        partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // A third is over the cap: closed at once, before the others time out.
        let mut third = connect();
        assert!(closed_within(&mut third, Duration::from_millis(1000)), "a connection over the cap was held");
        // The two are closed by the header timeout, not held.
        assert!(closed_within(&mut silent, Duration::from_secs(10)), "a silent connection was held open");
        assert!(closed_within(&mut partial, Duration::from_secs(10)), "a half-sent request was held open");
        // A body that stops half-way is answered with a client error, not waited for.
        let mut stalled = connect();
        stalled.write_all(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789").unwrap();
        stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        std::io::Read::read_exact(&mut stalled, &mut head).expect("an answer to the stalled body");
        assert!(head.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&head));
        drop(stalled);
        // Their slots are free again: a whole request is answered.
        std::thread::sleep(Duration::from_millis(100));
        let mut ok = connect();
        ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut ok, &mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.1 503"), "{response}");
    })
    .await
    .unwrap();
    let _ = tx.send("test stop");
    task.await.unwrap().unwrap();
}

/// One client address cannot take every HTTP connection: over its cap a new connection is
/// closed at once, and its slot comes back when one of its connections ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_take_every_http_connection() {
    use std::io::Write;
    let (tx, task, connect) = echo_server(&["--http-header-timeout-ms", "5000", "--http-max-connections-per-client", "1"]).await;
    tokio::task::spawn_blocking(move || {
        let first = connect();
        std::thread::sleep(Duration::from_millis(200));
        let mut second = connect();
        assert!(closed_within(&mut second, Duration::from_millis(1000)), "a second connection from the same address was held");
        drop(first);
        std::thread::sleep(Duration::from_millis(200));
        let mut third = connect();
        third.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut third, &mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.1 503"), "{response}");
    })
    .await
    .unwrap();
    let _ = tx.send("test stop");
    task.await.unwrap().unwrap();
}

/// The server's end of every accepted gRPC connection has TCP_NODELAY set. Without it
/// Nagle's algorithm holds an answer's last frames (the trailers) until the client's
/// delayed ACK, up to 40 ms on Linux, on every unary call: `tests/bench/jobs.sh` measured a
/// search through the gateway at 76 ms p50 before and 24 ms after.
#[tokio::test]
async fn accepted_connections_send_without_nagle_delay() {
    use std::os::fd::FromRawFd as _;
    let server = TestServer::start(args(&[])).await;
    let client = std::net::TcpStream::connect(server.addr).unwrap();
    let client_addr = client.local_addr().unwrap();
    // This process's socket whose local end is the server and whose peer is that client.
    let server_side_nodelay = || {
        std::fs::read_dir("/proc/self/fd").unwrap().flatten().find_map(|entry| {
            let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            if !target.to_string_lossy().starts_with("socket:") {
                return None;
            }
            // SAFETY: `fd` is an open socket of this process (listed in /proc/self/fd just
            // now); ManuallyDrop leaves it open, so the server keeps owning it.
            let stream = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
            (stream.local_addr().ok()? == server.addr && stream.peer_addr().ok()? == client_addr).then(|| stream.nodelay().unwrap())
        })
    };
    let mut found = None;
    for _ in 0..100 {
        found = server_side_nodelay();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found, Some(true), "the accepted socket (None: not found) must have TCP_NODELAY");
    drop(client);
    server.stop().await.unwrap();
}
