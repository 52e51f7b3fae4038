//! The gateway's image flows as a client sees them: real `mmc-embed`, `mmc-caption` and
//! `mmc-gateway` processes on loopback, real photos. Indexing, text and image search,
//! description, paging, deletion, restart durability, and a caption service killed in the
//! middle of an upload.

use std::{collections::HashMap, path::Path, time::Duration};

use mmc_proto::{
    caption::v1::CaptionMode,
    common::v1::Image,
    gateway::v1::{
        gateway_service_client::GatewayServiceClient, index_images_response::Event, search_images_request::Query, DeleteImageRequest,
        DescribeImageRequest, GetMeetingRequest, IndexImagesRequest, IndexImagesResponse, ListImagesRequest, SearchImagesRequest,
        SearchImagesResponse,
    },
};
use mmc_tests::{
    assert_documented_stages, free_port_range, http_get, metric_value, postgres::Postgres, start_service, start_service_logged, start_service_on,
    Service,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Code, Streaming};

pub const PHOTOS: [&str; 7] = ["astronaut.png", "bike.jpg", "cat.png", "coffee.png", "hubble_deep_field.jpg", "motorcycle.png", "rocket.jpg"];

pub fn photo(name: &str) -> Image {
    let path = mmc_tests::models_dir().join("test-photos").join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `mmc models fetch --profile test-assets`)", path.display()));
    Image { data: data.into(), mime_type: String::new(), source_name: name.to_string() }
}

async fn start_gateway(embed: &str, caption: &str, data_dir: &Path) -> Service {
    start_gateway_on(embed, caption, data_dir, None).await
}

/// [`start_gateway`] with its state in PostgreSQL database `store` when given.
pub async fn start_gateway_on(embed: &str, caption: &str, data_dir: &Path, store: Option<&str>) -> Service {
    start_gateway_with(embed, caption, data_dir, store, &[]).await
}

/// [`start_gateway_on`] with `extra` arguments.
pub async fn start_gateway_with(embed: &str, caption: &str, data_dir: &Path, store: Option<&str>, extra: &[&str]) -> Service {
    let data = data_dir.to_str().unwrap();
    // Short backoff so the killed-upstream case fails fast.
    let mut args = vec!["--embed-endpoint", embed, "--caption-endpoint", caption, "--data-dir", data, "--retry-backoff-ms", "50"];
    args.extend(store.map(|url| ["--store", url]).into_iter().flatten());
    args.extend(extra);
    start_service("mmc-gateway", &args, Duration::from_secs(60)).await
}

/// An IndexImages call whose requests are fed one by one.
pub struct Upload {
    tx: mpsc::Sender<IndexImagesRequest>,
    responses: Streaming<IndexImagesResponse>,
}

impl Upload {
    pub async fn open(client: &mut GatewayServiceClient<Channel>) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let responses = client.index_images(ReceiverStream::new(rx)).await.unwrap().into_inner();
        Self { tx, responses }
    }

    /// Sends one image and returns its event (indexed or failure), skipping progress.
    pub async fn send(&mut self, name: &str, metadata: &[(&str, &str)]) -> Event {
        let metadata = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.tx.send(IndexImagesRequest { image: Some(photo(name)), metadata }).await.unwrap();
        loop {
            let message = self.responses.message().await.unwrap().expect("stream ended early");
            match message.event.unwrap() {
                Event::Progress(_) => continue,
                event => return event,
            }
        }
    }

    /// Ends the upload and returns the summary's (indexed, already_indexed, failed).
    pub async fn finish(mut self) -> (u32, u32, u32) {
        drop(self.tx);
        while let Some(message) = self.responses.message().await.unwrap() {
            if let Some(Event::Summary(s)) = message.event {
                return (s.indexed, s.already_indexed, s.failed);
            }
        }
        panic!("no summary");
    }
}

