//! The hostile-input suite: one cluster (four model services and the gateway, real models)
//! and a table of bad inputs over gRPC and HTTP, each with the status class it must get.
//! Every answer must be a client error or a success, never INTERNAL/UNKNOWN/5xx; error
//! messages are short and never name an internal address. Afterwards every process is the
//! one that started (nothing crashed or restarted), its memory is under a bound, and each
//! service still answers a good request.
//!
//! Kinds: four framing faults for every RPC of every service (undecodable bytes, a wrong
//! wire type, unknown fields, an empty message), then the faults of each RPC's content
//! (images, audio, text, sampling, schemas, ids, filters) and of HTTP (bodies, sizes,
//! methods, headers, hosts, origins, paths).

use std::{fmt, time::Duration};

use bytes::{Buf, BufMut};
use mmc_proto::{
    caption::v1::CaptionRequest,
    common::v1::{AudioEncoding, AudioFormat, Image},
    embed::v1::{EmbedImageRequest, EmbedTextRequest, EncodeImageRequest, ImageLatents},
    gateway::v1::{
        search_images_request::Query, summarize_meeting_request::Payload as MeetingPayload, AskMeetingRequest, DescribeImageRequest, GetImageRequest,
        GetMeetingRequest, IndexImagesRequest, ListImagesRequest, MeetingConfig, SearchImagesRequest, SummarizeMeetingRequest, UpdateImageRequest,
        UpdateMeetingItemRequest,
    },
    speech::v1::{transcribe_request::Payload, TranscribeConfig, TranscribeRequest},
    textgen::v1::{ChatMessage, ChatRequest, CountTokensRequest, GenerateRequest, GenerationOptions, SamplingParams},
};
use mmc_tests::{free_port_range, http_raw, start_cluster, Service};
use prost::Message;
use tonic::{Code, Request};

/// What a case must get back.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Success (HTTP 2xx).
    Ok,
    /// A client error of any kind (INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE, ...; HTTP 4xx).
    Client,
    /// This gRPC code.
    Code(Code),
    /// This HTTP status.
    Status(u16),
}

impl fmt::Debug for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Ok => write!(f, "success"),
            Expect::Client => write!(f, "a client error"),
            Expect::Code(c) => write!(f, "{c:?}"),
            Expect::Status(s) => write!(f, "HTTP {s}"),
        }
    }
}

fn client_code(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::AlreadyExists
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Aborted
    )
}

/// The model services by index in the cluster, then the gateway.
#[derive(Clone, Copy, Debug)]
enum Target {
    Embed = 0,
    Caption = 1,
    Speech = 2,
    Textgen = 3,
    Gateway = 4,
}

/// A gRPC case: messages sent raw (a stream of them for every RPC kind) to `path`.
struct GrpcCase {
    name: String,
    target: Target,
    path: &'static str,
    messages: Vec<Vec<u8>>,
    expect: Expect,
}

/// An HTTP case: the bytes of a request to the gateway's HTTP port.
struct HttpCase {
    name: String,
    request: Vec<u8>,
    expect: Expect,
}

/// Bytes as they are.
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
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.chunk().to_vec();
        src.advance(bytes.len());
        Ok(Some(bytes))
    }
}

/// Every RPC: (service, path, an empty message is a valid request, the message has a
/// field 1).
const RPCS: &[(Target, &str, bool, bool)] = &[
    (Target::Embed, "/mmc.embed.v1.EmbedService/EmbedText", false, true),
    (Target::Embed, "/mmc.embed.v1.EmbedService/EmbedImage", false, true),
    (Target::Embed, "/mmc.embed.v1.EmbedService/EncodeImage", false, true),
    (Target::Embed, "/mmc.embed.v1.EmbedService/GetModelInfo", true, false),
    (Target::Caption, "/mmc.caption.v1.CaptionService/Caption", false, true),
    (Target::Caption, "/mmc.caption.v1.CaptionService/GetModelInfo", true, false),
    (Target::Speech, "/mmc.speech.v1.SpeechService/Transcribe", false, true),
    (Target::Speech, "/mmc.speech.v1.SpeechService/GetModelInfo", true, false),
    (Target::Textgen, "/mmc.textgen.v1.TextGenService/Generate", false, true),
    (Target::Textgen, "/mmc.textgen.v1.TextGenService/Chat", false, true),
    (Target::Textgen, "/mmc.textgen.v1.TextGenService/CountTokens", false, true),
    (Target::Textgen, "/mmc.textgen.v1.TextGenService/GetModelInfo", true, false),
    // A bad item of an index stream is reported as a failed item; the stream succeeds.
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/IndexImages", true, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/SearchImages", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/DeleteImage", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/ListImages", true, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/GetImage", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/UpdateImage", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/ApproveImage", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/DescribeImage", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/SummarizeMeeting", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/GetMeeting", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/ListMeetings", true, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/DeleteMeeting", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/AskMeeting", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/UpdateMeetingItem", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/MarkMeetingReviewed", false, true),
    (Target::Gateway, "/mmc.gateway.v1.GatewayService/ExportMeeting", false, true),
];

