//! Meeting flows. SummarizeMeeting: audio upload -> `speech.Transcribe` (segments streamed
//! back as they come) -> transcript chunks -> per-chunk extraction with JSON-schema-
//! constrained generation (`textgen.Chat`) -> citations checked -> merge and de-duplicate
//! -> prose summary -> segment embeddings -> stored. AskMeeting: question -> the meeting's
//! most similar segments -> answer from them only, with citations, or "the meeting does
//! not say".
//!
//! Grounding is enforced here, not hoped for from the model:
//! - the extraction schema only allows line numbers of the chunk, and owners among the
//!   people the chunk names;
//! - an item's citation is checked: the cited segment must contain the owner (action items)
//!   and at least half of the item's content words. If it does not, the chunk's segment
//!   that does is cited instead; if none does, an action item is dropped (its owner or task
//!   is not in the transcript) and other items are kept but flagged
//!   `citation_verified = false`;
//! - a due date is kept only when its words are in the cited segment;
//! - an answer must cite retrieved segments that contain its content words.

use std::collections::{BTreeSet, HashSet};

use mmc_proto::{
    common::v1::{ModelInfo, Progress, StageTiming},
    gateway::v1::{
        summarize_meeting_response::Event, ActionItem, AskMeetingResponse, Citation, CitedItem, Meeting, MeetingConfig,
        MeetingSummary, SummarizeMeetingResponse,
    },
    speech::v1::{speech_service_client::SpeechServiceClient, transcribe_request, transcribe_response, Segment, TranscribeConfig, TranscribeRequest},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::Status;

use super::Flows;
use crate::{
    error::GatewayError,
    upstream::{failure, Deadline},
};

/// Answer given when the transcript does not answer a question.
pub const NOT_IN_MEETING: &str = "The meeting does not say.";

/// Settings of the meeting flows.
#[derive(Clone, Debug)]
pub struct MeetingSettings {
    /// Transcript characters per extraction chunk (a small model extracts better from
    /// short passages; every chunk is one constrained generation).
    pub chunk_chars: usize,
    /// Most tokens one extraction may generate.
    pub extract_max_tokens: u32,
    /// Segments scoring below this cosine with a question are not used to answer it.
    pub min_relevance: f32,
}

impl Default for MeetingSettings {
    fn default() -> Self {
        Self { chunk_chars: 700, extract_max_tokens: 400, min_relevance: 0.3 }
    }
}

/// Where SummarizeMeeting's events go; `false` from [`send`] means the client left.
pub type Events = mpsc::Sender<Result<SummarizeMeetingResponse, Status>>;

async fn send(events: &Events, event: Event) -> Result<(), GatewayError> {
    events.send(Ok(SummarizeMeetingResponse { event: Some(event) })).await.map_err(|_| GatewayError::Cancelled)
}

fn progress(stage: &str, done: u64, total: u64, unit: &str, fraction: f64, message: String) -> Event {
    Event::Progress(Progress { stage: stage.into(), done_units: done, total_units: total, unit: unit.into(), fraction_done: fraction.clamp(0.0, 1.0), message })
}

fn timing(stage: &str, started: std::time::Instant) -> StageTiming {
    StageTiming { stage: stage.into(), duration_ms: started.elapsed().as_secs_f64() * 1e3 }
}

/// `mm:ss` of a millisecond offset.
fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{:02}:{:02}", s / 60, s % 60)
}

// ---- words and citations -------------------------------------------------------------

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "that", "this", "with", "will", "shall", "would", "should", "could", "can", "are", "was", "were", "been",
    "have", "has", "had", "all", "our", "their", "they", "them", "you", "your", "his", "her", "she", "him", "its", "from",
    "into", "onto", "about", "also", "then", "than", "there", "here", "what", "which", "who", "whom", "when", "where", "why",
    "how", "not", "but", "any", "some", "more", "most", "very", "just", "let", "lets", "let's", "one", "two", "out", "off",
    "over", "under", "next", "new", "team", "meeting", "everyone", "agreed", "agree", "decided", "decide", "decision",
    "going", "need", "needs", "make", "made", "take", "took", "get", "got", "per", "via", "did", "does", "doing", "done",
];

/// Lowercase content words of `text` (3+ letters, not stop words), light plural folding.
pub fn content_words(text: &str) -> HashSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| w.chars().count() >= 3 && !STOPWORDS.contains(&w.as_str()))
        .map(|w| if w.len() > 4 && w.ends_with('s') && !w.ends_with("ss") { w[..w.len() - 1].to_string() } else { w })
        .collect()
}