pub async fn search(client: &mut GatewayServiceClient<Channel>, query: Query) -> SearchImagesResponse {
    let request = SearchImagesRequest { query: Some(query), top_k: 7, score_threshold: -1.0, metadata_filter: HashMap::new() };
    client.search_images(request).await.unwrap().into_inner()
}

pub fn sources(response: &SearchImagesResponse) -> Vec<String> {
    response.hits.iter().map(|h| h.image.as_ref().unwrap().source_name.clone()).collect()
}

pub async fn count_images(client: &mut GatewayServiceClient<Channel>) -> usize {
    let mut token = String::new();
    let mut n = 0;
    loop {
        let page = client.list_images(ListImagesRequest { page_size: 3, page_token: token, needs_review: false }).await.unwrap().into_inner();
        assert!(page.images.len() <= 3);
        n += page.images.len();
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_search_describe_survive_restarts_and_a_killed_caption_service() {
    image_flows(None).await;
}

/// The same test body with the images, vectors and thumbnails in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_search_describe_on_postgres() {
    let postgres = Postgres::start();
    image_flows(Some(&postgres.database("images"))).await;
}

async fn image_flows(store: Option<&str>) {
    let data = tempfile::tempdir().unwrap();
    let caption_port = free_port_range(2);
    let (embed, captioner) = tokio::join!(
        start_service("mmc-embed", &[], Duration::from_secs(60)),
        start_service_on("mmc-caption", caption_port, &[], Duration::from_secs(60)),
    );
    let gateway = start_gateway_on(&embed.url, &captioner.url, data.path(), store).await;
    let mut client = GatewayServiceClient::new(gateway.channel.clone());

    // Index every photo but the cat in one stream; the cat comes later.
    let mut upload = Upload::open(&mut client).await;
    for name in PHOTOS.iter().filter(|n| **n != "cat.png") {
        match upload.send(name, &[("album", if name.contains("bike") || name.contains("motor") { "vehicles" } else { "other" })]).await {
            Event::Indexed(i) => {
                assert!(!i.already_indexed && !i.caption.is_empty() && !i.labels.is_empty(), "{name}: {i:?}");
                println!("{name}: {}", i.caption);
            }
            other => panic!("{name} not indexed: {other:?}"),
        }
    }
    // Re-sending content already stored stores nothing new.
    match upload.send("bike.jpg", &[]).await {
        Event::Indexed(i) => assert!(i.already_indexed),
        other => panic!("{other:?}"),
    }
    assert_eq!(upload.finish().await, (6, 1, 0));

    // The caption service dies in the middle of an upload: that image fails with
    // UNAVAILABLE naming the caption stage; once it is back, the same stream goes on.
    let mut upload = Upload::open(&mut client).await;
    drop(captioner);
    match upload.send("cat.png", &[("album", "other")]).await {
        Event::Failure(f) => {
            assert_eq!(f.code, "UNAVAILABLE", "{f:?}");
            assert!(f.message.contains("stage caption") && f.message.contains("caption service"), "{f:?}");
            assert_eq!(f.source_name, "cat.png");
        }
        other => panic!("cat indexed without a caption service: {other:?}"),
    }
    let captioner = start_service_on("mmc-caption", caption_port, &[], Duration::from_secs(60)).await;
    match upload.send("cat.png", &[("album", "other")]).await {
        Event::Indexed(i) => assert!(!i.already_indexed && i.caption.to_lowercase().contains("cat"), "{i:?}"),
        other => panic!("cat not indexed after the caption service came back: {other:?}"),
    }
    assert_eq!(upload.finish().await, (1, 0, 1));
    assert_eq!(count_images(&mut client).await, 7);

    // Text search ranks the photographed object first.
    for (query, want) in [
        ("a cat", "cat.png"),
        ("a cup of coffee", "coffee.png"),
        ("a motorcycle", "motorcycle.png"),
        ("a bicycle", "bike.jpg"),
        ("a rocket", "rocket.jpg"),
    ] {
        let response = search(&mut client, Query::Text(query.into())).await;
        let ranked = sources(&response);
        println!("{query:?}: {ranked:?} {:?}", response.hits.iter().map(|h| h.score).collect::<Vec<_>>());
        assert_eq!(ranked.first().map(String::as_str), Some(want), "{query:?} ranked {ranked:?}");
        assert!(response.hits.windows(2).all(|w| w[0].score >= w[1].score));
        let stages: Vec<&str> = response.timings.iter().map(|t| t.stage.as_str()).collect();
        assert_eq!(stages, ["embed_query", "search"]);
        // The store's search is the gateway's own work: no model service time.
        assert!(response.timings[0].upstream_ms > 0.0 && response.timings[1].upstream_ms == 0.0, "{:?}", response.timings);
        assert_documented_stages("mmc/gateway/v1/gateway.proto", "SearchImagesResponse", stages);
    }
    // A photo finds itself first.
    for name in PHOTOS {
        let ranked = sources(&search(&mut client, Query::Image(photo(name))).await);
        assert_eq!(ranked.first().map(String::as_str), Some(name), "image search ranked {ranked:?}");
    }
    // Metadata filters and thresholds.
    let request = SearchImagesRequest {
        query: Some(Query::Text("a vehicle".into())),
        top_k: 10,
        score_threshold: -1.0,
        metadata_filter: [("album".to_string(), "vehicles".to_string())].into(),
    };
    let mut filtered = sources(&client.search_images(request).await.unwrap().into_inner());
    filtered.sort();
    assert_eq!(filtered, ["bike.jpg", "motorcycle.png"]);
    let strict = SearchImagesRequest { query: Some(Query::Text("a cat".into())), top_k: 10, score_threshold: 0.99, metadata_filter: HashMap::new() };
    assert!(client.search_images(strict).await.unwrap().into_inner().hits.is_empty());

    // DescribeImage: alt text and a detailed description of the cat.
    let request = DescribeImageRequest { image: Some(photo("cat.png")), modes: vec![CaptionMode::AltText as i32, CaptionMode::Detailed as i32] };
    let described = client.describe_image(request).await.unwrap().into_inner();
    assert_eq!(described.captions.len(), 2);
    assert_eq!(described.captions[0].mode(), CaptionMode::AltText);
    assert_eq!(described.captions[1].mode(), CaptionMode::Detailed);
    assert!(described.captions[0].text.to_lowercase().contains("cat") && described.captions[0].text.chars().count() <= 125, "{described:?}");
    assert!(!described.labels.is_empty());
    let stages: Vec<&str> = described.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(stages, ["encode_image", "caption", "caption"]);
    assert_documented_stages("mmc/gateway/v1/gateway.proto", "DescribeImageResponse", stages);
    // Each stage that called a model service carries that service's own time for the call
    // (its `mmc-handling-ms` trailer): more than nothing, less than the stage took.
    for t in &described.timings {
        assert!(t.upstream_ms > 0.0 && t.upstream_ms <= t.duration_ms, "{t:?}");
    }

    // Bad requests are refused with INVALID_ARGUMENT and a reason.
    let bad = [
        client.search_images(SearchImagesRequest { query: Some(Query::Text("  ".into())), ..Default::default() }).await.map(|_| ()),
        client.search_images(SearchImagesRequest { query: None, ..Default::default() }).await.map(|_| ()),
        client.search_images(SearchImagesRequest { query: Some(Query::Text("cat".into())), top_k: 1000, ..Default::default() }).await.map(|_| ()),
        client.list_images(ListImagesRequest { page_size: 1, page_token: "not-a-token".into(), needs_review: false }).await.map(|_| ()),
        client.describe_image(DescribeImageRequest { image: None, modes: vec![] }).await.map(|_| ()),
        client.describe_image(DescribeImageRequest { image: Some(photo("cat.png")), modes: vec![9] }).await.map(|_| ()),
        client.delete_image(DeleteImageRequest { image_id: String::new() }).await.map(|_| ()),
    ];
    for (i, result) in bad.into_iter().enumerate() {
        let status = result.expect_err("bad request accepted");
        assert_eq!(status.code(), Code::InvalidArgument, "case {i}: {status:?}");
        assert!(!status.message().is_empty());
    }
    // A huge value is quoted back cut short (a 100 KB id once overflowed the gRPC trailer,
    // and the client saw "metadata size exceeds hard limit" instead of the reason).
    let huge = "x".repeat(100_000);
    let status = client.get_meeting(GetMeetingRequest { meeting_id: huge.clone() }).await.unwrap_err();
    assert!(status.code() == Code::NotFound && status.message().len() < 200, "{:?}: {} bytes", status.code(), status.message().len());
    let request =
        SearchImagesRequest { query: Some(Query::Text("cat".into())), metadata_filter: [(huge, "v".to_string())].into(), ..Default::default() };
    let status = client.search_images(request).await.unwrap_err();
    assert!(status.code() == Code::InvalidArgument && status.message().len() < 300, "{:?}: {} bytes", status.code(), status.message().len());
    // A corrupt image is refused by the encoder; the stage is named.
    let corrupt = Image { data: b"\x89PNG\r\n\x1a\nnot really".to_vec().into(), mime_type: String::new(), source_name: "broken.png".into() };
    let status = client.describe_image(DescribeImageRequest { image: Some(corrupt), modes: vec![] }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("stage encode_image"), "{status:?}");

    // Delete one, then restart the gateway on the same data: the index is intact.
    let cat_id = search(&mut client, Query::Image(photo("cat.png"))).await.hits[0].image.as_ref().unwrap().image_id.clone();
    let hubble_id = search(&mut client, Query::Image(photo("hubble_deep_field.jpg"))).await.hits[0].image.as_ref().unwrap().image_id.clone();
    assert!(client.delete_image(DeleteImageRequest { image_id: hubble_id.clone() }).await.unwrap().into_inner().deleted);
    assert!(!client.delete_image(DeleteImageRequest { image_id: hubble_id }).await.unwrap().into_inner().deleted);
    let (_, scrape) = http_get(&gateway.metrics, "/metrics").unwrap();
    assert!(metric_value(&scrape, "mmc_gateway_stage_duration_seconds_count", &["stage=\"caption\""]).unwrap_or(0.0) >= 7.0, "{scrape}");
    assert_eq!(metric_value(&scrape, "mmc_gateway_indexed_images", &[]), Some(6.0));
    drop(gateway);
    let gateway = start_gateway_on(&embed.url, &captioner.url, data.path(), store).await;
    let mut client = GatewayServiceClient::new(gateway.channel.clone());
    assert_eq!(count_images(&mut client).await, 6);
    let response = search(&mut client, Query::Text("a cat".into())).await;
    assert_eq!(response.hits[0].image.as_ref().unwrap().image_id, cat_id);
    assert!(response.hits[0].image.as_ref().unwrap().models.iter().any(|m| m.id == "all-minilm-l6-v2"));
}

/// With no model service reachable the gateway still starts (health SERVING) and answers
/// UNAVAILABLE naming the stage and service (not its address), after its bounded retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_services_are_named_in_the_error() {
    let data = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port_range(1));
    let gateway = start_gateway(&dead, &dead, data.path()).await;
    let mut client = GatewayServiceClient::new(gateway.channel.clone());
    let status = client.describe_image(DescribeImageRequest { image: Some(photo("cat.png")), modes: vec![] }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The stage and the service are named; the address is not (it stays in the gateway's log).
    assert!(status.message().contains("stage encode_image") && status.message().contains("embed service"), "{status:?}");
    assert!(!status.message().contains(&dead) && !status.message().contains("127.0.0.1"), "{status:?}");
    let (_, scrape) = http_get(&gateway.metrics, "/metrics").unwrap();
    assert_eq!(metric_value(&scrape, "mmc_gateway_stage_retries_total", &["stage=\"encode_image\""]), Some(2.0), "{scrape}");
    // Search on an empty index needs the embed service too: same clear error.
    let status = client.search_images(SearchImagesRequest { query: Some(Query::Text("a cat".into())), ..Default::default() }).await.unwrap_err();
    assert!(status.message().contains("stage embed_query"), "{status:?}");
}

/// The line of the log file `log` that holds `id` and `text` (the log is written by another
/// process: wait a moment for it).
async fn log_line(log: &Path, id: &str, text: &str) -> String {
    let found = mmc_tests::eventually(Duration::from_secs(5), || async {
        let log = std::fs::read_to_string(log).ok()?;
        log.lines().find(|l| l.contains(id) && l.contains(text)).map(str::to_string)
    })
    .await;
    found.unwrap_or_else(|| panic!("no line with {id:?} and {text:?} in {}:\n{}", log.display(), std::fs::read_to_string(log).unwrap_or_default()))
}

/// A failed call's message leaves out internal detail (a model service's address), which
/// goes to the gateway's log instead; the `x-request-id` the client gets finds that line,
/// over gRPC (in the error's metadata) and HTTP (a response header). A client may choose
/// the id, and the model services the call reaches log under the same one. An id that
/// could forge a log line is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_a_client_gets_finds_the_errors_detail_in_the_logs() {
    let (logs, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (embed_log, gateway_log) = (logs.path().join("embed.log"), logs.path().join("gateway.log"));
    let embed = start_service_logged("mmc-embed", &[], Duration::from_secs(60), &embed_log).await;
    let dead = format!("http://127.0.0.1:{}", free_port_range(1));
    let http = format!("127.0.0.1:{}", free_port_range(1));
    let args = ["--embed-endpoint", &embed.url, "--caption-endpoint", &dead, "--data-dir", data.path().to_str().unwrap(), "--retry-backoff-ms", "50"];
    let gateway = start_service_logged("mmc-gateway", &[&args[..], &["--http-listen", &http]].concat(), Duration::from_secs(60), &gateway_log).await;
    let mut client = GatewayServiceClient::new(gateway.channel.clone());

    // gRPC: the captioner is down. The client reads the stage, the log the address.
    let status = client.describe_image(DescribeImageRequest { image: Some(photo("cat.png")), modes: vec![] }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains(&dead), "{status:?}");
    let id = status.metadata().get("x-request-id").expect("x-request-id in the error's metadata").to_str().unwrap().to_string();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    let line = log_line(&gateway_log, &id, &dead).await;
    assert!(line.contains("stage failed") && line.contains("caption"), "{line}");

    // A client-chosen id, on a call the embed service refuses (not an image): both services
    // log it under that id.
    let mut request = tonic::Request::new(DescribeImageRequest {
        image: Some(Image { data: b"not an image at all".to_vec().into(), mime_type: String::new(), source_name: "junk.png".into() }),
        modes: vec![],
    });
    request.metadata_mut().insert("x-request-id", "support-case-42".parse().unwrap());
    let status = client.describe_image(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("support-case-42"));
    log_line(&gateway_log, "support-case-42", "INVALID_ARGUMENT").await;
    let line = log_line(&embed_log, "support-case-42", "request failed").await;
    assert!(line.contains("EncodeImage"), "{line}");

    // HTTP: the same over the REST route, and a forged id (quotes and spaces) is replaced.
    let boundary = "mmc-test-boundary";
    let cat = std::fs::read(mmc_tests::models_dir().join("test-photos/cat.png")).unwrap();
    let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cat.png\"\r\nContent-Type: image/png\r\n\r\n")
        .into_bytes();
    form.extend_from_slice(&cat);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut raw = format!(
        "POST /v1/images/describe HTTP/1.1\r\nHost: {http}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nX-Request-Id: x\" level=ERROR msg=\"forged\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        form.len()
    )
    .into_bytes();
    raw.extend_from_slice(&form);
    let response = mmc_tests::http_exchange(&http, &raw, Duration::from_secs(60)).unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(!response.contains(&dead) && !response.contains("forged"), "{response}");
    let id = response
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id header: {response}"))
        .trim()
        .to_string();
    assert_eq!(id.len(), 32, "{id:?}");
    let line = log_line(&gateway_log, &id, &dead).await;
    assert!(line.contains("stage failed"), "{line}");
    assert!(!std::fs::read_to_string(&gateway_log).unwrap().contains("forged"));
}