/// The four framing faults, for every RPC.
fn framing_cases() -> Vec<GrpcCase> {
    let mut cases = Vec::new();
    for &(target, path, empty_ok, has_field_1) in RPCS {
        let method = path.rsplit('/').next().unwrap();
        let when_empty = if empty_ok { Expect::Ok } else { Expect::Client };
        cases.push(GrpcCase {
            name: format!("{method}: undecodable bytes"),
            target,
            path,
            messages: vec![vec![0x08, 0xff, 0xff, 0xff]],
            expect: Expect::Code(Code::InvalidArgument),
        });
        cases.push(GrpcCase {
            name: format!("{method}: field 1 with the wrong wire type"),
            target,
            path,
            messages: vec![vec![0x0d, 1, 2, 3, 4]],
            expect: if has_field_1 { Expect::Code(Code::InvalidArgument) } else { when_empty },
        });
        cases.push(GrpcCase {
            name: format!("{method}: unknown fields only"),
            target,
            path,
            messages: vec![vec![0xb8, 0x3e, 0x01]],
            expect: when_empty,
        });
        cases.push(GrpcCase { name: format!("{method}: an empty message"), target, path, messages: vec![vec![]], expect: when_empty });
    }
    cases
}

fn photo(name: &str) -> Vec<u8> {
    let path = mmc_tests::models_dir().join("test-photos").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (mmc models fetch --profile test-assets)", path.display()))
}