/// Share of `item`'s content words found in `text` (0 when `item` has none).
fn support(item: &HashSet<String>, text: &str) -> f32 {
    if item.is_empty() {
        return 0.0;
    }
    let words = content_words(text);
    item.iter().filter(|w| words.contains(*w)).count() as f32 / item.len() as f32
}

fn contains_word(text: &str, word: &str) -> bool {
    let word = word.to_lowercase();
    text.split(|c: char| !c.is_alphanumeric()).any(|w| w.to_lowercase() == word)
}

/// People a passage names: capitalised words that are not sentence-initial function words
/// (Whisper capitalises names and sentence starts).
pub fn candidate_names(segments: &[Segment]) -> Vec<String> {
    const NOT_NAMES: &[&str] = &[
        "I", "We", "The", "A", "An", "And", "But", "So", "Then", "Finally", "First", "Next", "Also", "Thank", "Thanks", "Good",
        "Okay", "OK", "Yes", "No", "Let's", "Lets", "Let", "This", "That", "It", "Our", "Everyone", "Monday", "Tuesday",
        "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February", "March", "April", "May", "June", "July",
        "August", "September", "October", "November", "December", "Hello", "Hi", "Welcome", "Today", "Tomorrow", "Please",
        "After", "Before", "For", "In", "On", "At", "To", "If", "When", "What", "Who", "Is", "Are", "He", "She", "They", "You",
    ];
    let mut names = BTreeSet::new();
    for s in segments {
        for word in s.text.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
            let mut chars = word.chars();
            let capitalised = chars.next().is_some_and(char::is_uppercase) && chars.all(|c| c.is_lowercase() || c == '\'');
            if capitalised && word.chars().count() >= 2 && !NOT_NAMES.contains(&word) {
                names.insert(word.to_string());
            }
        }
    }
    names.into_iter().collect()
}

/// Checks (and if need be moves) the citation of an item found in `chunk`. Returns the
/// segment cited and whether the citation is verified, or `None` to drop the item.
fn cite(text: &str, owner: Option<&str>, cited: u32, chunk: &[Segment]) -> Option<(u32, bool)> {
    let words = content_words(text);
    let holds = |s: &Segment| owner.is_none_or(|o| contains_word(&s.text, o)) && support(&words, &s.text) >= 0.5;
    if chunk.iter().any(|s| s.id == cited && holds(s)) {
        return Some((cited, true));
    }
    let best = chunk.iter().filter(|s| holds(s)).max_by(|a, b| support(&words, &a.text).total_cmp(&support(&words, &b.text)));
    match (best, owner) {
        (Some(s), _) => Some((s.id, true)),
        (None, Some(_)) => None,
        (None, None) => Some((cited, false)),
    }
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f32 / union as f32
}

/// Removes near-duplicates (content-word Jaccard ≥ 0.6), keeping the first and merging
/// the citations.
fn dedupe(items: Vec<CitedItem>) -> Vec<CitedItem> {
    let mut kept: Vec<(HashSet<String>, CitedItem)> = Vec::new();
    for item in items {
        let words = content_words(&item.text);
        if let Some((_, first)) = kept.iter_mut().find(|(w, _)| jaccard(w, &words) >= 0.6) {
            for id in item.segment_ids {
                if !first.segment_ids.contains(&id) {
                    first.segment_ids.push(id);
                }
            }
            first.citation_verified &= item.citation_verified;
            continue;
        }
        kept.push((words, item));
    }
    kept.into_iter().map(|(_, i)| i).collect()
}

// ---- extraction ----------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Extraction {
    #[serde(default)]
    decisions: Vec<Point>,
    #[serde(default)]
    action_items: Vec<Action>,
    #[serde(default)]
    key_points: Vec<Point>,
}

#[derive(Debug, Deserialize)]
struct Point {
    text: String,
    line: u32,
}

#[derive(Debug, Deserialize)]
struct Action {
    owner: String,
    task: String,
    #[serde(default)]
    due: String,
    line: u32,
}