/// Two embed replicas behind one `--embed-endpoint` list: calls are spread over both, and
/// when one dies the searches go on through the other (its failures are retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_balanced_over_replicas_and_survive_losing_one() {
    let data = tempfile::tempdir().unwrap();
    let (first, second) =
        tokio::join!(start_service("mmc-embed", &[], Duration::from_secs(60)), start_service("mmc-embed", &[], Duration::from_secs(60)),);
    let replicas = format!("{},{}", first.url, second.url);
    let dead = format!("http://127.0.0.1:{}", free_port_range(1));
    let gateway = start_gateway(&replicas, &dead, data.path()).await;
    let mut client = GatewayServiceClient::new(gateway.channel.clone());
    let searches = |n: usize| {
        let mut client = client.clone();
        async move {
            for i in 0..n {
                let request = SearchImagesRequest { query: Some(Query::Text(format!("a photo number {i}"))), ..Default::default() };
                client.search_images(request).await.unwrap_or_else(|e| panic!("search {i}: {e:?}"));
            }
        }
    };
    searches(24).await;
    let served = |s: &Service| {
        let (_, scrape) = http_get(&s.metrics, "/metrics").unwrap();
        metric_value(&scrape, "grpc_server_handled_total", &["grpc_method=\"EmbedText\"", "grpc_code=\"OK\""]).unwrap_or(0.0)
    };
    let (a, b) = (served(&first), served(&second));
    println!("EmbedText calls per replica: {a} and {b}");
    assert_eq!(a + b, 24.0);
    assert!(a >= 3.0 && b >= 3.0, "both replicas serve: {a} and {b}");
    // One replica dies: every search still succeeds.
    drop(first);
    searches(12).await;
    assert!(served(&second) >= b + 12.0);
    let _ = client.list_images(ListImagesRequest::default()).await.unwrap();
}

