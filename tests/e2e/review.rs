//! Human review (issue #26) as a client sees it, against real processes on loopback: the
//! unsure alt texts of real photos wait in a review queue; a person's correction over REST
//! is searchable at once, replaces the machine text in DescribeImage, keeps the machine
//! draft in history and survives a gateway restart; a change made on an old version is
//! refused (409 over HTTP, ABORTED over gRPC). A spoken meeting's notes are reviewed: an
//! owner corrected, a decision rejected, an item added, the notes signed off, and the
//! Markdown, JSON and iCalendar exports say so. Every photo's alt text is judged by
//! `mmc eval alt-text` against what the photo shows: none wrong, none absurd.

use std::{path::Path, process::Command, time::Duration};

use mmc_proto::{
    caption::v1::CaptionMode,
    common::v1::Image,
    gateway::v1::{
        gateway_service_client::GatewayServiceClient, index_images_response::Event, summarize_meeting_request::Payload, summarize_meeting_response,
        ApproveImageRequest, DeleteMeetingRequest, DescribeImageRequest, ExportFormat, ExportMeetingRequest, GetImageRequest, GetMeetingRequest,
        IndexImagesRequest, ItemKind, ListImagesRequest, ListMeetingsRequest, MarkMeetingReviewedRequest, MeetingConfig, ReviewStatus,
        SummarizeMeetingRequest, TextSource, UpdateImageRequest, UpdateMeetingItemRequest,
    },
    speech::v1::TranscribeConfig,
};
use mmc_tests::{binary, free_port_range, http_request, models_dir, postgres::Postgres, start_service, synthesize_meeting, Service};
use serde_json::{json, Value};
use tonic::{transport::Channel, Code};

const PHOTOS: [&str; 7] = ["astronaut.png", "bike.jpg", "cat.png", "coffee.png", "hubble_deep_field.jpg", "motorcycle.png", "rocket.jpg"];
const CORRECTION: &str = "Astronaut in a white spacesuit in front of an American flag.";

fn photo(name: &str) -> Image {
    let data = std::fs::read(models_dir().join("test-photos").join(name)).unwrap();
    Image { data: data.into(), mime_type: String::new(), source_name: name.into() }
}

/// `method path` with a JSON body on the gateway's HTTP listener: (status, JSON body).
fn call(http: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    let (status, text) = http_request(http, method, path, "application/json", &body, Duration::from_secs(60)).unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn gateway(args: &[&str], data: &Path, http: &str, store: Option<&str>) -> (Service, GatewayServiceClient<Channel>) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", data.to_str().unwrap(), "--http-listen", http]);
    all.extend(store.map(|url| ["--store", url]).into_iter().flatten());
    let g = start_service("mmc-gateway", &all, Duration::from_secs(30)).await;
    let client = GatewayServiceClient::new(g.channel.clone());
    (g, client)
}

