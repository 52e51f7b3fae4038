//! The PostgreSQL store with real processes: an embedded store is copied into it (`mmc db
//! copy`, resumable); two gateways on one database index overlapping photo sets at once
//! and store each photo once; a gateway killed with
//! SIGKILL mid-upload loses no acknowledged image; a database restart under a running
//! gateway is UNAVAILABLE while it lasts and heals without restarting the gateway; the
//! store connects over TLS and checks the server's certificate; gateways that search their
//! own in-memory codes see each other's writes at once.
//! (The image and meeting suites also run whole on PostgreSQL: gateway_images.rs,
//! gateway_meetings.rs.)

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use mmc_proto::gateway::v1::{
    gateway_service_client::GatewayServiceClient, index_images_response::Event, search_images_request::Query, DeleteImageRequest, SearchImagesRequest,
};
use mmc_tests::{binary, eventually, http_get, metric_value, postgres::Postgres, start_service, start_service_logged};
use tonic::Code;

use crate::gateway_images::{count_images, photo, search, sources, start_gateway_on, start_gateway_with, Upload};

/// How many HNSW indexes of the images a database has (0 or 1).
const HNSW_INDEX: &str = "SELECT count(*) FROM pg_indexes WHERE indexname = 'mmc_images_fused_hnsw'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_one_database_and_ride_out_its_restart() {
    let mut postgres = Postgres::start();
    let url = postgres.database("shared");
    let (embed, captioner) =
        tokio::join!(start_service("mmc-embed", &[], Duration::from_secs(60)), start_service("mmc-caption", &[], Duration::from_secs(60)));
    let (dir_a, dir_b, dir_redb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // A laptop's embedded store moves to the database: no model runs, and a second run
    // finds everything there (an interrupted copy is finished by running it again).
    {
        let laptop = start_gateway_on(&embed.url, &captioner.url, dir_redb.path(), None).await;
        let mut client = GatewayServiceClient::new(laptop.channel.clone());
        let mut upload = Upload::open(&mut client).await;
        assert!(matches!(upload.send("hubble_deep_field.jpg", &[("album", "space")]).await, Event::Indexed(_)));
        upload.finish().await;
    }
    let copy_to = |target: &str, extra: &[&str], expect: &str| {
        let out = std::process::Command::new(binary("mmc"))
            .args(["db", "copy", "--from", &format!("redb:{}", dir_redb.path().display()), "--to", target])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains(expect), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    };
    copy_to(&url, &[], "copied 1 images and 0 meetings");
    copy_to(&url, &[], "copied 0 images and 0 meetings");
    // For gateways that search their own codes (`--search-index scan`) the copy builds no
    // HNSW index.
    let for_scan = postgres.database("for_scan");
    copy_to(&for_scan, &["--search-index", "scan"], "copied 1 images");
    assert_eq!(postgres.query("for_scan", HNSW_INDEX), "0");
    // The copy was a bulk load (index dropped, rows written, index built once at the end):
    // the search index is there afterwards.
    let index = HNSW_INDEX;
    assert_eq!(postgres.query("shared", index), "1");
    // A copy interrupted before its end leaves the rows without the index: the next gateway
    // to start builds it.
    postgres.query("shared", "DROP INDEX mmc_images_fused_hnsw");
    // The schema can be applied ahead of a rollout (gateways do it at start too); two at
    // once make it once (the migration runs under an advisory lock).
    let fresh = postgres.database("fresh");
    let migrate = || std::process::Command::new(binary("mmc")).args(["db", "migrate", "--store", &fresh]).spawn().unwrap();
    let (mut first, mut second) = (migrate(), migrate());
    assert!(first.wait().unwrap().success() && second.wait().unwrap().success());
    // Each of the three migrations once.
    assert_eq!(postgres.query("fresh", "SELECT count(*), count(DISTINCT version) FROM mmc_schema_migrations WHERE success"), "3|3");
    assert_eq!(postgres.query("fresh", "SELECT extversion FROM pg_extension WHERE extname = 'vector'"), "0.6.2");
    // Both gateways start at once on the database the copy made, and both serve; b with a
    // pool of two connections.
    let (a, b) = tokio::join!(
        start_gateway_on(&embed.url, &captioner.url, dir_a.path(), Some(&url)),
        start_gateway_with(&embed.url, &captioner.url, dir_b.path(), Some(&url), &["--store-pool-size", "2"]),
    );
    let (mut client_a, mut client_b) = (GatewayServiceClient::new(a.channel.clone()), GatewayServiceClient::new(b.channel.clone()));
    assert_eq!(postgres.query("shared", index), "1", "the gateways built the missing index");

    // Overlapping sets, indexed through both at once: cat and coffee go through both.
    let index = |mut client: GatewayServiceClient<_>, names: &'static [&'static str]| async move {
        let mut upload = Upload::open(&mut client).await;
        for name in names {
            match upload.send(name, &[("album", "shared")]).await {
                Event::Indexed(_) => {}
                other => panic!("{name} not indexed: {other:?}"),
            }
        }
        upload.finish().await
    };
    let (done_a, done_b) = tokio::join!(
        index(client_a.clone(), &["cat.png", "coffee.png", "bike.jpg", "astronaut.png"]),
        index(client_b.clone(), &["coffee.png", "cat.png", "motorcycle.png", "rocket.jpg"]),
    );
    println!("gateway a: {done_a:?}, gateway b: {done_b:?}");
    assert_eq!(done_a.2 + done_b.2, 0, "no failures");
    // Each photo once, whichever gateway stored it; both see all seven (the copied one too).
    assert_eq!(postgres.query("shared", "SELECT count(*), count(DISTINCT content_hash) FROM mmc_images"), "7|7");
    assert_eq!(count_images(&mut client_a).await, 7);
    assert_eq!(count_images(&mut client_b).await, 7);
    // The copied image is found by its copied vectors, with its metadata.
    let request = SearchImagesRequest {
        query: Some(Query::Image(photo("hubble_deep_field.jpg"))),
        top_k: 1,
        score_threshold: -1.0,
        metadata_filter: [("album".to_string(), "space".to_string())].into(),
    };
    let copied = client_a.search_images(request).await.unwrap().into_inner();
    assert_eq!(sources(&copied), ["hubble_deep_field.jpg"]);
    let ranked = sources(&search(&mut client_a, Query::Image(photo("hubble_deep_field.jpg"))).await);
    assert_eq!(ranked.first().map(String::as_str), Some("hubble_deep_field.jpg"), "{ranked:?}");
    for client in [&mut client_a, &mut client_b] {
        let ranked = sources(&search(client, Query::Text("a motorcycle".into())).await);
        assert_eq!(ranked.first().map(String::as_str), Some("motorcycle.png"), "{ranked:?}");
        let ranked = sources(&search(client, Query::Image(photo("cat.png"))).await);
        assert_eq!(ranked.first().map(String::as_str), Some("cat.png"), "{ranked:?}");
    }
    let filtered = SearchImagesRequest {
        query: Some(Query::Text("a vehicle".into())),
        top_k: 10,
        score_threshold: -1.0,
        metadata_filter: [("album".to_string(), "none".to_string())].into(),
    };
    assert!(client_b.search_images(filtered).await.unwrap().into_inner().hits.is_empty());
    // Text PostgreSQL cannot hold is the client's mistake, not a server error.
    let nul = SearchImagesRequest {
        query: Some(Query::Text("a vehicle".into())),
        metadata_filter: [("album".to_string(), "a\u{0}b".to_string())].into(),
        ..Default::default()
    };
    let status = client_b.search_images(nul).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Gateway b's pool of two serves sixteen searches and an upload at once (calls wait for
    // a connection) and never opens more than two.
    let searches = (0..16).map(|_| {
        let mut client = client_b.clone();
        async move { client.search_images(SearchImagesRequest { query: Some(Query::Text("a cat".into())), top_k: 3, ..Default::default() }).await }
    });
    let (results, _) = tokio::join!(futures::future::join_all(searches), index(client_b.clone(), &["cat.png", "coffee.png"]));
    for r in results {
        assert!(r.is_ok(), "{r:?}");
    }
    let (held_a, held_b) = (connections_to(a.process.pid(), postgres.port), connections_to(b.process.pid(), postgres.port));
    println!("connections to PostgreSQL: gateway a {held_a}, gateway b (--store-pool-size 2) {held_b}");
    assert!((1..=2).contains(&held_b), "gateway b holds {held_b} connections with --store-pool-size 2");

    // A gateway killed mid-upload: every image it acknowledged is stored.
    for name in ["bike.jpg", "rocket.jpg"] {
        let id = image_ids(&search(&mut client_b, Query::Image(photo(name))).await)[0].clone();
        assert!(client_b.delete_image(DeleteImageRequest { image_id: id }).await.unwrap().into_inner().deleted);
    }
    assert_eq!(count_images(&mut client_a).await, 5, "deleted through one gateway, gone through the other");
    let mut upload = Upload::open(&mut client_a).await;
    let mut acknowledged = Vec::new();
    for name in ["bike.jpg", "rocket.jpg"] {
        match upload.send(name, &[]).await {
            Event::Indexed(i) => {
                assert!(!i.already_indexed, "{name} was deleted");
                acknowledged.push(i.image_id)
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.process.pid()), nix::sys::signal::Signal::SIGKILL).unwrap();
    drop((upload, a));
    for id in &acknowledged {
        assert_eq!(postgres.query("shared", &format!("SELECT count(*) FROM mmc_images WHERE image_id = '{id}'")), "1", "{id} lost");
    }
    assert_eq!(count_images(&mut client_b).await, 7, "the other gateway serves the image acknowledged by the killed one");

    // The database goes away under a running gateway: UNAVAILABLE (retry later) with a
    // short message naming no address...
    postgres.stop();
    let status =
        client_b.search_images(SearchImagesRequest { query: Some(Query::Text("a cat".into())), top_k: 3, ..Default::default() }).await.unwrap_err();
    println!("during the outage: {status:?}");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("database is unavailable") && !status.message().contains("127.0.0.1"), "{status:?}");
    let listed = client_b.list_images(mmc_proto::gateway::v1::ListImagesRequest::default()).await.unwrap_err();
    assert_eq!(listed.code(), Code::Unavailable, "{listed:?}");
    // ...and serves again once it is back, without a restart.
    postgres.restart();
    let healed =
        eventually(Duration::from_secs(30), || {
            let mut client = client_b.clone();
            async move {
                client.search_images(SearchImagesRequest { query: Some(Query::Text("a cat".into())), top_k: 3, ..Default::default() }).await.ok()
            }
        })
        .await
        .expect("the gateway serves again after the database restart");
    assert_eq!(sources(&healed.into_inner()).first().map(String::as_str), Some("cat.png"));
    let (_, scrape) = http_get(&b.metrics, "/metrics").unwrap();
    assert!(metric_value(&scrape, "mmc_gateway_store_unavailable_total", &[]).unwrap_or(0.0) >= 1.0, "{scrape}");
}