/// A library past the graph's threshold (one real photo, then 20 000 images of random
/// vectors added by `mmc-store fill`, which builds and saves the graph once): the gateway
/// loads that graph at start instead of building it, finds the photo through it, and
/// saves it again on SIGTERM after a change, so the next start has nothing to replay.
/// Started with `--search-index scan` on the same data, it codes the images at start and
/// finds the photos through the scan instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_library_keeps_its_search_graph_across_graceful_restarts() {
    use nix::sys::signal::{kill, Signal};
    let (logs, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (embed, captioner) =
        tokio::join!(start_service("mmc-embed", &[], Duration::from_secs(60)), start_service("mmc-caption", &[], Duration::from_secs(60)),);
    let dir = data.path().to_str().unwrap();
    let args = ["--embed-endpoint", &embed.url, "--caption-endpoint", &captioner.url, "--data-dir", dir];
    let stop = |mut gateway: Service| {
        kill(nix::unistd::Pid::from_raw(gateway.process.pid()), Signal::SIGTERM).unwrap();
        let status = gateway.process.wait_timeout(Duration::from_secs(60)).expect("the gateway exits after SIGTERM");
        assert!(status.success(), "{status:?}");
    };
    // A gateway started with its log in file `name`, and its log line saying how the graph came.
    let start_logged = |name: &str| {
        let (log, args) = (logs.path().join(name), args);
        async move {
            let gateway = start_service_logged("mmc-gateway", &args, Duration::from_secs(60), &log).await;
            let line = mmc_tests::eventually(Duration::from_secs(120), || async {
                std::fs::read_to_string(&log).ok()?.lines().find(|l| l.contains("approximate index ready")).map(str::to_string)
            })
            .await;
            let line = line.unwrap_or_else(|| panic!("no graph in {}:\n{}", log.display(), std::fs::read_to_string(&log).unwrap_or_default()));
            (GatewayServiceClient::new(gateway.channel.clone()), gateway, line)
        }
    };
    let index = |client: &mut GatewayServiceClient<Channel>, name: &'static str| {
        let mut client = client.clone();
        async move {
            let mut upload = Upload::open(&mut client).await;
            assert!(matches!(upload.send(name, &[]).await, Event::Indexed(_)), "{name}");
            upload.finish().await;
        }
    };

    // The photo fixes the index's embedding space; fill adds random vectors in it.
    let gateway = start_service("mmc-gateway", &args, Duration::from_secs(60)).await;
    index(&mut GatewayServiceClient::new(gateway.channel.clone()), "rocket.jpg").await;
    stop(gateway);
    let fill = std::process::Command::new(mmc_tests::binary("mmc-store"))
        .args(["fill", "--store", &format!("redb:{dir}"), "--count", "20001"])
        .output()
        .unwrap();
    assert!(fill.status.success(), "{}", String::from_utf8_lossy(&fill.stderr));
    assert!(data.path().join("images/images.hnsw.keys").exists(), "fill saved the graph it built");

    // Loaded, not built: nothing to replay. The photo is found among 20 001 through it.
    let (mut client, gateway, line) = start_logged("gateway-1.log").await;
    assert!(line.contains("images=20001") && line.contains("replayed=0"), "{line}");
    assert_eq!(sources(&search(&mut client, Query::Text("a rocket launch".into())).await)[0], "rocket.jpg");
    // A change, then a graceful stop: saved on the way down.
    index(&mut client, "cat.png").await;
    stop(gateway);

    let (mut client, gateway, line) = start_logged("gateway-2.log").await;
    assert!(line.contains("images=20002") && line.contains("replayed=0"), "saved at the stop: {line}");
    assert_eq!(sources(&search(&mut client, Query::Text("a cat".into())).await)[0], "cat.png");
    stop(gateway);

    // The same library with `--search-index scan`: codes made at start, no graph, and the
    // photos found through them.
    let log = logs.path().join("gateway-scan.log");
    let scan_args = [&args[..], &["--search-index", "scan"]].concat();
    let gateway = start_service_logged("mmc-gateway", &scan_args, Duration::from_secs(60), &log).await;
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(read_log().lines().any(|l| l.contains("scan codes ready") && l.contains("images=20002")), "{}", read_log());
    let mut client = GatewayServiceClient::new(gateway.channel.clone());
    assert_eq!(sources(&search(&mut client, Query::Text("a cat".into())).await)[0], "cat.png");
    assert_eq!(sources(&search(&mut client, Query::Text("a rocket launch".into())).await)[0], "rocket.jpg");
    assert!(!read_log().contains("approximate index ready"), "no graph is loaded or built: {}", read_log());
}

/// `--search-index` names what exists: an unknown index is refused at start with the
/// choices, before anything is opened.
#[test]
fn an_unknown_search_index_is_refused_with_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = |extra: &[&str]| {
        let out = std::process::Command::new(mmc_tests::binary("mmc-gateway"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen", "off", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env_remove("MMC_SEARCH_INDEX")
            .env_remove("MMC_STORE_URL")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = gateway(&["--search-index", "hnsw"]);
    assert!(stderr.contains("graph or scan"), "{stderr}");
}
