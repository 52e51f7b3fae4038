//! The gateway's own types: what the flows take and return and what the stores keep.
//!
//! They are plain Rust, with no protobuf in sight, so that the two protocol edges ([`crate::grpc`]
//! and [`crate::http`]) are siblings: each turns its wire format into these types, calls a
//! flow, and turns the result (or the [`GatewayError`](crate::error::GatewayError)) back.
//! A field that is required here is required in the type (`ActionItem::item` is a
//! [`CitedItem`], not an `Option`), so the flows never unwrap what the contract left
//! optional. The stores serialize these types with serde; their field names are the
//! protos' field names, so the JSON the HTTP edge shows and the stored form agree.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use crate::store::{ImageRecord, ImageReview, Label, ModelRef};

/// Wall time of one stage of a flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    /// The stage's name, as documented in the gateway proto (`encode_image`, `caption`...).
    pub stage: String,
    pub duration_ms: f64,
    /// The model service's own time for the call, as it reports it (0: not known).
    #[serde(default)]
    pub upstream_ms: f64,
}

/// How far a long flow has come (SummarizeMeeting).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub stage: String,
    pub done_units: u64,
    pub total_units: u64,
    pub unit: String,
    /// 0..=1 over the whole flow.
    pub fraction_done: f64,
    pub message: String,
}

// ---- review ---------------------------------------------------------------------------

/// Who wrote a stored text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    /// A model wrote it and nobody has changed it.
    #[default]
    Machine,
    /// A person wrote or edited it.
    Human,
}

impl TextSource {
    /// `machine` or `human` (REST, exports).
    pub fn as_str(self) -> &'static str {
        match self {
            TextSource::Machine => "machine",
            TextSource::Human => "human",
        }
    }
}

/// An earlier text of a field, kept when a person replaced it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TextRevision {
    /// `alt_text`, `description`, or a meeting item's `text`, `owner`, `due`.
    pub field: String,
    pub text: String,
    pub source: TextSource,
    pub replaced_by: String,
    pub replaced_at_unix_ms: i64,
}

/// Where a decision or action item stands in a person's review.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    #[default]
    Pending,
    Approved,
    /// Kept for the record, left out of exports.
    Rejected,
}

impl ReviewStatus {
    /// `pending`, `approved` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Rejected => "rejected",
        }
    }
}

/// Review state of one meeting item.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemReview {
    pub status: ReviewStatus,
    pub source: TextSource,
    pub reviewed_by: String,
    pub reviewed_at_unix_ms: i64,
    /// Increases with every change of the item.
    pub version: u32,
    /// Earlier texts, owners and due dates, oldest first.
    pub history: Vec<TextRevision>,
}

/// Review state of a meeting's notes as a whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NotesReview {
    /// Increases with every review change of the meeting.
    pub version: u64,
    pub reviewed: bool,
    pub reviewed_by: String,
    pub reviewed_at_unix_ms: i64,
}

/// A person's correction of an indexed image (UpdateImage).
#[derive(Clone, Debug, Default)]
pub struct ImageEdit {
    pub image_id: String,
    pub alt_text: Option<String>,
    pub description: Option<String>,
    /// Replaces the metadata when set.
    pub metadata: Option<BTreeMap<String, String>>,
    pub reviewer: String,
    /// The version the change was made on; `None` = do not check.
    pub expected_version: Option<u64>,
}

/// Which list of a meeting's notes an item is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Decision,
    ActionItem,
}

impl ItemKind {
    /// `decision` or `action_item`.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Decision => "decision",
            ItemKind::ActionItem => "action_item",
        }
    }
}

/// A person's change to one decision or action item (UpdateMeetingItem).
#[derive(Clone, Debug)]
pub struct ItemEdit {
    pub meeting_id: String,
    pub kind: ItemKind,
    /// `None` adds a new item.
    pub index: Option<u32>,
    pub text: Option<String>,
    pub owner: Option<String>,
    pub due: Option<String>,
    /// Empty = unchanged.
    pub segment_ids: Vec<u32>,
    /// `None` = approved when text, owner or due changed, else unchanged.
    pub status: Option<ReviewStatus>,
    pub reviewer: String,
    /// The item's version the change was made on; `None` = do not check.
    pub expected_version: Option<u32>,
}

/// Formats of a meeting export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Markdown,
    Json,
    ICalendar,
}

/// An exported document.
#[derive(Clone, Debug)]
pub struct Export {
    pub content: Vec<u8>,
    pub content_type: &'static str,
    pub file_name: String,
}

// ---- images ---------------------------------------------------------------------------

/// An uploaded image: its encoded bytes (shared, never copied per stage) and a name.
#[derive(Clone, Debug, Default)]
pub struct ImageUpload {
    pub data: Bytes,
    /// File name or URL, kept for display.
    pub source_name: String,
}