/// Gateways that search codes of the images kept in their own memory (`--search-index
/// scan`) share one database: an image indexed, re-captioned or deleted through one is
/// searched as such through the other at once; and a write whose transaction commits after
/// a later-numbered one (another writer held open) is not skipped by a gateway that caught
/// up in between. Old removals are pruned by the gateways (not with a retention of 0), and
/// one that had not read a pruned removal sweeps its codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_scan_codes_see_each_others_writes_at_once() {
    let postgres = Postgres::start();
    let url = postgres.database("codes");
    let (embed, captioner) =
        tokio::join!(start_service("mmc-embed", &[], Duration::from_secs(60)), start_service("mmc-caption", &[], Duration::from_secs(60)));
    let dir = tempfile::tempdir().unwrap();
    let gateway = |name: &str, extra: &[&str]| {
        let (data, log) = (dir.path().join(name), dir.path().join(format!("{name}.log")));
        let mut args: Vec<String> = ["--embed-endpoint", &embed.url, "--caption-endpoint", &captioner.url, "--store", &url, "--search-index", "scan"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(["--data-dir".to_string(), data.display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (start_service_logged("mmc-gateway", &args, Duration::from_secs(60), &log).await, log)
        }
    };
    let (a, _) = gateway("a", &[]).await;
    let mut client_a = GatewayServiceClient::new(a.channel.clone());
    async fn index(client: &mut GatewayServiceClient<tonic::transport::Channel>, names: &[&str]) -> std::collections::HashMap<String, String> {
        let mut upload = Upload::open(client).await;
        let mut ids = std::collections::HashMap::new();
        for name in names {
            match upload.send(name, &[]).await {
                Event::Indexed(i) => ids.insert(name.to_string(), i.image_id),
                other => panic!("{name} not indexed: {other:?}"),
            };
        }
        upload.finish().await;
        ids
    }
    let ids = index(&mut client_a, &["cat.png", "coffee.png", "bike.jpg", "astronaut.png", "hubble_deep_field.jpg"]).await;
    // Forty more coffee photos (rows written by another tool): with few candidates per
    // search, a stale code loses its place to them.
    postgres.query(
        "codes",
        "INSERT INTO mmc_images (seq, image_id, content_hash, record, needs_review, caption_confidence, version, image_vector, \
         caption_vector, fused_vector) SELECT nextval('mmc_image_seq'), 'img-more-' || i, 'more-' || i, jsonb_set(jsonb_set(record, \
         '{image_id}', to_jsonb('img-more-' || i)), '{source_name}', to_jsonb('more-coffee-' || i || '.png')), needs_review, \
         caption_confidence, version, image_vector, caption_vector, fused_vector FROM mmc_images, generate_series(1, 40) i \
         WHERE record ->> 'source_name' = 'coffee.png'",
    );

    // Gateway b loads the 45 images' codes at start; it asks for few candidates (four per
    // result), so a stale code would keep an image out of its results.
    let (b, b_log) = gateway("b", &["--search-breadth", "1"]).await;
    let loaded = eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(&b_log).unwrap_or_default().lines().any(|l| l.contains("scan codes ready") && l.contains("images=45")).then_some(())
    })
    .await;
    assert!(loaded.is_some(), "{}", std::fs::read_to_string(&b_log).unwrap_or_default());
    let client_b = GatewayServiceClient::new(b.channel.clone());
    let best = |client: &GatewayServiceClient<tonic::transport::Channel>, query: Query, top_k: u32| {
        let mut client = client.clone();
        async move {
            let request = SearchImagesRequest { query: Some(query), top_k, score_threshold: -1.0, ..Default::default() };
            sources(&client.search_images(request).await.unwrap().into_inner())
        }
    };
    let scan_images = |service: &mmc_tests::Service| {
        let (_, scrape) = http_get(&service.metrics, "/metrics").unwrap();
        metric_value(&scrape, "mmc_gateway_scan_images", &[])
    };

    // Indexed through a: found through b by the next search.
    index(&mut client_a, &["motorcycle.png"]).await;
    assert_eq!(best(&client_b, Query::Text("a motorcycle".into()), 1).await, ["motorcycle.png"]);
    // Re-captioned through a: b ranks it by its new caption.
    let ramen = "A bowl of ramen noodles with chopsticks";
    let before = best(&client_b, Query::Text(ramen.into()), 1).await;
    assert_ne!(before, ["bike.jpg"], "the bike is not ramen yet");
    let corrected = mmc_proto::gateway::v1::UpdateImageRequest {
        image_id: ids["bike.jpg"].clone(),
        alt_text: Some(ramen.into()),
        reviewer: "ana".into(),
        ..Default::default()
    };
    client_a.update_image(corrected).await.unwrap();
    assert_eq!(best(&client_b, Query::Text(ramen.into()), 1).await, ["bike.jpg"], "before the correction: {before:?}");
    // Deleted through a, and by another tool: gone from b's results and from its codes.
    postgres.query("codes", "DELETE FROM mmc_images WHERE image_id LIKE 'img-more-%'");
    assert!(client_a.delete_image(DeleteImageRequest { image_id: ids["astronaut.png"].clone() }).await.unwrap().into_inner().deleted);
    assert!(!best(&client_b, Query::Image(photo("astronaut.png")), 5).await.contains(&"astronaut.png".to_string()));
    assert_eq!(scan_images(&b), Some(5.0), "b holds the codes of the five images left");

    // A writer (another tool here) holds its transaction open after writing a copy of the
    // cat: its change number is below that of the image a indexes next.
    let copy_cat = "BEGIN; INSERT INTO mmc_images (seq, image_id, content_hash, record, needs_review, caption_confidence, version, \
        image_vector, caption_vector, fused_vector) SELECT nextval('mmc_image_seq'), 'img-late', 'late', \
        jsonb_set(jsonb_set(record, '{image_id}', '\"img-late\"'), '{source_name}', '\"late-copy.png\"'), needs_review, caption_confidence, \
        version, image_vector, caption_vector, fused_vector FROM mmc_images WHERE record ->> 'source_name' = 'cat.png'; \
        SELECT pg_sleep(6); COMMIT;";
    let late = postgres.spawn_query("codes", copy_cat);
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'";
    let started = std::time::Instant::now();
    while postgres.query("codes", sleeping) != "1" {
        assert!(started.elapsed() < Duration::from_secs(30), "the held transaction did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a's image commits after the held one (writes commit in the order of their numbers),
    // and b catches up with both...
    index(&mut client_a, &["rocket.jpg"]).await;
    assert_eq!(best(&client_b, Query::Text("a rocket launch".into()), 1).await, ["rocket.jpg"]);
    let out = late.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ...so the copy is found too (had b moved past the rocket's number first, it never
    // would be).
    let mut cats = best(&client_b, Query::Image(photo("cat.png")), 2).await;
    cats.sort();
    assert_eq!(cats, ["cat.png", "late-copy.png"]);
    assert_eq!(scan_images(&b), Some(7.0));
    assert_eq!(postgres.query("codes", HNSW_INDEX), "0", "no HNSW index built");

    // Old removals are pruned (here by gateway c at its start; they are backdated past the
    // week kept by default), one of them before b has read it: the copy's.
    postgres.query("codes", "DELETE FROM mmc_images WHERE image_id = 'img-late'");
    postgres.query("codes", "UPDATE mmc_image_removals SET removed_at = now() - interval '30 days'");
    let removals = postgres.query("codes", "SELECT count(*) FROM mmc_image_removals");
    let (keeper, _) = gateway("keeper", &["--removal-retention-hours", "0"]).await;
    assert_eq!(postgres.query("codes", "SELECT count(*) FROM mmc_image_removals"), removals, "0 hours keeps every removal");
    drop(keeper);
    let (_c, _) = gateway("c", &[]).await;
    assert_eq!(postgres.query("codes", "SELECT count(*) FROM mmc_image_removals"), "0", "c pruned the old removals");
    // b learns it with its next changes: its answer holds no image that is gone, and it
    // sweeps the copy's stale code away.
    assert_eq!(best(&client_b, Query::Image(photo("cat.png")), 2).await[0], "cat.png");
    assert!(!best(&client_b, Query::Image(photo("cat.png")), 2).await.contains(&"late-copy.png".to_string()));
    let swept = eventually(Duration::from_secs(30), || async { (scan_images(&b) == Some(6.0)).then_some(()) }).await;
    assert!(swept.is_some(), "b still holds {:?} codes: {}", scan_images(&b), std::fs::read_to_string(&b_log).unwrap_or_default());
}

/// Established TCP connections of process `pid` to local port `port` (its sockets in
/// /proc/PID/fd matched with /proc/net/tcp{,6}).
fn connections_to(pid: i32, port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let remote_port = f.get(2).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && f.get(3) == Some(&"01") {
                inodes.insert(format!("socket:[{}]", f[9]));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|link| inodes.contains(link.to_string_lossy().as_ref()))
        .count()
}

fn image_ids(response: &mmc_proto::gateway::v1::SearchImagesResponse) -> Vec<String> {
    response.hits.iter().map(|h| h.image.as_ref().unwrap().image_id.clone()).collect()
}

/// A PostgreSQL that requires TLS, for the client side of the store's TLS: a front on
/// loopback that speaks PostgreSQL's in-protocol upgrade (the client's SSLRequest is
/// answered `S`, then a TLS handshake with `cert_pem`) and forwards the decrypted stream to
/// the plaintext server on `backend`. A client that does not ask for TLS is dropped. (The
/// test tools' PostgreSQL, pgserver's build, has no OpenSSL: "SSL is not supported by this
/// build".) Returns its port and the count of completed handshakes.
async fn tls_front(backend: u16, cert_pem: &str, key_pem: &str) -> (u16, Arc<AtomicUsize>) {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                // SSLRequest: length 8, then the code 80877103.
                let mut request = [0u8; 8];
                if client.read_exact(&mut request).await.is_err() || request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
                    return;
                }
                if client.write_all(b"S").await.is_err() {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(client).await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                }
            });
        }
    });
    (port, handshakes)
}