/// A real PNG whose header claims 60000 x 60000 pixels (CRC fixed).
fn png_bomb() -> Vec<u8> {
    let mut png = photo("cat.png");
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn image(data: Vec<u8>) -> Image {
    Image { data: data.into(), mime_type: String::new(), source_name: "hostile".into() }
}

fn pcm_config(rate: u32, channels: u32) -> TranscribeConfig {
    TranscribeConfig { format: Some(AudioFormat { encoding: AudioEncoding::PcmS16le as i32, sample_rate_hz: rate, channels }), ..Default::default() }
}

fn config(c: TranscribeConfig) -> Vec<u8> {
    TranscribeRequest { payload: Some(Payload::Config(c)) }.encode_to_vec()
}

fn chunk(bytes: Vec<u8>) -> Vec<u8> {
    TranscribeRequest { payload: Some(Payload::AudioChunk(bytes)) }.encode_to_vec()
}

fn options(f: impl FnOnce(&mut GenerationOptions)) -> Option<GenerationOptions> {
    let mut o = GenerationOptions { max_tokens: 4, ..Default::default() };
    f(&mut o);
    Some(o)
}

fn sampling(f: impl FnOnce(&mut SamplingParams)) -> Option<GenerationOptions> {
    options(|o| {
        let mut s = SamplingParams::default();
        f(&mut s);
        o.sampling = Some(s);
    })
}

fn generate(prompt: &str, options: Option<GenerationOptions>) -> Vec<u8> {
    GenerateRequest { prompt: prompt.into(), options }.encode_to_vec()
}

/// (name, service, path, messages, expected)
type ContentCase = (&'static str, Target, &'static str, Vec<Vec<u8>>, Expect);

/// The faults of each RPC's content.
fn content_cases() -> Vec<GrpcCase> {
    use Expect::*;
    use Target::*;
    const EMBED_TEXT: &str = "/mmc.embed.v1.EmbedService/EmbedText";
    const EMBED_IMAGE: &str = "/mmc.embed.v1.EmbedService/EmbedImage";
    const ENCODE: &str = "/mmc.embed.v1.EmbedService/EncodeImage";
    const CAPTION: &str = "/mmc.caption.v1.CaptionService/Caption";
    const TRANSCRIBE: &str = "/mmc.speech.v1.SpeechService/Transcribe";
    const GENERATE: &str = "/mmc.textgen.v1.TextGenService/Generate";
    const CHAT: &str = "/mmc.textgen.v1.TextGenService/Chat";
    const COUNT: &str = "/mmc.textgen.v1.TextGenService/CountTokens";
    const SEARCH: &str = "/mmc.gateway.v1.GatewayService/SearchImages";
    const GET_IMAGE: &str = "/mmc.gateway.v1.GatewayService/GetImage";
    const UPDATE_IMAGE: &str = "/mmc.gateway.v1.GatewayService/UpdateImage";
    const DESCRIBE: &str = "/mmc.gateway.v1.GatewayService/DescribeImage";
    const INDEX: &str = "/mmc.gateway.v1.GatewayService/IndexImages";
    const LIST_IMAGES: &str = "/mmc.gateway.v1.GatewayService/ListImages";
    const GET_MEETING: &str = "/mmc.gateway.v1.GatewayService/GetMeeting";
    const ASK: &str = "/mmc.gateway.v1.GatewayService/AskMeeting";
    const UPDATE_ITEM: &str = "/mmc.gateway.v1.GatewayService/UpdateMeetingItem";
    const SUMMARIZE: &str = "/mmc.gateway.v1.GatewayService/SummarizeMeeting";

    let text = |texts: Vec<String>, reject_overlong: bool| EmbedTextRequest { texts, reject_overlong }.encode_to_vec();
    let images = |data: Vec<Vec<u8>>| EmbedImageRequest { images: data.into_iter().map(image).collect() }.encode_to_vec();
    let encode = |data: Vec<u8>, top_k: u32| EncodeImageRequest { image: Some(image(data)), top_k, include_embedding: true }.encode_to_vec();
    let mut truncated_png = photo("cat.png");
    truncated_png.truncate(truncated_png.len() / 3);
    let mut random = vec![0u8; 64 * 1024];
    let mut x = 0x2545_f491_u32;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let nan_latents = ImageLatents { pooled: vec![f32::NAN; 1280], ..Default::default() };
    let wrong_latents = ImageLatents { pooled: vec![0.5; 7], ..Default::default() };
    let caption = |latents: ImageLatents, mode: i32, max_chars: u32| CaptionRequest { latents: Some(latents), mode, max_chars }.encode_to_vec();
    let search = |query: Option<Query>, top_k: u32, threshold: f32| {
        SearchImagesRequest { query, top_k, score_threshold: threshold, ..Default::default() }.encode_to_vec()
    };
    let long_id = "x".repeat(100_000);
    let deep_schema = format!("{}{{\"type\":\"string\"}}{}", "{\"type\":\"array\",\"items\":".repeat(100), "}".repeat(100));
    let chat = |messages: Vec<ChatMessage>| ChatRequest { messages, options: options(|_| {}) }.encode_to_vec();
    let user = |content: &str| ChatMessage { role: 2, content: content.into() };
    let meeting = |c: MeetingConfig| SummarizeMeetingRequest { payload: Some(MeetingPayload::Config(c)) }.encode_to_vec();
    let meeting_audio = |b: Vec<u8>| SummarizeMeetingRequest { payload: Some(MeetingPayload::AudioChunk(b)) }.encode_to_vec();
    let silence = vec![0u8; 32_000];

    let cases: Vec<ContentCase> = vec![
        // Embed: texts.
        ("no texts", Embed, EMBED_TEXT, vec![text(vec![], false)], Client),
        ("an empty text", Embed, EMBED_TEXT, vec![text(vec![String::new()], false)], Ok),
        ("NUL and control characters", Embed, EMBED_TEXT, vec![text(vec!["a\0b\x07c\u{202e}d".into()], false)], Ok),
        ("a 1 MB text refused as over-long", Embed, EMBED_TEXT, vec![text(vec!["word ".repeat(200_000)], true)], Client),
        ("a 1 MB text truncated", Embed, EMBED_TEXT, vec![text(vec!["word ".repeat(200_000)], false)], Ok),
        ("10 000 texts", Embed, EMBED_TEXT, vec![text(vec!["a".into(); 10_000], false)], Client),
        ("40 000 emoji", Embed, EMBED_TEXT, vec![text(vec!["\u{1f600}".repeat(40_000)], false)], Ok),
        // Embed: images.
        ("no images", Embed, EMBED_IMAGE, vec![images(vec![])], Client),
        ("a zero-byte image", Embed, EMBED_IMAGE, vec![images(vec![vec![]])], Client),
        ("random bytes as an image", Embed, EMBED_IMAGE, vec![images(vec![random.clone()])], Client),
        ("a truncated PNG", Embed, EMBED_IMAGE, vec![images(vec![truncated_png.clone()])], Client),
        ("a decompression bomb", Embed, EMBED_IMAGE, vec![images(vec![png_bomb()])], Client),
        ("a text file as an image", Embed, EMBED_IMAGE, vec![images(vec![b"hello, I am not a picture".to_vec()])], Client),
        ("an image with no image", Embed, ENCODE, vec![EncodeImageRequest::default().encode_to_vec()], Client),
        ("top_k of 4 billion labels", Embed, ENCODE, vec![encode(photo("cat.png"), u32::MAX)], Ok),
        ("a bomb to encode", Embed, ENCODE, vec![encode(png_bomb(), 3)], Client),
        // Caption.
        ("no latents", Caption, CAPTION, vec![CaptionRequest::default().encode_to_vec()], Client),
        ("NaN latents", Caption, CAPTION, vec![caption(nan_latents, 1, 0)], Client),
        ("latents of the wrong size", Caption, CAPTION, vec![caption(wrong_latents, 1, 0)], Client),
        ("an unknown caption mode", Caption, CAPTION, vec![caption(ImageLatents { pooled: vec![0.1; 1280], ..Default::default() }, 99, 0)], Client),
        // Speech.
        ("audio before the config", Speech, TRANSCRIBE, vec![chunk(silence.clone())], Client),
        ("the config twice", Speech, TRANSCRIBE, vec![config(pcm_config(16_000, 1)), config(pcm_config(16_000, 1))], Client),
        ("PCM at 0 Hz", Speech, TRANSCRIBE, vec![config(pcm_config(0, 1)), chunk(silence.clone())], Client),
        ("PCM with 0 channels", Speech, TRANSCRIBE, vec![config(pcm_config(16_000, 0)), chunk(silence.clone())], Client),
        ("PCM with 300 channels", Speech, TRANSCRIBE, vec![config(pcm_config(16_000, 300)), chunk(silence.clone())], Client),
        ("PCM at 10 MHz", Speech, TRANSCRIBE, vec![config(pcm_config(10_000_000, 1)), chunk(silence.clone())], Client),
        (
            "an unknown language",
            Speech,
            TRANSCRIBE,
            vec![config(TranscribeConfig { language: "xx-nonsense".into(), ..pcm_config(16_000, 1) })],
            Client,
        ),
        (
            "an unknown model",
            Speech,
            TRANSCRIBE,
            vec![config(TranscribeConfig { model_id: "whisper-huge-v9".into(), ..pcm_config(16_000, 1) })],
            Client,
        ),
        ("random bytes as audio", Speech, TRANSCRIBE, vec![config(TranscribeConfig::default()), chunk(random.clone())], Client),
        ("no audio at all", Speech, TRANSCRIBE, vec![config(pcm_config(16_000, 1))], Client),
        ("a second of silence", Speech, TRANSCRIBE, vec![config(pcm_config(16_000, 1)), chunk(silence.clone())], Ok),
        ("10 GB announced", Speech, TRANSCRIBE, vec![config(TranscribeConfig { total_bytes: 10 << 30, ..pcm_config(16_000, 1) })], Client),
        ("an odd number of PCM bytes", Speech, TRANSCRIBE, vec![config(pcm_config(16_000, 1)), chunk(vec![0; 32_001])], Client),
        // Text generation.
        ("an empty prompt", Textgen, GENERATE, vec![generate("", options(|_| {}))], Client),
        ("NaN temperature", Textgen, GENERATE, vec![generate("Hi", sampling(|s| s.temperature = f32::NAN))], Client),
        ("negative temperature", Textgen, GENERATE, vec![generate("Hi", sampling(|s| s.temperature = -1.0))], Client),
        ("top_p of 2", Textgen, GENERATE, vec![generate("Hi", sampling(|s| s.top_p = 2.0))], Client),
        ("infinite repetition penalty", Textgen, GENERATE, vec![generate("Hi", sampling(|s| s.repetition_penalty = f32::INFINITY))], Client),
        // Clamped to the context, as llama.cpp's server does (the HTTP API refuses it).
        ("max_tokens of 4 billion", Textgen, GENERATE, vec![generate("Hi", options(|o| o.max_tokens = u32::MAX))], Ok),
        ("a schema that is not JSON", Textgen, GENERATE, vec![generate("Hi", options(|o| o.json_schema = "{not json".into()))], Client),
        ("a schema that refers to itself", Textgen, GENERATE, vec![generate("Hi", options(|o| o.json_schema = r##"{"$ref":"#"}"##.into()))], Client),
        ("a schema 100 levels deep", Textgen, GENERATE, vec![generate("Hi", options(|o| o.json_schema = deep_schema.clone()))], Client),
        // The engine builds its automaton lazily and enforces it (checked by hand with 60 tokens).
        (
            "a pathological pattern",
            Textgen,
            GENERATE,
            vec![generate(
                "Hi",
                options(|o| {
                    o.json_schema = r#"{"type":"string","pattern":"(a|a)*(b|b)*(c|c)*(d|d)*(e|e)*(f|f)*(g|g)*(h|h)*(i|i)*(j|j)*(k|k)*(l|l)*(m|m)*(n|n)*(o|o)*(p|p)*(q|q)*(r|r)*(s|s)*(t|t)*(u|u)*(v|v)*(w|w)*(x|x)*(y|y)*(z|z)*{1000}$"}"#.into()
                }),
            )],
            Ok,
        ),
        ("10 000 stop sequences", Textgen, GENERATE, vec![generate("Hi", options(|o| o.stop = vec!["x".into(); 10_000]))], Client),
        ("a 1 MB prompt", Textgen, GENERATE, vec![generate(&"word ".repeat(200_000), options(|_| {}))], Client),
        ("an unknown overflow policy", Textgen, GENERATE, vec![generate("Hi", options(|o| o.overflow = 42))], Client),
        ("a chat without messages", Textgen, CHAT, vec![chat(vec![])], Client),
        ("a chat role that does not exist", Textgen, CHAT, vec![chat(vec![ChatMessage { role: 99, content: "Hi".into() }])], Client),
        ("a chat of 10 000 messages", Textgen, CHAT, vec![chat(vec![user("Hi"); 10_000])], Client),
        ("counting nothing", Textgen, COUNT, vec![CountTokensRequest { input: None }.encode_to_vec()], Client),
        ("counting an empty chat", Textgen, COUNT, vec![CountTokensRequest { input: Some(chat_request_input(vec![])) }.encode_to_vec()], Client),
        // Gateway: search and images.
        ("a search without a query", Gateway, SEARCH, vec![search(None, 5, -1.0)], Client),
        ("a blank query", Gateway, SEARCH, vec![search(Some(Query::Text("   ".into())), 5, -1.0)], Client),
        ("top_k of 4 billion", Gateway, SEARCH, vec![search(Some(Query::Text("a cat".into())), u32::MAX, -1.0)], Client),
        ("a NaN score threshold", Gateway, SEARCH, vec![search(Some(Query::Text("a cat".into())), 5, f32::NAN)], Client),
        ("a bomb as the query image", Gateway, SEARCH, vec![search(Some(Query::Image(image(png_bomb()))), 5, -1.0)], Client),
        (
            "a filter of 10 000 keys",
            Gateway,
            SEARCH,
            vec![SearchImagesRequest {
                query: Some(Query::Text("a cat".into())),
                top_k: 5,
                score_threshold: -1.0,
                metadata_filter: (0..10_000).map(|i| (format!("k{i}"), "v".into())).collect(),
            }
            .encode_to_vec()],
            Client,
        ),
        ("an image id of 100 KB", Gateway, GET_IMAGE, vec![GetImageRequest { image_id: long_id.clone() }.encode_to_vec()], Client),
        ("an image id that is a path", Gateway, GET_IMAGE, vec![GetImageRequest { image_id: "../../etc/passwd".into() }.encode_to_vec()], Client),
        (
            "an image that does not exist",
            Gateway,
            GET_IMAGE,
            vec![GetImageRequest { image_id: "img-0123456789abcdef0123456789abcdef".into() }.encode_to_vec()],
            Code(tonic::Code::NotFound),
        ),
        (
            "a 1 MB caption for an unknown image",
            Gateway,
            UPDATE_IMAGE,
            vec![UpdateImageRequest {
                image_id: "img-0123456789abcdef0123456789abcdef".into(),
                alt_text: Some("c".repeat(1 << 20)),
                ..Default::default()
            }
            .encode_to_vec()],
            Client,
        ),
        (
            "a page token that is garbage",
            Gateway,
            LIST_IMAGES,
            vec![ListImagesRequest { page_token: "\u{1f600}not-a-token".into(), ..Default::default() }.encode_to_vec()],
            Client,
        ),
        ("a page size of 4 billion", Gateway, LIST_IMAGES, vec![ListImagesRequest { page_size: u32::MAX, ..Default::default() }.encode_to_vec()], Ok),
        ("describing no image", Gateway, DESCRIBE, vec![DescribeImageRequest { image: None, modes: vec![1] }.encode_to_vec()], Client),
        (
            "describing a bomb",
            Gateway,
            DESCRIBE,
            vec![DescribeImageRequest { image: Some(image(png_bomb())), modes: vec![1] }.encode_to_vec()],
            Client,
        ),
        (
            "describing in an unknown mode",
            Gateway,
            DESCRIBE,
            vec![DescribeImageRequest { image: Some(image(photo("cat.png"))), modes: vec![99] }.encode_to_vec()],
            Client,
        ),
        (
            "describing random bytes",
            Gateway,
            DESCRIBE,
            vec![DescribeImageRequest { image: Some(image(random.clone())), modes: vec![1] }.encode_to_vec()],
            Client,
        ),
        // Indexing reports a bad image as a failed item and goes on: the stream succeeds.
        ("indexing a bomb", Gateway, INDEX, vec![IndexImagesRequest { image: Some(image(png_bomb())), ..Default::default() }.encode_to_vec()], Ok),
        ("indexing nothing", Gateway, INDEX, vec![IndexImagesRequest::default().encode_to_vec()], Ok),
        // Gateway: meetings.
        ("a meeting id of 100 KB", Gateway, GET_MEETING, vec![GetMeetingRequest { meeting_id: long_id.clone() }.encode_to_vec()], Client),
        (
            "a meeting that does not exist",
            Gateway,
            GET_MEETING,
            vec![GetMeetingRequest { meeting_id: "mtg-0123456789abcdef".into() }.encode_to_vec()],
            Code(tonic::Code::NotFound),
        ),
        (
            "asking an unknown meeting",
            Gateway,
            ASK,
            vec![AskMeetingRequest { meeting_id: "mtg-0123456789abcdef".into(), question: "Who?".into(), ..Default::default() }.encode_to_vec()],
            Client,
        ),
        (
            "a 1 MB question",
            Gateway,
            ASK,
            vec![AskMeetingRequest { meeting_id: "mtg-0123456789abcdef".into(), question: "why ".repeat(250_000), ..Default::default() }
                .encode_to_vec()],
            Client,
        ),
        (
            "editing an unknown meeting",
            Gateway,
            UPDATE_ITEM,
            vec![UpdateMeetingItemRequest { meeting_id: "mtg-0123456789abcdef".into(), ..Default::default() }.encode_to_vec()],
            Client,
        ),
        ("meeting audio before its config", Gateway, SUMMARIZE, vec![meeting_audio(silence.clone())], Client),
        (
            "an unknown prompt version",
            Gateway,
            SUMMARIZE,
            vec![meeting(MeetingConfig { prompt_version: "v999".into(), ..Default::default() }), meeting_audio(silence.clone())],
            Client,
        ),
        ("a meeting of random bytes", Gateway, SUMMARIZE, vec![meeting(MeetingConfig::default()), meeting_audio(random.clone())], Client),
        ("a meeting without audio", Gateway, SUMMARIZE, vec![meeting(MeetingConfig::default())], Client),
        (
            "a meeting in an unknown language",
            Gateway,
            SUMMARIZE,
            vec![
                meeting(MeetingConfig {
                    transcription: Some(TranscribeConfig { language: "klingon".into(), ..pcm_config(16_000, 1) }),
                    ..Default::default()
                }),
                meeting_audio(silence.clone()),
            ],
            Client,
        ),
        ("a message over the size limit", Embed, EMBED_TEXT, vec![text(vec!["a".repeat(33 << 20)], false)], Client),
        ("a gateway message over the size limit", Gateway, SEARCH, vec![search(Some(Query::Text("a".repeat(33 << 20))), 5, -1.0)], Client),
    ];
    cases
        .into_iter()
        .map(|(name, target, path, messages, expect)| GrpcCase {
            name: format!("{}: {name}", path.rsplit('/').next().unwrap()),
            target,
            path,
            messages,
            expect,
        })
        .collect()
}

fn chat_request_input(messages: Vec<ChatMessage>) -> mmc_proto::textgen::v1::count_tokens_request::Input {
    mmc_proto::textgen::v1::count_tokens_request::Input::Chat(ChatRequest { messages, options: None })
}

/// A raw HTTP request.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8], host: &str) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for (k, v) in headers {
        out.extend(format!("{k}: {v}\r\n").as_bytes());
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")) {
        out.extend(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend(b"Connection: close\r\n\r\n");
    out.extend(body);
    out
}

fn http_cases(host: &str) -> Vec<HttpCase> {
    use Expect::*;
    let json = [("Content-Type", "application/json")];
    let post = |path: &str, body: &str| request("POST", path, &json, body.as_bytes(), host);
    let multipart = |boundary: &str, body: &str| {
        let ct = format!("multipart/form-data; boundary={boundary}");
        request("POST", "/v1/audio/transcriptions", &[("Content-Type", ct.as_str())], body.as_bytes(), host)
    };
    let file_part = |name: &str, content: &str| {
        format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n{content}\r\n--B--\r\n")
    };
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        // Embeddings.
        ("embeddings: invalid JSON", post("/v1/embeddings", "{\"input\": "), Status(400)),
        ("embeddings: a JSON array", post("/v1/embeddings", "[1, 2, 3]"), Client),
        ("embeddings: input of numbers", post("/v1/embeddings", r#"{"input": [1, 2, 3]}"#), Client),
        ("embeddings: empty input", post("/v1/embeddings", r#"{"input": []}"#), Client),
        ("embeddings: input of objects", post("/v1/embeddings", r#"{"input": [{"a": 1}]}"#), Client),
        // Without an Origin it is not a browser (curl, scripts): the body is read as JSON.
        (
            "embeddings: text/plain from a script",
            request("POST", "/v1/embeddings", &[("Content-Type", "text/plain")], br#"{"input": "a"}"#, host),
            Ok,
        ),
        ("embeddings: no content type", request("POST", "/v1/embeddings", &[], br#"{"input": "a"}"#, host), Ok),
        (
            "embeddings: text/plain from another site (no preflight)",
            request("POST", "/v1/embeddings", &[("Content-Type", "text/plain"), ("Origin", "https://evil.example")], br#"{"input": "a"}"#, host),
            Status(403),
        ),
        ("embeddings: an unknown encoding format", post("/v1/embeddings", r#"{"input": "a", "encoding_format": "xml"}"#), Client),
        (
            "embeddings: 2 GB announced",
            request("POST", "/v1/embeddings", &[("Content-Type", "application/json"), ("Content-Length", "2147483648")], b"{", host),
            Status(413),
        ),
        ("embeddings: nesting 10 000 deep", post("/v1/embeddings", &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))), Client),
        ("embeddings: PUT", request("PUT", "/v1/embeddings", &json, b"{}", host), Status(405)),
        ("embeddings: invalid UTF-8", request("POST", "/v1/embeddings", &json, b"{\"input\": \"\xff\xfe\"}", host), Client),
        // Chat.
        ("chat: invalid JSON", post("/v1/chat/completions", "{"), Client),
        ("chat: no messages", post("/v1/chat/completions", r#"{"model": "x"}"#), Client),
        ("chat: empty messages", post("/v1/chat/completions", r#"{"messages": []}"#), Client),
        ("chat: an unknown role", post("/v1/chat/completions", r#"{"messages": [{"role": "wizard", "content": "hi"}]}"#), Client),
        ("chat: max_tokens negative", post("/v1/chat/completions", r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}"#), Client),
        (
            "chat: max_tokens a billion",
            post("/v1/chat/completions", r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000000000}"#),
            Client,
        ),
        (
            "chat: temperature a string",
            post("/v1/chat/completions", r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#),
            Client,
        ),
        ("chat: temperature 1e9", post("/v1/chat/completions", r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e9}"#), Client),
        (
            "chat: a schema that is not a schema",
            post(
                "/v1/chat/completions",
                r#"{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 42}}}"#,
            ),
            Client,
        ),
        (
            "chat: a self-referencing schema",
            post(
                "/v1/chat/completions",
                r##"{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}}"##,
            ),
            Client,
        ),
        (
            "chat: an unknown response format",
            post("/v1/chat/completions", r#"{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}}"#),
            Client,
        ),
        (
            "chat: a 15 MB message",
            post("/v1/chat/completions", &format!(r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#, "word ".repeat(3_000_000))),
            Client,
        ),
        // Transcriptions.
        ("transcription: JSON instead of a form", post("/v1/audio/transcriptions", "{}"), Client),
        (
            "transcription: no boundary",
            request("POST", "/v1/audio/transcriptions", &[("Content-Type", "multipart/form-data")], b"--B--", host),
            Client,
        ),
        ("transcription: no file", multipart("B", "--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--B--\r\n"), Client),
        ("transcription: random bytes", multipart("B", &file_part("file", "RIFF\u{1}\u{2}not really audio at all")), Client),
        (
            "transcription: a cut-off form",
            multipart("B", "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF"),
            Client,
        ),
        (
            "transcription: an unknown response format",
            multipart("B", &format!("--B\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\nxml\r\n{}", file_part("file", "x"))),
            Client,
        ),
        // Images.
        ("images: search without a query", post("/v1/images/search", "{}"), Client),
        ("images: search with a blank query", post("/v1/images/search", r#"{"query": "  "}"#), Client),
        ("images: search top_k as text", post("/v1/images/search", r#"{"query": "cat", "top_k": "many"}"#), Client),
        ("images: an unknown image", request("GET", "/v1/images/img-0123456789abcdef0123456789abcdef", &[], b"", host), Status(404)),
        ("images: an id of 10 KB", request("GET", &format!("/v1/images/{}", "x".repeat(10_000)), &[], b"", host), Client),
        ("images: delete an unknown image", request("DELETE", "/v1/images/img-0123456789abcdef0123456789abcdef", &[], b"", host), Status(404)),
        ("images: a thumbnail of nothing", request("GET", "/v1/images/nothing/thumbnail", &[], b"", host), Status(404)),
        ("images: describe JSON garbage", post("/v1/images/describe", "{{{{"), Client),
        ("images: upload without a form", post("/v1/images", "{}"), Client),
        // Meetings.
        ("meetings: an unknown meeting", request("GET", "/v1/meetings/mtg-0123456789abcdef", &[], b"", host), Status(404)),
        ("meetings: a NUL in the id", request("GET", "/v1/meetings/a%00b", &[], b"", host), Client),
        ("meetings: ask without a body", post("/v1/meetings/mtg-0123456789abcdef/ask", ""), Client),
        ("meetings: page size as text", request("GET", "/v1/meetings?page_size=lots", &[], b"", host), Client),
        (
            "meetings: an item index past the end",
            request("PATCH", "/v1/meetings/mtg-0123456789abcdef/decisions/99999999999", &json, b"{}", host),
            Client,
        ),
        ("meetings: export in an unknown format", request("GET", "/v1/meetings/mtg-0123456789abcdef/export?format=pdf", &[], b"", host), Client),
        // Paths, methods, headers, hosts, origins.
        ("a route that does not exist", request("GET", "/v2/everything", &[], b"", host), Status(404)),
        ("a path that climbs out of the assets", request("GET", "/ui/assets/..%2f..%2fCargo.toml", &[], b"", host), Status(404)),
        ("a foreign Host (DNS rebinding)", request("GET", "/v1/models", &[], b"", "evil.example"), Client),
        (
            "a cross-site form post",
            request(
                "POST",
                "/v1/images/search",
                &[("Content-Type", "application/json"), ("Origin", "https://evil.example")],
                br#"{"query": "cat"}"#,
                host,
            ),
            Status(403),
        ),
        (
            "Sec-Fetch-Site: cross-site",
            request(
                "POST",
                "/v1/images/search",
                &[("Content-Type", "application/json"), ("Sec-Fetch-Site", "cross-site")],
                br#"{"query": "cat"}"#,
                host,
            ),
            Status(403),
        ),
        ("a 100 KB header", request("GET", "/v1/models", &[("X-Filler", &"a".repeat(100_000))], b"", host), Status(431)),
        ("a request line that is not HTTP", b"HELLO THERE\r\n\r\n".to_vec(), Client),
        (
            "Content-Length and chunked together",
            request(
                "POST",
                "/v1/embeddings",
                &[("Content-Type", "application/json"), ("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                b"0\r\n\r\n",
                host,
            ),
            Client,
        ),
        (
            "two Content-Lengths",
            request(
                "POST",
                "/v1/embeddings",
                &[("Content-Type", "application/json"), ("Content-Length", "5"), ("Content-Length", "6")],
                b"{\"a\":",
                host,
            ),
            Client,
        ),
        ("a bogus bearer token (keys off)", request("GET", "/v1/models", &[("Authorization", "Bearer nonsense")], b"", host), Ok),
    ];
    cases.into_iter().map(|(name, request, expect)| HttpCase { name: name.to_string(), request, expect }).collect()
}

/// Runs a gRPC case: the first error, or Ok.
async fn send_grpc(channel: tonic::transport::Channel, case: &GrpcCase) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(case.path);
    let mut request = Request::new(tokio_stream::iter(case.messages.clone()));
    request.set_timeout(Duration::from_secs(120));
    let mut stream = grpc.streaming(request, path, RawCodec).await?.into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// Field `field` (VmRSS: resident now, VmHWM: peak) of process `pid`, in MiB.
fn memory_mib(pid: i32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_and_fifty_kinds_of_bad_input_get_client_errors_and_break_nothing() {
    let data = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port_range(1));
    let (mut services, gateway) =
        start_cluster(&["mmc-embed", "mmc-caption", "mmc-speech", "mmc-textgen"], data.path(), &["--http-listen", &http]).await;
    services.push(gateway);
    let services: Vec<Service> = services;
    let pids: Vec<i32> = services.iter().map(|s| s.process.pid()).collect();
    let internal: Vec<String> = services[..4].iter().map(|s| s.url.trim_start_matches("http://").to_string()).collect();

    let grpc_cases: Vec<GrpcCase> = framing_cases().into_iter().chain(content_cases()).collect();
    let http_cases = http_cases(&http);
    let kinds = grpc_cases.len() + http_cases.len();
    let mut wrong = Vec::new();
    for case in &grpc_cases {
        let result = send_grpc(services[case.target as usize].channel.clone(), case).await;
        let got = match &result {
            Ok(()) => "success".to_string(),
            Err(s) => format!("{:?}: {}", s.code(), s.message().chars().take(200).collect::<String>()),
        };
        let fits = match (case.expect, &result) {
            (Expect::Ok, Ok(())) => true,
            (Expect::Client, Err(s)) => client_code(s.code()),
            (Expect::Code(c), Err(s)) => s.code() == c,
            _ => false,
        };
        let message = result.as_ref().err().map(|s| s.message().to_string()).unwrap_or_default();
        if !fits {
            wrong.push(format!("gRPC {}: expected {:?}, got {got}", case.name, case.expect));
        } else if message.len() > 300 {
            wrong.push(format!("gRPC {}: a {}-byte message: {got}", case.name, message.len()));
        } else if matches!(case.target, Target::Gateway) && internal.iter().any(|a| message.contains(a.as_str())) {
            wrong.push(format!("gRPC {}: the message names an internal address: {got}", case.name));
        }
    }
    for case in &http_cases {
        let (http_addr, request) = (http.clone(), case.request.clone());
        let (status, body) =
            tokio::task::spawn_blocking(move || http_raw(&http_addr, &request, Duration::from_secs(60))).await.unwrap().unwrap_or((0, String::new()));
        let fits = match case.expect {
            Expect::Ok => (200..300).contains(&status),
            Expect::Client => (400..500).contains(&status),
            Expect::Status(s) => status == s,
            Expect::Code(_) => false,
        };
        let got = format!("{status} {}", body.chars().take(200).collect::<String>());
        if !fits {
            wrong.push(format!("HTTP {}: expected {:?}, got {got}", case.name, case.expect));
        } else if status >= 400 && body.len() > 1000 {
            wrong.push(format!("HTTP {}: a {}-byte error body", case.name, body.len()));
        } else if internal.iter().any(|a| body.contains(a.as_str())) {
            wrong.push(format!("HTTP {}: the body names an internal address: {got}", case.name));
        }
    }
    eprintln!("hostile inputs: {kinds} kinds ({} gRPC, {} HTTP), {} answered wrongly", grpc_cases.len(), http_cases.len(), wrong.len());
    assert!(kinds >= 150, "only {kinds} kinds");
    assert!(wrong.is_empty(), "{} of {kinds} answered wrongly:\n{}", wrong.len(), wrong.join("\n"));

    // Nothing crashed or restarted, memory is bounded (after a few seconds: a burst's
    // freed heap is returned, see mmc_runtime::memory), everything still serves.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut services = services;
    for ((s, pid), name) in services.iter_mut().zip(&pids).zip(["embed", "caption", "speech", "textgen", "gateway"]) {
        assert!(s.process.0.as_mut().unwrap().try_wait().unwrap().is_none(), "{name} (pid {pid}) exited");
        let (peak, settled) = (memory_mib(*pid, "VmHWM:"), memory_mib(*pid, "VmRSS:"));
        eprintln!("memory {name}: peak {peak:.0} MiB, settled {settled:.0} MiB");
        assert!(settled < 2048.0, "{name} holds {settled:.0} MiB after the suite");
    }
    let good = EmbedTextRequest { texts: vec!["a cat".into()], reject_overlong: false };
    mmc_proto::embed::v1::embed_service_client::EmbedServiceClient::new(services[0].channel.clone())
        .embed_text(good)
        .await
        .expect("embed still serves");
    let search = SearchImagesRequest { query: Some(Query::Text("a cat".into())), top_k: 3, score_threshold: -1.0, ..Default::default() };
    mmc_proto::gateway::v1::gateway_service_client::GatewayServiceClient::new(services[4].channel.clone())
        .search_images(search)
        .await
        .expect("the gateway still serves");
}