/// Result of indexing one image.
#[derive(Clone, Debug)]
pub struct Indexed {
    pub record: ImageRecord,
    /// The same content was indexed before; nothing new was stored.
    pub already_indexed: bool,
}

/// What to search by.
#[derive(Clone, Debug)]
pub enum Query {
    Text(String),
    Image(ImageUpload),
}

/// A search as a client asked for it (checked by the flow).
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub query: Query,
    /// Hits wanted; 0 = the default.
    pub top_k: u32,
    /// Hits scoring below this cosine are dropped (-1 = keep all).
    pub score_threshold: f32,
    /// Every pair must be in an image's metadata.
    pub metadata_filter: BTreeMap<String, String>,
}

/// One search result.
#[derive(Clone, Debug)]
pub struct SearchHit {
    pub image: ImageRecord,
    pub score: f32,
}

/// The results of a search, best first.
#[derive(Clone, Debug)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    pub timings: Vec<StageTiming>,
}

/// A page of the index, as a client asked for it.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    /// 0 = the default page size.
    pub page_size: u32,
    /// Empty for the first page, else a `next_page_token` this server issued.
    pub page_token: String,
    /// Only the review queue (least confident first).
    pub needs_review: bool,
}

/// One stored meeting in a list (what it is, not its transcript).
#[derive(Clone, Debug)]
pub struct MeetingListing {
    pub meeting_id: String,
    pub title: String,
    pub created_at_unix_ms: i64,
    pub audio_duration_ms: i64,
    pub notes_reviewed: bool,
    pub decisions: u32,
    pub action_items: u32,
}

/// One page of stored meetings, newest first.
#[derive(Clone, Debug)]
pub struct MeetingPage {
    pub meetings: Vec<MeetingListing>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// One page of the index, oldest first.
#[derive(Clone, Debug)]
pub struct ImagePage {
    pub images: Vec<ImageRecord>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// What a caption is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptionMode {
    /// One short sentence for a screen reader.
    AltText,
    /// A few sentences.
    Detailed,
}

impl CaptionMode {
    /// The name used by the REST API (`alt_text`, `detailed`).
    pub fn as_str(self) -> &'static str {
        match self {
            CaptionMode::AltText => "alt_text",
            CaptionMode::Detailed => "detailed",
        }
    }
}

/// An encoder label a caption rests on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub label: String,
    pub probability: f32,
}

/// A caption as the caption service wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct Caption {
    pub text: String,
    pub mode: CaptionMode,
    pub confidence: f32,
    pub evidence: Vec<Evidence>,
    /// Decoder attempts before the text passed its checks.
    pub attempts: u32,
    /// The text is the template, not the decoder's.
    pub from_template: bool,
    /// The decoder is unsure, and the text says so.
    pub uncertain: bool,
    /// Who wrote the text (human: a stored correction of this image).
    pub source: TextSource,
    pub model: Option<ModelRef>,
}

/// The texts written for one image.
#[derive(Clone, Debug)]
pub struct Description {
    /// One caption per requested mode, in request order.
    pub captions: Vec<Caption>,
    /// The encoder labels the captions rest on.
    pub labels: Vec<Label>,
    pub timings: Vec<StageTiming>,
    /// Some caption is uncertain and no person reviewed this image.
    pub needs_review: bool,
    /// Id of the stored image with the same content, if indexed.
    pub image_id: Option<String>,
}

// ---- meetings -------------------------------------------------------------------------

/// How the bytes of an audio upload are to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AudioInput {
    /// A container (WAV, FLAC, MP3, OGG, M4A), detected from the bytes.
    #[default]
    Detect,
    /// Headerless signed 16-bit little-endian PCM.
    PcmS16le { sample_rate_hz: u32, channels: u32 },
    /// Headerless 32-bit float little-endian PCM.
    PcmF32le { sample_rate_hz: u32, channels: u32 },
}

/// How a recording is to be transcribed (what the speech service is told).
#[derive(Clone, Debug, Default)]
pub struct TranscribeOptions {
    /// ISO 639-1 code, or empty to detect.
    pub language: String,
    /// Translate to English instead of transcribing.
    pub translate: bool,
    /// Words that prime the decoder (names, jargon).
    pub initial_prompt: String,
    /// A model the speech service has loaded, or empty for its default.
    pub model_id: String,
    /// Size of the whole upload when known (for progress), else 0.
    pub total_bytes: u64,
    /// How to read the bytes.
    pub audio: AudioInput,
    /// Per-word timings.
    pub word_timestamps: bool,
    /// Renderings wanted besides the text.
    pub formats: Vec<TranscriptFormat>,
}

/// A SummarizeMeeting request, before the recording.
#[derive(Clone, Debug, Default)]
pub struct MeetingRequest {
    /// Empty: "Meeting".
    pub title: String,
    /// Prompt version of the notes; empty for the default.
    pub prompt_version: String,
    /// Who took part: owners are matched to these names.
    pub participants: Vec<String>,
    pub transcription: TranscribeOptions,
}

