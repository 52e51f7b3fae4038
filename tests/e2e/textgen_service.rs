//! The text-generation service as a client sees it: a real `mmc-textgen` process with the
//! bundled SmolLM2 GGUF, called over gRPC on loopback.

use std::time::Duration;

use mmc_proto::textgen::v1::{
    count_tokens_request::Input, generate_response::Event, text_gen_service_client::TextGenServiceClient, ChatMessage, ChatRequest,
    CountTokensRequest, FinishReason, GenerateRequest, GenerateResponse, GenerationOptions, GenerationSummary, GetModelInfoRequest, OverflowPolicy,
    Role, SamplingParams,
};
use mmc_tests::{http_get, metric_value, start_service, startup_error_without_models, Service};
use tonic::{transport::Channel, Code, Streaming};

async fn start(extra: &[&str]) -> Service {
    start_service("mmc-textgen", extra, Duration::from_secs(60)).await
}

fn client(s: &Service) -> TextGenServiceClient<Channel> {
    TextGenServiceClient::new(s.channel.clone())
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage { role: Role::User as i32, content: text.into() }]
}

fn options(max_tokens: u32) -> Option<GenerationOptions> {
    Some(GenerationOptions { max_tokens, ..Default::default() })
}

/// Reads a stream to its end: the token texts and the summary.
async fn collect(mut stream: Streaming<GenerateResponse>) -> (Vec<String>, GenerationSummary) {
    let mut texts = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.event.unwrap() {
            Event::Token(t) => texts.push(t.text),
            Event::Summary(s) => return (texts, s),
        }
    }
    panic!("stream ended without a summary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_tokens_and_reports_totals() {
    let svc = start(&[]).await;
    let mut c = client(&svc);

    let info = c.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner();
    let model = info.model.unwrap();
    assert_eq!((model.id.as_str(), model.family.as_str()), ("smollm2-135m-instruct-q4_1", "llama"));
    assert_eq!(model.revision, "b179c9523d0e", "weights digest from the fetch stamp");
    assert_eq!(info.context_length, 4096);
    assert!(info.supports_json_schema);

    let messages = user("What is the capital of France? Answer in one word.");
    let counted = c
        .count_tokens(CountTokensRequest { input: Some(Input::Chat(ChatRequest { messages: messages.clone(), options: None })) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counted.context_length, 4096);

    let stream = c.chat(ChatRequest { messages, options: options(16) }).await.unwrap().into_inner();
    let (texts, summary) = collect(stream).await;
    assert_eq!(summary.prompt_tokens, counted.token_count, "CountTokens and the generation agree");
    assert_eq!(summary.completion_tokens as usize, texts.len());
    assert_eq!(texts.concat(), summary.text);
    assert!(summary.text.contains("Paris"), "{:?}", summary.text);
    assert_eq!(summary.finish_reason(), FinishReason::Stop);
    assert!(summary.time_to_first_token_ms > 0.0);
    assert_eq!(summary.model.unwrap().id, "smollm2-135m-instruct-q4_1");
    assert_eq!(summary.cached_prompt_tokens, 0, "a one-turn chat has no earlier turns to cache");

    // A follow-up turn resumes after the conversation so far (prompt-prefix cache).
    let mut turns = user("What is the capital of France? Answer in one word.");
    turns.push(ChatMessage { role: Role::Assistant as i32, content: summary.text.clone() });
    turns.push(ChatMessage { role: Role::User as i32, content: "And of Italy?".into() });
    let first = collect(c.chat(ChatRequest { messages: turns.clone(), options: options(8) }).await.unwrap().into_inner()).await.1;
    let again = collect(c.chat(ChatRequest { messages: turns, options: options(8) }).await.unwrap().into_inner()).await.1;
    assert!(again.cached_prompt_tokens > 10 && again.cached_prompt_tokens < again.prompt_tokens, "{again:?}");
    assert_eq!(again.text, first.text, "resumed from the cache, same greedy answer");

    // Constrained output over the wire.
    let schema = r#"{"type":"object","properties":{"city":{"type":"string","maxLength":20},"country":{"type":"string","maxLength":20}},"required":["city","country"],"additionalProperties":false}"#;
    let stream = c
        .chat(ChatRequest {
            messages: user("Give the capital of France as JSON."),
            options: Some(GenerationOptions { max_tokens: 64, json_schema: schema.into(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, summary) = collect(stream).await;
    let doc: std::collections::HashMap<String, String> =
        serde_json_from(&summary.text).unwrap_or_else(|| panic!("not the schema's JSON: {}", summary.text));
    assert!(doc.contains_key("city") && doc.contains_key("country"));

    let (_, scrape) = http_get(&svc.metrics, "/metrics").unwrap();
    assert!(metric_value(&scrape, "mmc_textgen_generated_tokens_total", &[]).unwrap_or(0.0) >= 2.0, "{scrape}");
}

/// A deployment's own GGUF of each other architecture, served from the file alone
/// (tokenizer and template from its metadata): the random-weight fixtures that
/// `services/textgen/tests/architectures.rs` checks against llama.cpp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_architecture_serves_from_its_gguf_alone() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gguf");
    for arch in ["qwen2", "qwen3", "gemma3", "phi3"] {
        let gguf = fixtures.join(format!("{arch}.gguf"));
        let svc = start(&["--gguf", gguf.to_str().unwrap()]).await;
        let mut c = client(&svc);
        let model = c.get_model_info(GetModelInfoRequest {}).await.unwrap().into_inner().model.unwrap();
        assert_eq!(model.family, arch);

        let prompt = "Hello the world, the theme";
        let counted = c.count_tokens(CountTokensRequest { input: Some(Input::Prompt(prompt.into())) }).await.unwrap().into_inner();
        let greedy =
            GenerationOptions { max_tokens: 6, sampling: Some(SamplingParams { temperature: 0.0, ..Default::default() }), ..Default::default() };
        let request = GenerateRequest { prompt: prompt.into(), options: Some(greedy) };
        let (texts, summary) = collect(c.generate(request.clone()).await.unwrap().into_inner()).await;
        assert_eq!(summary.prompt_tokens, counted.token_count, "{arch}: CountTokens and the generation agree");
        assert!(summary.completion_tokens >= 1 && summary.completion_tokens <= 6, "{arch}: {summary:?}");
        assert_eq!(texts.concat(), summary.text, "{arch}");
        let (_, again) = collect(c.generate(request).await.unwrap().into_inner()).await;
        assert_eq!(again.text, summary.text, "{arch}: greedy output repeats");

        // Only the Qwen fixtures carry a chat template; without one, Chat says so.
        let chat = c.chat(ChatRequest { messages: user("Hi"), options: options(4) }).await;
        if arch.starts_with("qwen") {
            let (_, s) = collect(chat.unwrap().into_inner()).await;
            assert!(s.prompt_tokens > 3, "{arch}: rendered ChatML prompt: {s:?}");
        } else {
            // The status may come before the stream or as its first message.
            let code = match chat {
                Err(e) => e.code(),
                Ok(r) => r.into_inner().message().await.expect_err("Chat without a template must fail").code(),
            };
            assert_eq!(code, Code::FailedPrecondition, "{arch}");
        }
    }
}

/// Minimal JSON object-of-strings parse, so this crate needs no JSON dependency.
fn serde_json_from(text: &str) -> Option<std::collections::HashMap<String, String>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut map = std::collections::HashMap::new();
    for pair in inner.split("\", \"") {
        let (k, v) = pair.split_once("\": \"")?;
        map.insert(k.trim_matches('"').to_string(), v.trim_matches('"').to_string());
    }
    Some(map)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_invalid_argument() {
    let svc = start(&["--max-context", "128"]).await;
    let mut c = client(&svc);
    let generate = |prompt: &str, o: GenerationOptions| GenerateRequest { prompt: prompt.into(), options: Some(o) };

    let err = c.generate(generate("", GenerationOptions::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let bad_t = GenerationOptions { sampling: Some(SamplingParams { temperature: -1.0, ..Default::default() }), ..Default::default() };
    let err = c.generate(generate("hi", bad_t)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("temperature"), "{}", err.message());

    let err = c.chat(ChatRequest { messages: vec![ChatMessage { role: 0, content: "x".into() }], options: None }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("role"), "{}", err.message());

    let bad_schema = GenerationOptions { json_schema: "{\"type\": \"objekt\"}".into(), ..Default::default() };
    let err = c.generate(generate("hi", bad_schema)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    // Schemas the engine cannot follow (recursion without a way out, too many short
    // alternatives) or that are too deep or hold huge patterns: INVALID_ARGUMENT with a
    // short reason, never INTERNAL with the engine's state dump.
    let deep = format!("{}{{\"type\": \"string\"}}{}", "{\"type\": \"array\", \"items\": ".repeat(40), "}".repeat(40));
    let long_pattern = format!("{{\"type\": \"string\", \"pattern\": \"{}\"}}", "(a|b)".repeat(200));
    for (schema, needle) in [
        (r##"{"$ref": "#"}"##.to_string(), "cannot be enforced"),
        (r##"{"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}"##.to_string(), "cannot be enforced"),
        (deep, "deeper than 32"),
        (long_pattern, "the limit is 512"),
    ] {
        let options = GenerationOptions { max_tokens: 8, json_schema: schema.clone(), ..Default::default() };
        let err = match c.generate(generate("hi", options)).await {
            Err(e) => e,
            Ok(r) => {
                let mut stream = r.into_inner();
                loop {
                    match stream.message().await {
                        Err(e) => break e,
                        Ok(Some(_)) => continue,
                        Ok(None) => panic!("{schema}: generated although the schema cannot be followed"),
                    }
                }
            }
        };
        assert_eq!(err.code(), Code::InvalidArgument, "{schema}: {}", err.message());
        assert!(err.message().contains(needle), "{schema}: {}", err.message());
        assert!(err.message().len() < 400 && !err.message().contains("<state>"), "{schema}: {}", err.message());
    }

    // Over-long prompt: refused with the counts, or truncated on request.
    let long = "budget ".repeat(300);
    let err = match c.generate(generate(&long, GenerationOptions::default())).await {
        Err(e) => e,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("context window is 128 tokens"), "{}", err.message());
    let truncate = GenerationOptions { max_tokens: 4, overflow: OverflowPolicy::TruncateStart as i32, ..Default::default() };
    let (_, summary) = collect(c.generate(generate(&long, truncate)).await.unwrap().into_inner()).await;
    assert!(summary.truncated_prompt_tokens > 0 && summary.prompt_tokens <= 127, "{summary:?}");

    // The service is still up.
    let (_, summary) =
        collect(c.generate(generate("Hello", GenerationOptions { max_tokens: 2, ..Default::default() })).await.unwrap().into_inner()).await;
    assert!(summary.completion_tokens >= 1);
}

/// Greedy counting never ends on its own: a generation that runs until max_tokens.
fn endless(max_tokens: u32) -> GenerateRequest {
    GenerateRequest { prompt: "1, 2, 3, 4, 5, 6, 7, 8,".into(), options: options(max_tokens) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_requests_overtake_long_ones_full_queue_sheds_and_cancel_frees_the_slot() {
    let svc = start(&["--max-sequences", "2", "--queue-capacity", "1"]).await;
    let mut c = client(&svc);

    // A long generation is streaming...
    let mut long = c.generate(endless(1000)).await.unwrap().into_inner();
    assert!(matches!(long.message().await.unwrap().unwrap().event, Some(Event::Token(_))));
    // ...and a short one admitted beside it finishes first.
    let (_, short) = collect(c.generate(endless(4)).await.unwrap().into_inner()).await;
    assert_eq!(short.completion_tokens, 4);
    assert!(matches!(long.message().await.unwrap().unwrap().event, Some(Event::Token(_))), "the long generation should still be running");

    // Both slots busy, one request waiting: the next is refused at once.
    let mut second = c.generate(endless(1000)).await.unwrap().into_inner();
    assert!(second.message().await.unwrap().is_some());
    let waiting = c.generate(endless(3)).await.unwrap().into_inner();
    let err = c.generate(endless(3)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());

    // Cancelling the long ones frees their slots: the waiting request then completes
    // (long before 1000 tokens of either could have been generated).
    drop(long);
    drop(second);
    let (_, done) = tokio::time::timeout(Duration::from_secs(30), collect(waiting)).await.expect("waiting request ran");
    assert_eq!(done.completion_tokens, 3);
    let scrape = mmc_tests::eventually(Duration::from_secs(10), || async {
        let (_, s) = http_get(&svc.metrics, "/metrics").ok()?;
        (metric_value(&s, "mmc_textgen_cancelled_total", &[])? >= 2.0).then_some(s)
    })
    .await
    .expect("two cancellations counted");
    assert_eq!(metric_value(&scrape, "mmc_textgen_rejected_total", &["reason=\"queue_full\""]), Some(1.0), "{scrape}");
}

#[test]
fn missing_model_fails_startup_with_instructions() {
    let stderr = startup_error_without_models("mmc-textgen");
    assert!(stderr.contains("mmc models fetch"), "{stderr}");
}
