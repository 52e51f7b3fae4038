//! A rolling restart under load: one of two embed replicas gets SIGTERM while a client
//! searches through the gateway as fast as it can, with the gateway's retries off. The
//! replica reports NOT_SERVING and keeps serving for its grace period, the gateway's
//! balancer takes it out on that news, so not one call fails; the replica exits soon after
//! (its drain is not held open by the gateway's health watch); restarted on its port, it is
//! taken back and serves again.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mmc_proto::gateway::v1::{gateway_service_client::GatewayServiceClient, search_images_request::Query, SearchImagesRequest};
use mmc_tests::{free_port_range, http_get, metric_value, start_service, start_service_on};
use nix::{sys::signal::Signal, unistd::Pid};

/// EmbedText calls a replica has answered, from its metrics.
fn embed_calls(metrics: &str) -> f64 {
    let (_, scrape) = http_get(metrics, "/metrics").unwrap();
    metric_value(&scrape, "grpc_server_handled_total", &["grpc_method=\"EmbedText\""]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_one_of_two_replicas_under_load_fails_no_call() {
    let port_a = free_port_range(2);
    let grace = ["--drain-grace-ms", "2000"];
    let (mut a, b) = tokio::join!(
        start_service_on("mmc-embed", port_a, &grace, Duration::from_secs(90)),
        start_service("mmc-embed", &grace, Duration::from_secs(90)),
    );
    let data = tempfile::tempdir().unwrap();
    let endpoints = format!("{},{}", a.url, b.url);
    // No retries: a call sent to a replica that refuses it would fail.
    let args = ["--embed-endpoint", &endpoints, "--data-dir", data.path().to_str().unwrap(), "--stage-attempts", "1"];
    let gateway = start_service("mmc-gateway", &args, Duration::from_secs(30)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (mut client, stop, ok, failed) = (GatewayServiceClient::new(gateway.channel.clone()), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let query = Query::Text(format!("a photo of a bicycle number {i} {n}"));
                    match client
                        .search_images(SearchImagesRequest { query: Some(query), top_k: 3, score_threshold: -1.0, ..Default::default() })
                        .await
                    {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("failed call: {} {}", e.code(), e.message());
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(embed_calls(&a.metrics) > 0.0 && embed_calls(&b.metrics) > 0.0, "both replicas serve before the stop");
    let started = Instant::now();
    nix::sys::signal::kill(Pid::from_raw(a.process.pid()), Signal::SIGTERM).unwrap();
    let status = a.process.wait_timeout(Duration::from_secs(20)).expect("the replica exits after SIGTERM");
    let took = started.elapsed();
    assert!(status.success(), "the replica drains and exits 0: {status:?}");
    assert!(took >= Duration::from_secs(2), "the grace period was kept ({took:?})");
    assert!(took < Duration::from_secs(8), "the replica exits soon after its grace period, not at the drain deadline ({took:?})");

    // Back on its port: the gateway's health watch finds it SERVING and sends it calls again.
    let a = start_service_on("mmc-embed", port_a, &grace, Duration::from_secs(90)).await;
    let served = mmc_tests::eventually(Duration::from_secs(20), || async { (embed_calls(&a.metrics) > 0.0).then_some(()) }).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("rolling restart: {ok} searches, {failed} failed; the replica stopped in {took:?}");
    assert_eq!(failed, 0, "{failed} of {} searches failed during the rolling restart", ok + failed);
    assert!(served.is_some(), "the restarted replica serves again");
    drop(b);
}