/// One timed word of a segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub text: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub probability: f32,
}

/// A decoded stretch of speech.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
    #[serde(default)]
    pub avg_logprob: f32,
    #[serde(default)]
    pub no_speech_prob: f32,
    #[serde(default)]
    pub compression_ratio: f32,
    #[serde(default)]
    pub words: Vec<Word>,
}

/// A note line with the transcript segments it rests on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CitedItem {
    pub text: String,
    pub segment_ids: Vec<u32>,
    /// The cited segments hold the item's facts.
    pub citation_verified: bool,
    /// A person's review of it (decisions and action items).
    #[serde(default)]
    pub review: ItemReview,
}

/// A task somebody took on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionItem {
    pub item: CitedItem,
    /// Empty when the meeting named nobody.
    pub owner: String,
    /// The line's own date phrase, or empty.
    pub due: String,
}

/// The notes of a meeting.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeetingSummary {
    pub meeting_id: String,
    pub summary: String,
    pub key_points: Vec<CitedItem>,
    pub decisions: Vec<CitedItem>,
    pub action_items: Vec<ActionItem>,
    pub prompt_version: String,
    pub models: Vec<ModelRef>,
    pub timings: Vec<StageTiming>,
    /// The meeting's language (ISO 639-1); empty in notes stored before it was recorded.
    #[serde(default)]
    pub language: String,
}

/// A summarized meeting as stored and as GetMeeting returns it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meeting {
    pub meeting_id: String,
    pub title: String,
    pub language: String,
    pub audio_duration_ms: i64,
    pub segments: Vec<Segment>,
    pub summary: Option<MeetingSummary>,
    pub created_at_unix_ms: i64,
    #[serde(default)]
    pub participants: Vec<String>,
    #[serde(default)]
    pub review: NotesReview,
}

/// What SummarizeMeeting reports while it works; the summary comes as its result.
#[derive(Clone, Debug)]
pub enum MeetingEvent {
    Progress(Progress),
    /// A transcript segment, as soon as it is decoded.
    Segment(Segment),
}

/// An AskMeeting request.
#[derive(Clone, Debug)]
pub struct AskRequest {
    pub meeting_id: String,
    pub question: String,
    /// Passages to retrieve; 0 = the default.
    pub top_k: u32,
}

/// A transcript passage an answer cites.
#[derive(Clone, Debug, PartialEq)]
pub struct Citation {
    pub segment_id: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
}

/// Where an answer's text comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerSource {
    /// Nothing in the meeting answers: "The meeting does not say."
    None,
    /// The language model's answer, which passed the checks.
    Model,
    /// A transcript line quoted (the model's answer was withheld).
    Extractive,
}

impl AnswerSource {
    /// The lower-case name used by the REST API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerSource::None => "none",
            AnswerSource::Model => "model",
            AnswerSource::Extractive => "extractive",
        }
    }
}

/// The answer to a question about a meeting.
#[derive(Clone, Debug)]
pub struct Answer {
    pub answer: String,
    pub citations: Vec<Citation>,
    /// The meeting answers the question.
    pub answerable: bool,
    pub source: AnswerSource,
    /// Why the model's answer was withheld (empty unless `source` is `Extractive`).
    pub withheld_reason: String,
}

// ---- the OpenAI-compatible routes' upstream calls -------------------------------------

/// Who wrote a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

/// One message of a chat.
#[derive(Clone, Debug)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// Sampling settings of a generation (0 for a knob means "off").
#[derive(Clone, Debug, Default)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub seed: Option<u64>,
}

/// A chat for the text-generation service.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
    /// 0 = the service's default.
    pub max_tokens: u32,
    pub stop: Vec<String>,
    /// JSON schema the output must match, or empty.
    pub json_schema: String,
}

/// Why a generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End of text or a stop sequence.
    Stop,
    /// `max_tokens` or the context window reached.
    Length,
}

/// The end of a generation.
#[derive(Clone, Debug)]
pub struct ChatSummary {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub model: Option<ModelRef>,
}

/// What a streamed generation yields: tokens, then the summary.
#[derive(Clone, Debug)]
pub enum ChatEvent {
    Token(String),
    Done(ChatSummary),
}

/// A rendering of a transcript the speech service can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranscriptFormat {
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

/// A whole transcription.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    pub audio_duration_ms: i64,
    /// The renderings asked for.
    pub rendered: Vec<(TranscriptFormat, String)>,
    pub model: Option<ModelRef>,
}

/// One text's embedding with what the model did to the text.
#[derive(Clone, Debug)]
pub struct TextEmbedding {
    pub values: Vec<f32>,
    pub token_count: u32,
}