/// The JSON schema of one chunk's extraction: line numbers limited to the chunk's
/// segments, owners to the people it names.
fn extraction_schema(lines: &[u32], names: &[String]) -> String {
    let point = serde_json::json!({
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 3, "maxLength": 100}, "line": {"enum": lines}},
        "required": ["text", "line"], "additionalProperties": false
    });
    let owners: Vec<&str> = if names.is_empty() { vec![""] } else { names.iter().map(String::as_str).collect() };
    let action = serde_json::json!({
        "type": "object",
        "properties": {
            "owner": {"enum": owners},
            "task": {"type": "string", "minLength": 3, "maxLength": 100},
            "due": {"type": "string", "maxLength": 30},
            "line": {"enum": lines}
        },
        "required": ["owner", "task", "due", "line"], "additionalProperties": false
    });
    serde_json::json!({
        "type": "object",
        "properties": {
            "decisions": {"type": "array", "items": point, "maxItems": 3},
            "action_items": {"type": "array", "items": action, "maxItems": 3},
            "key_points": {"type": "array", "items": point, "maxItems": 3}
        },
        "required": ["decisions", "action_items", "key_points"], "additionalProperties": false,
        "x-guidance": {"whitespace_flexible": false}
    })
    .to_string()
}

/// Transcript line as the prompts show it.
#[derive(Serialize)]
struct Line<'a> {
    id: u32,
    start: String,
    text: &'a str,
}

fn lines(segments: &[Segment]) -> Vec<Line<'_>> {
    segments.iter().map(|s| Line { id: s.id, start: clock(s.start_ms), text: s.text.trim() }).collect()
}

/// Consecutive segments of at most about `chars` characters each.
fn chunks(segments: &[Segment], chars: usize) -> Vec<&[Segment]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, s) in segments.iter().enumerate() {
        if size > 0 && size + s.text.len() > chars {
            out.push(&segments[start..i]);
            start = i;
            size = 0;
        }
        size += s.text.len();
    }
    if start < segments.len() {
        out.push(&segments[start..]);
    }
    out
}

/// Items of all chunks, checked.
#[derive(Default)]
struct Notes {
    decisions: Vec<CitedItem>,
    action_items: Vec<ActionItem>,
    key_points: Vec<CitedItem>,
}

fn check_extraction(extraction: Extraction, chunk: &[Segment], notes: &mut Notes) {
    let point = |p: Point| {
        let text = p.text.trim().to_string();
        cite(&text, None, p.line, chunk).map(|(id, verified)| CitedItem { text, segment_ids: vec![id], citation_verified: verified })
    };
    notes.decisions.extend(extraction.decisions.into_iter().filter_map(point));
    notes.key_points.extend(extraction.key_points.into_iter().filter_map(point));
    for a in extraction.action_items {
        let (owner, task) = (a.owner.trim().to_string(), a.task.trim().to_string());
        let owner_ref = (!owner.is_empty()).then_some(owner.as_str());
        let Some((id, verified)) = cite(&task, owner_ref, a.line, chunk) else {
            tracing::info!(owner, task, "action item dropped: no segment holds its owner and task");
            continue;
        };
        let cited = chunk.iter().find(|s| s.id == id).map_or("", |s| s.text.as_str());
        let due = a.due.trim();
        let due = if !due.is_empty() && support(&content_words(due), cited) >= 1.0 { due.to_string() } else { String::new() };
        notes.action_items.push(ActionItem { item: Some(CitedItem { text: task, segment_ids: vec![id], citation_verified: verified }), owner, due });
    }
}

/// Merges the chunks' notes: duplicates removed, and decisions that restate an action item
/// left to the action item (it carries the owner).
fn merge(notes: Notes) -> Notes {
    let mut actions: Vec<ActionItem> = Vec::new();
    for a in notes.action_items {
        let words = content_words(&a.item.as_ref().map_or(String::new(), |i| i.text.clone()));
        let duplicate = actions.iter().any(|b| b.owner == a.owner && jaccard(&content_words(&b.item.as_ref().unwrap().text), &words) >= 0.6);
        if !duplicate {
            actions.push(a);
        }
    }
    let action_words: Vec<HashSet<String>> = actions.iter().map(|a| content_words(&a.item.as_ref().unwrap().text)).collect();
    let not_an_action = |d: &CitedItem| {
        let w = content_words(&d.text);
        !action_words.iter().any(|a| jaccard(a, &w) >= 0.6)
    };
    let decisions: Vec<CitedItem> = dedupe(notes.decisions).into_iter().filter(not_an_action).collect();
    let decision_words: Vec<HashSet<String>> = decisions.iter().map(|d| content_words(&d.text)).collect();
    let key_points = dedupe(notes.key_points)
        .into_iter()
        .filter(not_an_action)
        .filter(|p| {
            let w = content_words(&p.text);
            !decision_words.iter().any(|d| jaccard(d, &w) >= 0.6)
        })
        .collect();
    Notes { decisions, action_items: actions, key_points }
}

