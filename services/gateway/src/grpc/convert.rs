//! Protobuf <-> the gateway's own types, for the gRPC edge only, and the one mapping of
//! [`GatewayError`] to a gRPC status.

use mmc_proto::{
    caption::v1 as caption_pb,
    common::v1 as common,
    embed::v1 as embed_pb,
    gateway::v1 as pb,
    speech::v1::{self as speech_pb, OutputFormat, Task},
};
use tonic::{Code, Status};

use crate::{
    domain::{
        Answer, AnswerSource, AudioInput, Caption, CaptionMode, CitedItem, ExportFormat, ImageEdit, ImageRecord, ImageUpload, ItemEdit, ItemKind,
        ItemReview, Label, Meeting, MeetingEvent, MeetingSummary, ModelRef, Progress, ReviewStatus, Segment, StageTiming, TextRevision, TextSource,
        TranscribeOptions, TranscriptFormat,
    },
    error::{ErrorKind, GatewayError},
};

/// The status a gRPC client sees for `e` (logged here when it is the system's fault).
pub fn status(e: GatewayError) -> Status {
    e.log();
    let code = match e.kind() {
        ErrorKind::Invalid | ErrorKind::ContextLength => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::Overloaded => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, e.client_message())
}

/// `ResourceExhausted` -> `RESOURCE_EXHAUSTED`: the canonical gRPC code name.
pub fn code_name(code: Code) -> String {
    let debug = format!("{code:?}");
    let mut name = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

pub fn image(i: common::Image) -> ImageUpload {
    ImageUpload { data: i.data, source_name: i.source_name }
}

pub fn model(m: ModelRef) -> common::ModelInfo {
    common::ModelInfo { id: m.id, family: m.family, profile: m.profile, revision: m.revision, dimensions: m.dimensions }
}

pub fn label(l: Label) -> embed_pb::Label {
    embed_pb::Label { name: l.name, probability: l.probability, class_index: l.class_index }
}

pub fn timing(t: StageTiming) -> common::StageTiming {
    common::StageTiming { stage: t.stage, duration_ms: t.duration_ms, upstream_ms: t.upstream_ms }
}

/// A stored record as the contract's `ImageRecord` (what every route shows of an image).
pub fn record(r: ImageRecord) -> pb::ImageRecord {
    pb::ImageRecord {
        image_id: r.image_id,
        content_hash: r.content_hash,
        source_name: r.source_name,
        caption: r.caption,
        labels: r.labels.into_iter().map(label).collect(),
        metadata: r.metadata.into_iter().collect(),
        models: r.models.into_iter().map(model).collect(),
        indexed_at_unix_ms: r.indexed_at_unix_ms,
        caption_confidence: r.review.caption_confidence,
        needs_review: r.review.needs_review,
        caption_source: source(r.review.caption_source) as i32,
        description: r.review.description,
        version: r.review.version,
        reviewed_by: r.review.reviewed_by,
        reviewed_at_unix_ms: r.review.reviewed_at_unix_ms,
        history: r.review.history.into_iter().map(revision).collect(),
    }
}

pub fn source(s: TextSource) -> pb::TextSource {
    match s {
        TextSource::Machine => pb::TextSource::Machine,
        TextSource::Human => pb::TextSource::Human,
    }
}

fn revision(r: TextRevision) -> pb::TextRevision {
    pb::TextRevision {
        field: r.field,
        text: r.text,
        source: source(r.source) as i32,
        replaced_by: r.replaced_by,
        replaced_at_unix_ms: r.replaced_at_unix_ms,
    }
}

fn status_pb(s: ReviewStatus) -> pb::ReviewStatus {
    match s {
        ReviewStatus::Pending => pb::ReviewStatus::Pending,
        ReviewStatus::Approved => pb::ReviewStatus::Approved,
        ReviewStatus::Rejected => pb::ReviewStatus::Rejected,
    }
}

fn item_review(r: ItemReview) -> pb::ItemReview {
    pb::ItemReview {
        status: status_pb(r.status) as i32,
        source: source(r.source) as i32,
        reviewed_by: r.reviewed_by,
        reviewed_at_unix_ms: r.reviewed_at_unix_ms,
        version: r.version,
        history: r.history.into_iter().map(revision).collect(),
    }
}

/// An UpdateImage request as the flow's edit.
pub fn image_edit(r: pb::UpdateImageRequest) -> ImageEdit {
    ImageEdit {
        image_id: r.image_id,
        alt_text: r.alt_text,
        description: r.description,
        metadata: r.replace_metadata.then(|| r.metadata.into_iter().collect()),
        reviewer: r.reviewer,
        expected_version: r.expected_version,
    }
}

/// An UpdateMeetingItem request as the flow's edit.
pub fn item_edit(r: pb::UpdateMeetingItemRequest) -> Result<ItemEdit, GatewayError> {
    let kind = match pb::ItemKind::try_from(r.kind) {
        Ok(pb::ItemKind::Decision) => ItemKind::Decision,
        Ok(pb::ItemKind::ActionItem) => ItemKind::ActionItem,
        _ => return Err(GatewayError::Invalid("kind must be ITEM_KIND_DECISION or ITEM_KIND_ACTION_ITEM".into())),
    };
    let status = match pb::ReviewStatus::try_from(r.status) {
        Ok(pb::ReviewStatus::Unspecified) => None,
        Ok(pb::ReviewStatus::Pending) => Some(ReviewStatus::Pending),
        Ok(pb::ReviewStatus::Approved) => Some(ReviewStatus::Approved),
        Ok(pb::ReviewStatus::Rejected) => Some(ReviewStatus::Rejected),
        Err(_) => return Err(GatewayError::Invalid(format!("unknown review status {}", r.status))),
    };
    Ok(ItemEdit {
        meeting_id: r.meeting_id,
        kind,
        index: r.index,
        text: r.text,
        owner: r.owner,
        due: r.due,
        segment_ids: r.segment_ids,
        status,
        reviewer: r.reviewer,
        expected_version: r.expected_version,
    })
}

/// An export format; UNSPECIFIED is Markdown.
pub fn export_format(f: i32) -> Result<ExportFormat, GatewayError> {
    match pb::ExportFormat::try_from(f) {
        Ok(pb::ExportFormat::Unspecified | pb::ExportFormat::Markdown) => Ok(ExportFormat::Markdown),
        Ok(pb::ExportFormat::Json) => Ok(ExportFormat::Json),
        Ok(pb::ExportFormat::Icalendar) => Ok(ExportFormat::ICalendar),
        Err(_) => Err(GatewayError::Invalid(format!("unknown export format {f}"))),
    }
}

/// Requested caption modes; `UNSPECIFIED` is alt text.
pub fn caption_modes(modes: &[i32]) -> Result<Vec<CaptionMode>, GatewayError> {
    modes
        .iter()
        .map(|m| match caption_pb::CaptionMode::try_from(*m) {
            Ok(caption_pb::CaptionMode::Unspecified | caption_pb::CaptionMode::AltText) => Ok(CaptionMode::AltText),
            Ok(caption_pb::CaptionMode::Detailed) => Ok(CaptionMode::Detailed),
            Err(_) => Err(GatewayError::Invalid(format!("unknown caption mode {m}"))),
        })
        .collect()
}

pub fn caption(c: Caption) -> caption_pb::CaptionResponse {
    let mode = match c.mode {
        CaptionMode::AltText => caption_pb::CaptionMode::AltText,
        CaptionMode::Detailed => caption_pb::CaptionMode::Detailed,
    };
    caption_pb::CaptionResponse {
        text: c.text,
        mode: mode as i32,
        confidence: c.confidence,
        evidence: c.evidence.into_iter().map(|e| caption_pb::Evidence { label: e.label, probability: e.probability }).collect(),
        attempts: c.attempts,
        from_template: c.from_template,
        model: c.model.map(model),
        timings: vec![],
        uncertain: c.uncertain,
    }
}

/// A SummarizeMeeting transcription config as options for the flow.
pub fn transcribe_options(c: speech_pb::TranscribeConfig) -> Result<TranscribeOptions, GatewayError> {
    let audio = match c.format {
        None => AudioInput::Detect,
        Some(f) => match common::AudioEncoding::try_from(f.encoding) {
            Ok(common::AudioEncoding::Auto) => AudioInput::Detect,
            Ok(common::AudioEncoding::PcmS16le) => AudioInput::PcmS16le { sample_rate_hz: f.sample_rate_hz, channels: f.channels },
            Ok(common::AudioEncoding::PcmF32le) => AudioInput::PcmF32le { sample_rate_hz: f.sample_rate_hz, channels: f.channels },
            Err(_) => return Err(GatewayError::Invalid(format!("unknown audio encoding {}", f.encoding))),
        },
    };
    let formats = c
        .formats
        .iter()
        .filter_map(|f| match OutputFormat::try_from(*f) {
            Ok(OutputFormat::Text) => Some(TranscriptFormat::Text),
            Ok(OutputFormat::Srt) => Some(TranscriptFormat::Srt),
            Ok(OutputFormat::Vtt) => Some(TranscriptFormat::Vtt),
            Ok(OutputFormat::VerboseJson) => Some(TranscriptFormat::VerboseJson),
            _ => None,
        })
        .collect();
    Ok(TranscribeOptions {
        language: c.language,
        translate: c.task == Task::Translate as i32,
        initial_prompt: c.initial_prompt,
        model_id: c.model_id,
        total_bytes: c.total_bytes,
        audio,
        word_timestamps: c.word_timestamps,
        formats,
    })
}

pub fn segment(s: Segment) -> speech_pb::Segment {
    speech_pb::Segment {
        id: s.id,
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        text: s.text,
        avg_logprob: s.avg_logprob,
        no_speech_prob: s.no_speech_prob,
        compression_ratio: s.compression_ratio,
        words: s
            .words
            .into_iter()
            .map(|w| speech_pb::Word { text: w.text, start_ms: w.start_ms, end_ms: w.end_ms, probability: w.probability })
            .collect(),
    }
}

/// A note line; `reviewed` for decisions and action items (key points are not reviewed).
fn cited(i: CitedItem, reviewed: bool) -> pb::CitedItem {
    pb::CitedItem {
        text: i.text,
        segment_ids: i.segment_ids,
        citation_verified: i.citation_verified,
        review: reviewed.then(|| item_review(i.review)),
    }
}

pub fn progress(p: Progress) -> common::Progress {
    common::Progress {
        stage: p.stage,
        done_units: p.done_units,
        total_units: p.total_units,
        unit: p.unit,
        fraction_done: p.fraction_done,
        message: p.message,
    }
}

pub fn summary(s: MeetingSummary) -> pb::MeetingSummary {
    pb::MeetingSummary {
        meeting_id: s.meeting_id,
        summary: s.summary,
        key_points: s.key_points.into_iter().map(|i| cited(i, false)).collect(),
        decisions: s.decisions.into_iter().map(|i| cited(i, true)).collect(),
        action_items: s.action_items.into_iter().map(|a| pb::ActionItem { item: Some(cited(a.item, true)), owner: a.owner, due: a.due }).collect(),
        prompt_version: s.prompt_version,
        models: s.models.into_iter().map(model).collect(),
        timings: s.timings.into_iter().map(timing).collect(),
        language: s.language,
    }
}

pub fn meeting_event(e: MeetingEvent) -> pb::summarize_meeting_response::Event {
    use pb::summarize_meeting_response::Event;
    match e {
        MeetingEvent::Progress(p) => Event::Progress(progress(p)),
        MeetingEvent::Segment(s) => Event::Segment(segment(s)),
    }
}

pub fn meeting(m: Meeting) -> pb::Meeting {
    pb::Meeting {
        meeting_id: m.meeting_id,
        title: m.title,
        language: m.language,
        audio_duration_ms: m.audio_duration_ms,
        segments: m.segments.into_iter().map(segment).collect(),
        summary: m.summary.map(summary),
        created_at_unix_ms: m.created_at_unix_ms,
        participants: m.participants,
        version: m.review.version,
        notes_reviewed: m.review.reviewed,
        notes_reviewed_by: m.review.reviewed_by,
        notes_reviewed_at_unix_ms: m.review.reviewed_at_unix_ms,
    }
}

pub fn answer(a: Answer) -> pb::AskMeetingResponse {
    let source = match a.source {
        AnswerSource::None => pb::AnswerSource::None,
        AnswerSource::Model => pb::AnswerSource::Model,
        AnswerSource::Extractive => pb::AnswerSource::Extractive,
    };
    pb::AskMeetingResponse {
        answer: a.answer,
        citations: a
            .citations
            .into_iter()
            .map(|c| pb::Citation { segment_id: c.segment_id, start_ms: c.start_ms, end_ms: c.end_ms, text: c.text })
            .collect(),
        answerable: a.answerable,
        source: source as i32,
        withheld_reason: a.withheld_reason,
    }
}