fn search_rank(http: &str, query: &str, image_id: &str) -> (usize, f64) {
    let (status, hits) = call(http, "POST", "/v1/images/search", json!({ "query": query, "top_k": 10 }));
    assert_eq!(status, 200, "{hits}");
    let hits = hits["hits"].as_array().unwrap().clone();
    let at = hits.iter().position(|h| h["image"]["image_id"] == image_id).expect("the image is among the hits");
    (at, hits[at]["score"].as_f64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsure_alt_text_is_queued_corrected_searchable_and_durable() {
    alt_text_review(None).await;
}

/// The same on the PostgreSQL store (versions, the queue's order, re-embedded captions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_text_review_on_postgres() {
    let postgres = Postgres::start();
    alt_text_review(Some(&postgres.database("review"))).await;
}

async fn alt_text_review(store: Option<&str>) {
    let data = tempfile::tempdir().unwrap();
    let (embed, caption) =
        tokio::join!(start_service("mmc-embed", &[], Duration::from_secs(60)), start_service("mmc-caption", &[], Duration::from_secs(60)));
    let upstreams = ["--embed-endpoint", embed.url.as_str(), "--caption-endpoint", caption.url.as_str()];
    let http = format!("127.0.0.1:{}", free_port_range(1));
    let (g, mut client) = gateway(&upstreams, data.path(), &http, store).await;

    // Every photo's alt text, judged against what it shows: never wrong, never absurd.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/alt-text/expected.toml");
    let (url, f) = (g.url.clone(), fixtures.clone());
    let out = tokio::task::spawn_blocking(move || {
        let photos = models_dir();
        Command::new(binary("mmc"))
            .args(["eval", "alt-text", "--json", "--gateway", &url, "--expected", f.to_str().unwrap(), "--photos"])
            .arg(photos.join("test-photos"))
            .arg("--photos")
            .arg(photos.join("retrieval-gallery"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "mmc eval alt-text: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for p in report["photos"].as_array().unwrap() {
        println!("{:<24} {:<16} {} {}", p["photo"], p["verdict"], p["absurd"], p["alt_text"]);
    }
    let t = &report["totals"];
    println!("alt text: {t}");
    assert!(t["photos"].as_u64().unwrap() >= 29, "{t}");
    assert_eq!(t["wrong"], 0, "an alt text stated a wrong subject as fact");
    assert_eq!(t["absurd"], 0, "an alt text joined labels with a relation or repeated one");
    assert!(t["correct"].as_u64().unwrap() >= 3, "{t}");

    // Index the test photos; the unsure ones wait for review, least confident first.
    let uploads = PHOTOS.map(|n| IndexImagesRequest { image: Some(photo(n)), metadata: Default::default() });
    let mut events = client.index_images(tokio_stream::iter(uploads)).await.unwrap().into_inner();
    let mut ids = std::collections::HashMap::new();
    while let Some(m) = events.message().await.unwrap() {
        if let Some(Event::Indexed(i)) = m.event {
            ids.insert(PHOTOS[i.request_index as usize], i.image_id);
        }
    }
    assert_eq!(ids.len(), PHOTOS.len());
    let queue = client.list_images(ListImagesRequest { page_size: 50, needs_review: true, ..Default::default() }).await.unwrap().into_inner();
    let queued: Vec<&str> = queue.images.iter().map(|r| r.source_name.as_str()).collect();
    println!("review queue: {:?}", queue.images.iter().map(|r| (&r.source_name, r.caption_confidence, &r.caption)).collect::<Vec<_>>());
    assert!(queued.contains(&"astronaut.png") && queued.contains(&"hubble_deep_field.jpg"), "{queued:?}");
    assert!(!queued.contains(&"cat.png") && !queued.contains(&"coffee.png"), "{queued:?}");
    assert!(queue.images.windows(2).all(|w| w[0].caption_confidence <= w[1].caption_confidence), "not least confident first");
    assert!(queue.images.iter().all(|r| r.caption.ends_with("(uncertain).") || r.caption.contains("not recognised")));
    let (status, rest_queue) = call(&http, "GET", "/v1/images?needs_review=true", Value::Null);
    assert_eq!(status, 200);
    assert_eq!(rest_queue["images"].as_array().unwrap().len(), queue.images.len());

    // A person's correction over REST: searchable at once, the machine draft kept.
    let astronaut = ids["astronaut.png"].clone();
    let (_, before) = call(&http, "GET", &format!("/v1/images/{astronaut}"), Value::Null);
    let machine_text = before["caption"].as_str().unwrap().to_string();
    let version = before["version"].as_u64().unwrap();
    let (rank_before, score_before) = search_rank(&http, "an astronaut in a spacesuit", &astronaut);
    let edit = json!({ "alt_text": CORRECTION, "reviewer": "ana", "version": version });
    let (status, after) = call(&http, "PATCH", &format!("/v1/images/{astronaut}"), edit.clone());
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["caption"], CORRECTION);
    assert_eq!(after["caption_source"], "human");
    assert_eq!(after["needs_review"], false);
    assert_eq!(after["version"], version + 1);
    assert_eq!(after["history"][0]["text"], machine_text.as_str());
    assert_eq!(after["history"][0]["source"], "machine");
    let (rank_after, score_after) = search_rank(&http, "an astronaut in a spacesuit", &astronaut);
    println!("search rank of the astronaut: {rank_before} ({score_before:.3}) before the correction, {rank_after} ({score_after:.3}) after");
    assert_eq!(rank_after, 0, "the corrected image is the best hit for its words");
    assert!(score_after > score_before + 0.05, "{score_before} -> {score_after}");

    // The same change again, made on the old version: refused, nothing lost.
    let (status, refused) =
        call(&http, "PATCH", &format!("/v1/images/{astronaut}"), json!({ "alt_text": "An old view.", "reviewer": "bo", "version": version }));
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "version_conflict");
    let stale = client
        .update_image(UpdateImageRequest {
            image_id: astronaut.clone(),
            alt_text: Some("x".into()),
            reviewer: "bo".into(),
            expected_version: Some(version),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(client.get_image(GetImageRequest { image_id: astronaut.clone() }).await.unwrap().into_inner().caption, CORRECTION);
    // No reviewer, nothing to change, an unknown image: client errors.
    let (status, _) = call(&http, "PATCH", &format!("/v1/images/{astronaut}"), json!({ "alt_text": "A text.", "reviewer": " " }));
    assert_eq!(status, 400);
    let (status, _) = call(&http, "PATCH", "/v1/images/img-nope", json!({ "alt_text": "A text.", "reviewer": "ana" }));
    assert_eq!(status, 404);

    // Approval over gRPC takes an image out of the queue.
    let hubble = ids["hubble_deep_field.jpg"].clone();
    let approved = client
        .approve_image(ApproveImageRequest { image_id: hubble.clone(), reviewer: "bo".into(), expected_version: None })
        .await
        .unwrap()
        .into_inner();
    assert!(!approved.needs_review && approved.reviewed_by == "bo" && approved.caption_source == TextSource::Machine as i32);

    // DescribeImage of the same photo returns the person's text.
    let described = client
        .describe_image(DescribeImageRequest { image: Some(photo("astronaut.png")), modes: vec![CaptionMode::AltText as i32] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.captions[0].text, CORRECTION);
    assert_eq!((described.source, described.image_id.as_str(), described.needs_review), (TextSource::Human as i32, astronaut.as_str(), false));

    // A restart keeps all of it.
    drop(client);
    drop(g);
    let (_g, mut client) = gateway(&upstreams, data.path(), &http, store).await;
    let record = client.get_image(GetImageRequest { image_id: astronaut.clone() }).await.unwrap().into_inner();
    assert_eq!((record.caption.as_str(), record.reviewed_by.as_str(), record.history.len()), (CORRECTION, "ana", 1));
    assert_eq!(search_rank(&http, "an astronaut in a spacesuit", &astronaut).0, 0);
    let queue = client.list_images(ListImagesRequest { page_size: 50, needs_review: true, ..Default::default() }).await.unwrap().into_inner();
    assert!(queue.images.iter().all(|r| r.image_id != astronaut && r.image_id != hubble));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meeting_notes_are_reviewed_and_exported() {
    meeting_review(None).await;
}

/// The same on the PostgreSQL store (row-locked changes, versions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meeting_review_on_postgres() {
    let postgres = Postgres::start();
    meeting_review(Some(&postgres.database("review"))).await;
}

async fn meeting_review(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let audio = std::fs::read(synthesize_meeting(dir.path())).unwrap();
    let (speech, textgen, embed) = tokio::join!(
        start_service("mmc-speech", &[], Duration::from_secs(60)),
        start_service("mmc-textgen", &[], Duration::from_secs(60)),
        start_service("mmc-embed", &[], Duration::from_secs(60)),
    );
    let upstreams = ["--speech-endpoint", speech.url.as_str(), "--textgen-endpoint", textgen.url.as_str(), "--embed-endpoint", embed.url.as_str()];
    let http = format!("127.0.0.1:{}", free_port_range(1));
    let data = dir.path().join("data");
    let (g, mut client) = gateway(&upstreams, &data, &http, store).await;

    let config = MeetingConfig {
        title: "Budget review".into(),
        transcription: Some(TranscribeConfig { language: "en".into(), ..Default::default() }),
        participants: vec!["Laura".into(), "Kevin".into(), "Olivia".into()],
        ..Default::default()
    };
    let mut messages = vec![SummarizeMeetingRequest { payload: Some(Payload::Config(config)) }];
    messages.extend(audio.chunks(32 * 1024).map(|c| SummarizeMeetingRequest { payload: Some(Payload::AudioChunk(c.to_vec())) }));
    let mut stream = client.summarize_meeting(tokio_stream::iter(messages)).await.unwrap().into_inner();
    let mut summary = None;
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(summarize_meeting_response::Event::Summary(s)) = m.event {
            summary = Some(s);
        }
    }
    let summary = summary.expect("a summary");
    let id = summary.meeting_id.clone();
    println!("decisions: {:?}", summary.decisions.iter().map(|d| &d.text).collect::<Vec<_>>());
    println!("actions: {:?}", summary.action_items.iter().map(|a| (&a.owner, &a.item.as_ref().unwrap().text)).collect::<Vec<_>>());
    assert!(summary.decisions.len() >= 2 && !summary.action_items.is_empty());
    for d in &summary.decisions {
        let r = d.review.as_ref().expect("decisions carry a review state");
        assert_eq!((r.status, r.source, r.version), (ReviewStatus::Pending as i32, TextSource::Machine as i32, 0));
    }

    // Reassign the first action item's owner (REST), reject the first decision (gRPC).
    let action = summary.action_items[0].item.as_ref().unwrap().text.clone();
    let (status, meeting) = call(
        &http,
        "PATCH",
        &format!("/v1/meetings/{id}/action_items/0"),
        json!({ "owner": "Dana Whitfield", "due": "2026-12-11", "reviewer": "ana", "version": 0 }),
    );
    assert_eq!(status, 200, "{meeting}");
    let item = &meeting["summary"]["action_items"][0];
    assert_eq!(
        (item["owner"].as_str(), item["review"]["status"].as_str(), item["review"]["source"].as_str()),
        (Some("Dana Whitfield"), Some("approved"), Some("human"))
    );
    assert_eq!(item["review"]["history"][0]["field"], "owner");
    let rejected = summary.decisions[0].text.clone();
    let reject = |version: u32| UpdateMeetingItemRequest {
        meeting_id: id.clone(),
        kind: ItemKind::Decision as i32,
        index: Some(0),
        status: ReviewStatus::Rejected as i32,
        reviewer: "bo".into(),
        expected_version: Some(version),
        ..Default::default()
    };
    client.update_meeting_item(reject(0)).await.unwrap();
    // The same item changed again on its old version: refused.
    let stale = client.update_meeting_item(reject(0)).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let (status, body) =
        call(&http, "PATCH", &format!("/v1/meetings/{id}/decisions/0"), json!({ "text": "Changed.", "reviewer": "cy", "version": 0 }));
    assert_eq!(status, 409, "{body}");
    // An item the machine missed, cited to a segment the reviewer picked; a bad citation is refused.
    let (status, body) = call(
        &http,
        "POST",
        &format!("/v1/meetings/{id}/action_items"),
        json!({ "text": "Share the notes", "owner": "Kevin", "segment_ids": [9999], "reviewer": "ana" }),
    );
    assert_eq!(status, 400, "{body}");
    let (status, meeting) = call(
        &http,
        "POST",
        &format!("/v1/meetings/{id}/action_items"),
        json!({ "text": "Share the notes", "owner": "Kevin", "due": "Friday", "segment_ids": [0], "reviewer": "ana" }),
    );
    assert_eq!(status, 200, "{meeting}");
    let version = meeting["version"].as_u64().unwrap();
    let signed = client
        .mark_meeting_reviewed(MarkMeetingReviewedRequest { meeting_id: id.clone(), reviewer: "ana".into(), expected_version: Some(version) })
        .await
        .unwrap()
        .into_inner();
    assert!(signed.notes_reviewed && signed.notes_reviewed_by == "ana");
    let stale = client
        .mark_meeting_reviewed(MarkMeetingReviewedRequest { meeting_id: id.clone(), reviewer: "bo".into(), expected_version: Some(version) })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    // The exports reflect every change, after a restart too.
    drop(client);
    drop(g);
    let (_g, mut client) = gateway(&upstreams, &data, &http, store).await;
    let stored = client.get_meeting(GetMeetingRequest { meeting_id: id.clone() }).await.unwrap().into_inner();
    let decisions = &stored.summary.as_ref().unwrap().decisions;
    assert_eq!(decisions[0].review.as_ref().unwrap().status, ReviewStatus::Rejected as i32);
    assert!(decisions[1..].iter().all(|d| d.review.as_ref().unwrap().status == ReviewStatus::Approved as i32));
    let export = |format: ExportFormat| {
        let mut c = client.clone();
        let id = id.clone();
        async move { c.export_meeting(ExportMeetingRequest { meeting_id: id, format: format as i32 }).await.unwrap().into_inner() }
    };
    let md = String::from_utf8(export(ExportFormat::Markdown).await.content).unwrap();
    println!("{md}");
    assert!(md.contains("**Dana Whitfield**") && md.contains(&action), "{md}");
    assert!(!md.contains(&rejected), "a rejected decision was exported: {md}");
    assert!(md.contains("Notes reviewed by ana") && md.contains("**Kevin**: Share the notes, due Friday"), "{md}");
    let doc: Value = serde_json::from_slice(&export(ExportFormat::Json).await.content).unwrap();
    assert_eq!(doc["action_items"][0]["owner"], "Dana Whitfield");
    assert_eq!(doc["decisions"].as_array().unwrap().len(), decisions.len() - 1);
    let ics = export(ExportFormat::Icalendar).await;
    let ics_text = String::from_utf8(ics.content).unwrap();
    assert_eq!(ics.content_type, "text/calendar; charset=utf-8");
    assert!(
        ics_text.contains("BEGIN:VTODO") && ics_text.contains("SUMMARY:Dana Whitfield: ") && ics_text.contains("DUE;VALUE=DATE:20261211"),
        "{ics_text}"
    );
    let (status, text) =
        http_request(&http, "GET", &format!("/v1/meetings/{id}/export?format=md"), "text/plain", b"", Duration::from_secs(10)).unwrap();
    assert_eq!((status, text.as_str()), (200, md.as_str()));

    // The meeting is listed, then deleted for good.
    let listed = client.list_meetings(ListMeetingsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.meetings.len(), 1);
    assert!(listed.meetings[0].meeting_id == id && listed.meetings[0].notes_reviewed && listed.meetings[0].title == "Budget review");
    let (status, body) = call(&http, "GET", "/v1/meetings", Value::Null);
    assert_eq!((status, body["meetings"][0]["meeting_id"].as_str()), (200, Some(id.as_str())), "{body}");
    let (status, body) = call(&http, "DELETE", &format!("/v1/meetings/{id}"), Value::Null);
    assert_eq!(status, 200, "{body}");
    let gone = client.get_meeting(GetMeetingRequest { meeting_id: id.clone() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(call(&http, "DELETE", &format!("/v1/meetings/{id}"), Value::Null).0, 404);
    let gone = client.delete_meeting(DeleteMeetingRequest { meeting_id: id.clone() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(client.list_meetings(ListMeetingsRequest::default()).await.unwrap().into_inner().meetings.is_empty());
}