impl Flows {
    /// Runs SummarizeMeeting: `audio` yields the uploaded chunks in order; events (progress,
    /// segments) go to `events`; returns the stored summary (the caller sends it last).
    pub async fn summarize_meeting(
        &self,
        config: MeetingConfig,
        audio: mpsc::Receiver<Vec<u8>>,
        deadline: Deadline,
        events: &Events,
    ) -> Result<MeetingSummary, GatewayError> {
        let prompt_version = self.prompts.resolve(&config.prompt_version).map_err(|e| GatewayError::Invalid(e.to_string()))?.to_string();
        let title = if config.title.trim().is_empty() { "Meeting".to_string() } else { config.title.trim().to_string() };
        let mut timings = Vec::new();
        let mut models: Vec<ModelInfo> = Vec::new();

        // 1. Transcribe, forwarding segments and progress as they come.
        let started = std::time::Instant::now();
        let transcription = TranscribeConfig { formats: vec![], ..config.transcription.unwrap_or_default() };
        let requests = tokio_stream::once(TranscribeRequest { payload: Some(transcribe_request::Payload::Config(transcription)) }).chain(
            ReceiverStream::new(audio).map(|chunk| TranscribeRequest { payload: Some(transcribe_request::Payload::AudioChunk(chunk)) }),
        );
        let mut request = tonic::Request::new(requests);
        request.set_timeout(deadline.remaining());
        // Not retried: the upload is consumed as it streams.
        let mut stream = SpeechServiceClient::new(self.speech.channel())
            .transcribe(request)
            .await
            .map_err(|s| failure("transcribe", &self.speech, s))?
            .into_inner();
        let mut segments: Vec<Segment> = Vec::new();
        let mut result = None;
        while let Some(message) = stream.message().await.map_err(|s| failure("transcribe", &self.speech, s))? {
            match message.event {
                Some(transcribe_response::Event::Segment(s)) => {
                    segments.push(s.clone());
                    send(events, Event::Segment(s)).await?;
                }
                Some(transcribe_response::Event::Progress(p)) => {
                    send(events, progress("transcribe", p.done_units, p.total_units, &p.unit, p.fraction_done * 0.6, p.message)).await?;
                }
                Some(transcribe_response::Event::Result(r)) => result = Some(r),
                None => {}
            }
        }
        let result = result.ok_or_else(|| failure("transcribe", &self.speech, Status::internal("transcription ended without a result")))?;
        models.extend(result.model.clone());
        timings.push(timing("transcribe", started));
        segments.retain(|s| !s.text.trim().is_empty());

        // 2. Extract, chunk by chunk.
        let started = std::time::Instant::now();
        let parts = chunks(&segments, self.meeting.chunk_chars);
        let mut notes = Notes::default();
        let mut textgen_model = None;
        for (i, chunk) in parts.iter().enumerate() {
            let names = candidate_names(chunk);
            let ids: Vec<u32> = chunk.iter().map(|s| s.id).collect();
            let vars = serde_json::json!({ "title": title, "segments": lines(chunk), "names": names });
            let prompt = self.prompts.render(&prompt_version, "extract", &vars).map_err(|e| GatewayError::Invalid(e.to_string()))?;
            let schema = extraction_schema(&ids, &names);
            let (text, model, _) = self.chat("extract", &prompt, Some(&schema), self.meeting.extract_max_tokens, deadline).await?;
            textgen_model = textgen_model.or(model);
            match serde_json::from_str::<Extraction>(&text) {
                Ok(extraction) => {
                    tracing::debug!(chunk = i, ?extraction, "extracted");
                    check_extraction(extraction, chunk, &mut notes);
                }
                // Constrained output only fails to parse when cut by max_tokens.
                Err(e) => tracing::warn!(chunk = i, error = %e, text, "extraction not parseable; chunk skipped"),
            }
            let fraction = 0.6 + 0.3 * (i + 1) as f64 / parts.len() as f64;
            send(events, progress("extract", (i + 1) as u64, parts.len() as u64, "chunks", fraction, format!("chunk {} of {}", i + 1, parts.len()))).await?;
        }
        timings.push(timing("extract", started));
        let started = std::time::Instant::now();
        let notes = merge(notes);
        timings.push(timing("merge", started));

        // 3. Prose summary from the checked notes.
        let started = std::time::Instant::now();
        send(events, progress("summarize", 0, 1, "chunks", 0.92, "writing the summary".into())).await?;
        let summary = if notes.decisions.is_empty() && notes.action_items.is_empty() && notes.key_points.is_empty() {
            if segments.is_empty() { "The recording has no speech.".to_string() } else { "No decisions, action items or main points were found.".to_string() }
        } else {
            let vars = serde_json::json!({
                "title": title,
                "decisions": notes.decisions.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
                "key_points": notes.key_points.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
                "action_items": notes.action_items.iter().map(|a| serde_json::json!({"owner": a.owner, "task": a.item.as_ref().map_or("", |i| i.text.as_str()), "due": a.due})).collect::<Vec<_>>(),
            });
            let prompt = self.prompts.render(&prompt_version, "summary", &vars).map_err(|e| GatewayError::Invalid(e.to_string()))?;
            let (text, model, _) = self.chat("summarize", &prompt, None, 120, deadline).await?;
            textgen_model = textgen_model.or(model);
            text.trim().to_string()
        };
        models.extend(textgen_model);
        timings.push(timing("summarize", started));

        // 4. Segment embeddings for AskMeeting, then store.
        send(events, progress("embed", 0, segments.len() as u64, "segments", 0.95, "embedding the transcript".into())).await?;
        let texts: Vec<String> = segments.iter().map(|s| s.text.trim().to_string()).collect();
        let (vectors, space, embed_timing) = self.embed_texts("embed_segments", &texts, deadline).await?;
        timings.push(embed_timing);
        let space = match space {
            Some(space) => space,
            // No speech: nothing embedded; record the space the embed service would use.
            None => self.embed_texts("embed_segments", &["-".to_string()], deadline).await?.1.expect("one batch embedded"),
        };
        let created_at_unix_ms = super::images::now_unix_ms();
        let mut hash = Sha256::new();
        hash.update(title.as_bytes());
        hash.update(created_at_unix_ms.to_le_bytes());
        hash.update(result.text.as_bytes());
        let meeting_id = format!("mtg-{}", &hex::encode(hash.finalize())[..20]);
        let summary = MeetingSummary {
            meeting_id: meeting_id.clone(),
            summary,
            key_points: notes.key_points,
            decisions: notes.decisions,
            action_items: notes.action_items,
            prompt_version,
            models,
            timings,
        };
        let meeting = Meeting {
            meeting_id,
            title,
            language: result.language.clone(),
            audio_duration_ms: result.audio_duration_ms,
            segments,
            summary: Some(summary.clone()),
            created_at_unix_ms,
        };
        self.meetings.put(&meeting, &vectors, &space).await?;
        metrics::counter!("mmc_gateway_meetings_total").increment(1);
        Ok(summary)
    }