/// The store reaches PostgreSQL over TLS (`sslmode=verify-full&sslrootcert=CA`), checking
/// the server's certificate against the CA it is given: the schema goes in and a gateway
/// serves through it; with a certificate from another CA, or without TLS where the server
/// requires it, nothing connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_connects_over_tls_and_checks_the_servers_certificate() {
    use mmc_runtime::certs::{DevCa, Validity};
    let postgres = Postgres::start();
    postgres.database("secure");
    let validity = Validity::days(1);
    let (ca, other) = (DevCa::new("database CA", validity).unwrap(), DevCa::new("another CA", validity).unwrap());
    let server = ca.server(&["127.0.0.1".into(), "localhost".into()], validity).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(dir.path().join("other.crt"), &other.cert_pem).unwrap();
    let (port, handshakes) = tls_front(postgres.port, &server.cert_pem, &server.key_pem).await;
    let url =
        |mode: &str, ca: &str| format!("postgres://postgres@127.0.0.1:{port}/secure?sslmode={mode}&sslrootcert={}", dir.path().join(ca).display());
    let migrate =
        |url: String| async move { tokio::process::Command::new(binary("mmc")).args(["db", "migrate", "--store", &url]).output().await.unwrap() };

    let out = migrate(url("verify-full", "ca.crt")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(handshakes.load(Ordering::SeqCst) >= 1);
    assert_eq!(postgres.query("secure", "SELECT count(*) FROM mmc_schema_migrations WHERE success"), "3");

    let before = handshakes.load(Ordering::SeqCst);
    // The cause is in the command's log: a certificate another CA signed, a connection the
    // server closed.
    for (url, cause) in [
        (url("verify-full", "other.crt"), "certificate"),
        (format!("postgres://postgres@127.0.0.1:{port}/secure?sslmode=disable"), "PostgreSQL store unavailable"),
    ] {
        let out = migrate(url.clone()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{url}: {stderr}");
        assert!(!out.status.success() && stderr.contains("the database is unavailable") && stderr.contains(cause), "{url}: {stderr}");
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), before, "a certificate from another CA is refused in the handshake");

    let data = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", mmc_tests::free_port_range(1));
    let gateway = start_gateway_on(&dead, &dead, data.path(), Some(&url("verify-full", "ca.crt"))).await;
    let listed = GatewayServiceClient::new(gateway.channel.clone()).list_images(mmc_proto::gateway::v1::ListImagesRequest::default()).await;
    assert!(listed.unwrap().into_inner().images.is_empty());
    assert!(handshakes.load(Ordering::SeqCst) > before, "the gateway's connections are TLS");
}