    /// Answers `question` from the stored meeting's transcript only.
    pub async fn ask_meeting(&self, meeting_id: &str, question: &str, top_k: usize, deadline: Deadline) -> Result<AskMeetingResponse, GatewayError> {
        let stored = self.meetings.get(meeting_id).await?.ok_or_else(|| GatewayError::NotFound(format!("no meeting with id {meeting_id:?}")))?;
        let (query, _) = self.embed_text("embed_query", question, deadline).await?;
        if query.space != stored.space {
            return Err(crate::store::StoreError::SpaceMismatch { stored: stored.space, offered: query.space }.into());
        }
        let segments = &stored.meeting.segments;
        let mut scored: Vec<(f32, usize)> = stored
            .vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(&query.vector).map(|(a, b)| a * b).sum::<f32>(), i))
            .filter(|(score, _)| *score >= self.meeting.min_relevance)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(top_k);
        let not_answerable = || AskMeetingResponse { answer: NOT_IN_MEETING.into(), citations: vec![], answerable: false };
        if scored.is_empty() {
            return Ok(not_answerable());
        }
        // Chronological order reads better to the model than score order.
        let mut retrieved: Vec<&Segment> = scored.iter().map(|(_, i)| &segments[*i]).collect();
        retrieved.sort_by_key(|s| s.id);
        let ids: Vec<u32> = retrieved.iter().map(|s| s.id).collect();
        let owned: Vec<Segment> = retrieved.iter().map(|s| (*s).clone()).collect();
        let title = stored.meeting.title.clone();
        let version = stored.meeting.summary.as_ref().map_or("", |s| s.prompt_version.as_str());
        let version = self.prompts.resolve(version).or_else(|_| self.prompts.resolve("")).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let vars = serde_json::json!({ "title": title, "question": question, "segments": lines(&owned) });
        let prompt = self.prompts.render(version, "answer", &vars).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "answerable": {"type": "boolean"},
                "answer": {"type": "string", "minLength": 1, "maxLength": 150},
                "lines": {"type": "array", "items": {"enum": ids}, "minItems": 1, "maxItems": 3}
            },
            "required": ["answerable", "answer", "lines"], "additionalProperties": false,
            "x-guidance": {"whitespace_flexible": false}
        })
        .to_string();
        let (text, _, _) = self.chat("answer", &prompt, Some(&schema), 120, deadline).await?;
        #[derive(Deserialize)]
        struct Answer {
            answerable: bool,
            answer: String,
            lines: Vec<u32>,
        }
        let Ok(answer) = serde_json::from_str::<Answer>(&text) else {
            tracing::warn!(text, "answer not parseable");
            return Ok(not_answerable());
        };
        let cited: Vec<&Segment> = answer.lines.iter().filter_map(|id| owned.iter().find(|s| s.id == *id)).collect();
        let cited_text = cited.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
        let grounded = support(&content_words(&answer.answer), &cited_text) >= 0.5;
        if !answer.answerable || cited.is_empty() || !grounded {
            tracing::info!(answerable = answer.answerable, grounded, answer = answer.answer, "answer withheld");
            return Ok(not_answerable());
        }
        let mut citations: Vec<Citation> = Vec::new();
        for s in cited {
            if !citations.iter().any(|c| c.segment_id == s.id) {
                citations.push(Citation { segment_id: s.id, start_ms: s.start_ms, end_ms: s.end_ms, text: s.text.trim().to_string() });
            }
        }
        Ok(AskMeetingResponse { answer: answer.answer.trim().to_string(), citations, answerable: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u32, text: &str) -> Segment {
        Segment { id, text: text.into(), start_ms: i64::from(id) * 1000, end_ms: i64::from(id) * 1000 + 900, ..Default::default() }
    }

    #[test]
    fn names_are_capitalised_non_function_words() {
        let s = [seg(0, " We decided to move the launch to March."), seg(1, " Anna will update the plan by Friday."), seg(2, "Thank you, David.")];
        assert_eq!(candidate_names(&s), ["Anna", "David"]);
    }

    #[test]
    fn citations_are_checked_and_moved_to_the_segment_that_holds_the_item() {
        let chunk = [seg(0, "Good morning everyone."), seg(1, "Anna will update the project plan by Friday."), seg(2, "David will write the job description.")];
        assert_eq!(cite("update the project plan", Some("Anna"), 1, &chunk), Some((1, true)));
        // Wrong line cited: the segment that holds owner and task is cited instead.
        assert_eq!(cite("update the project plan", Some("Anna"), 0, &chunk), Some((1, true)));
        // Owner not named with that task anywhere: dropped.
        assert_eq!(cite("update the project plan", Some("David"), 1, &chunk), None);
        // A point nothing supports is kept, flagged.
        assert_eq!(cite("the budget doubled", None, 2, &chunk), Some((2, false)));
    }

    #[test]
    fn merge_removes_duplicates_and_decisions_that_restate_actions() {
        let item = |t: &str, id| CitedItem { text: t.into(), segment_ids: vec![id], citation_verified: true };
        let notes = Notes {
            decisions: vec![item("Move the product launch to March", 1), item("move the launch of the product to March", 4), item("Anna will update the project plan", 2)],
            action_items: vec![ActionItem { item: Some(item("update the project plan", 2)), owner: "Anna".into(), due: String::new() }],
            key_points: vec![item("Move the product launch to March", 1), item("Budget for the website", 0)],
        };
        let merged = merge(notes);
        assert_eq!(merged.decisions.len(), 1);
        assert_eq!(merged.decisions[0].segment_ids, [1, 4]);
        assert_eq!(merged.key_points.len(), 1);
        assert_eq!(merged.key_points[0].text, "Budget for the website");
    }

    #[test]
    fn chunks_respect_the_budget_and_keep_every_segment() {
        let s: Vec<Segment> = (0..10).map(|i| seg(i, "twenty characters...")).collect();
        let parts = chunks(&s, 60);
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 10);
        assert!(parts.iter().all(|p| p.len() <= 3));
    }
}
