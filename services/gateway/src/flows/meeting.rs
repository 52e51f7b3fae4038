//! Meeting flows. SummarizeMeeting: audio upload -> `speech.Transcribe` (segments streamed
//! back as they come) -> segments embedded (`embed.EmbedText`) -> each segment labelled
//! decision / action item / key point / other by its nearest example lines (the prompt
//! version's `labels.toml`) -> for each action item, owner and due date extracted with
//! JSON-schema-constrained generation (`textgen.Chat`) from a window of that segment and
//! the one before it -> merge and de-duplicate -> prose summary (checked, with a template
//! fallback) -> stored. AskMeeting: question -> the meeting's most similar segments ->
//! answer from them only, with citations, or "the meeting does not say".
//!
//! Why this split, measured on the bundled SmolLM2-135M: asked for whole-passage notes it
//! merged lines, gave tasks to the wrong person and invented task names; asked to label one
//! line at a time (kind constrained to an enum), it gave every line the same label under
//! three prompt variants. Sentence embeddings separate "we decided to ..." from "Tom will
//! ..." from "good morning" well, and the model is reliable at the narrow, constrained
//! question it is left with: of the people this line names, who does the task, and when.
//! Notes are extractive (the transcript's own sentence), so every item cites the segment
//! it came from. Grounding is still checked, not assumed:
//! - an owner must be a person the line itself names (the schema allows only those), and
//!   is dropped if the line does not contain it;
//! - a due date is kept only when its words are in the line;
//! - the prose summary must use the notes' words, else a template from the notes is used;
//! - an answer must cite retrieved segments that contain its content words.

use std::collections::{BTreeSet, HashSet};

use mmc_proto::{
    common::v1::{ModelInfo, Progress, StageTiming},
    gateway::v1::{
        summarize_meeting_response::Event, ActionItem, AskMeetingResponse, Citation, CitedItem, Meeting, MeetingConfig,
        MeetingSummary, SummarizeMeetingResponse,
    },
    speech::v1::{transcribe_response, Segment, TranscribeConfig},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Status;

use super::Flows;
use crate::{
    error::GatewayError,
    store::{dot, Space},
    upstream::{failure, Deadline},
};

/// Answer given when the transcript does not answer a question.
pub const NOT_IN_MEETING: &str = "The meeting does not say.";

/// Retrieved passages scoring more than this below the best one are not shown to the model.
const RELEVANCE_MARGIN: f32 = 0.1;

/// Settings of the meeting flows.
#[derive(Clone, Debug)]
pub struct MeetingSettings {
    /// Extraction windows generated at once (the text-generation service interleaves them).
    pub extract_concurrency: usize,
    /// Most tokens one extraction may generate.
    pub extract_max_tokens: u32,
    /// A segment whose nearest example line is less similar than this is labelled "other".
    pub min_label_similarity: f32,
    /// Segments scoring below this cosine with a question are not used to answer it.
    pub min_relevance: f32,
}

impl Default for MeetingSettings {
    fn default() -> Self {
        Self { extract_concurrency: 4, extract_max_tokens: 48, min_label_similarity: 0.3, min_relevance: 0.3 }
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
    crate::upstream::timing(stage, started.elapsed())
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

/// What a transcript line is.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Kind {
    Decision,
    ActionItem,
    KeyPoint,
    Other,
}

/// What the model extracts from an action item line.
#[derive(Debug, Default, Deserialize)]
struct ActionFields {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    due: String,
}

/// Labels a segment by the 3 example lines most similar to it (similarities summed per
/// kind); `Other` when even the nearest is below `min_similarity`.
fn label(vector: &[f32], examples: &[(Kind, Vec<f32>)], min_similarity: f32) -> Kind {
    let mut scored: Vec<(f32, Kind)> = examples.iter().map(|(k, v)| (dot(v, vector), *k)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    if scored.first().is_none_or(|(s, _)| *s < min_similarity) {
        return Kind::Other;
    }
    let mut votes: Vec<(Kind, f32)> = Vec::new();
    for (score, kind) in scored.into_iter().take(3) {
        match votes.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => *total += score,
            None => votes.push((kind, score)),
        }
    }
    votes.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)).map_or(Kind::Other, |(k, _)| k)
}

/// The JSON schema of an action item's fields: the owner among the people the line names
/// (or none), then the due date.
fn action_schema(names: &[String]) -> String {
    let mut owners: Vec<&str> = vec![""];
    owners.extend(names.iter().map(String::as_str));
    // Written out rather than built with `json!`: the constrained decoder emits properties
    // in schema order, and serde_json's map would sort the keys ("due" before "owner").
    format!(
        r#"{{"type": "object", "properties": {{"owner": {{"enum": {}}}, "due": {{"type": "string", "maxLength": 24}}}}, "required": ["owner", "due"], "additionalProperties": false, "x-guidance": {{"whitespace_flexible": false}}}}"#,
        serde_json::to_string(&owners).expect("strings serialize")
    )
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

/// Items of all lines, checked.
#[derive(Default)]
struct Notes {
    decisions: Vec<CitedItem>,
    action_items: Vec<ActionItem>,
    key_points: Vec<CitedItem>,
}

/// Adds `segment`, of kind `kind` (with `fields` for an action item), to `notes`, after
/// the grounding checks.
fn note(kind: Kind, fields: ActionFields, segment: &Segment, notes: &mut Notes) {
    let text = segment.text.trim().to_string();
    let item = CitedItem { text, segment_ids: vec![segment.id], citation_verified: true };
    match kind {
        Kind::Decision => notes.decisions.push(item),
        Kind::KeyPoint => notes.key_points.push(item),
        Kind::Other => {}
        Kind::ActionItem => {
            let owner = fields.owner.trim();
            let owner = if !owner.is_empty() && contains_word(&segment.text, owner) { owner.to_string() } else { String::new() };
            let due = fields.due.trim();
            let due = if !due.is_empty() && support(&content_words(due), &segment.text) >= 1.0 { due.to_string() } else { String::new() };
            notes.action_items.push(ActionItem { item: Some(item), owner, due });
        }
    }
}

/// Whether a generated summary may be shown: prose (no headings or lists, not the prompt
/// echoed back) in which every sentence restates one note: at least 75% of the sentence's
/// content words are in a single note, so notes are not blended into new claims
/// ("David will write ... for Sarah on Friday").
fn summary_is_grounded(summary: &str, notes: &[String]) -> bool {
    if summary.is_empty() || summary.len() > 600 || summary.contains('\n') || summary.contains(':') || summary.trim_start().starts_with('-') {
        return false;
    }
    let sentences: Vec<&str> = summary.split(['.', '!', '?']).map(str::trim).filter(|s| !s.is_empty()).collect();
    !sentences.is_empty()
        && sentences.iter().all(|sentence| {
            let words = content_words(sentence);
            !words.is_empty() && notes.iter().any(|n| support(&words, n) >= 0.75)
        })
}

/// The summary built from the notes when the model's is not usable.
fn template_summary(notes: &Notes) -> String {
    let mut parts = Vec::new();
    if !notes.decisions.is_empty() {
        parts.push(format!("Decisions: {}", notes.decisions.iter().map(|d| d.text.trim_end_matches('.')).collect::<Vec<_>>().join("; ")));
    }
    if !notes.action_items.is_empty() {
        let items: Vec<String> = notes.action_items.iter().map(|a| a.item.as_ref().map_or("", |i| i.text.trim_end_matches('.')).to_string()).collect();
        parts.push(format!("Action items: {}", items.join("; ")));
    }
    if parts.is_empty() && !notes.key_points.is_empty() {
        parts.push(format!("Discussed: {}", notes.key_points.iter().map(|d| d.text.trim_end_matches('.')).collect::<Vec<_>>().join("; ")));
    }
    parts.join(". ") + "."
}

/// Merges the notes: duplicates removed, and decisions that restate an action item
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

/// The embedded example lines of each prompt version, with the space they were embedded
/// in: computed on a version's first meeting, not on every one.
#[derive(Default)]
pub struct ExampleCache(tokio::sync::Mutex<std::collections::HashMap<String, (Space, LabelledVectors)>>);

/// Example-line vectors with the kind of their line.
type LabelledVectors = std::sync::Arc<Vec<(Kind, Vec<f32>)>>;

impl Flows {
    /// The example lines of `version` as vectors of the segments' space (`space`; `None`
    /// when the meeting has no segment). Embedded again when the embed model changed.
    async fn example_vectors(&self, version: &str, space: Option<Space>, deadline: Deadline) -> Result<(Space, LabelledVectors), GatewayError> {
        let mut cache = self.example_cache.0.lock().await;
        if let Some((cached, examples)) = cache.get(version) {
            if space.as_ref().is_none_or(|s| s == cached) {
                return Ok((cached.clone(), examples.clone()));
            }
        }
        let examples = self.prompts.line_examples(version).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let example_kinds: Vec<(Kind, &String)> = [
            (Kind::Decision, &examples.decision),
            (Kind::ActionItem, &examples.action_item),
            (Kind::KeyPoint, &examples.key_point),
            (Kind::Other, &examples.other),
        ]
        .into_iter()
        .flat_map(|(k, lines)| lines.iter().map(move |l| (k, l)))
        .collect();
        let example_texts: Vec<String> = example_kinds.iter().map(|(_, l)| (*l).clone()).collect();
        let (example_vectors, example_space, _) = self.embed_texts("embed_examples", &example_texts, deadline).await?;
        let Some(example_space) = example_space else {
            return Err(GatewayError::Invalid(format!("prompt version {version} has no example lines in labels.toml")));
        };
        let vectors = std::sync::Arc::new(example_kinds.iter().map(|(k, _)| *k).zip(example_vectors).collect::<Vec<_>>());
        cache.insert(version.to_string(), (example_space.clone(), vectors.clone()));
        Ok((space.unwrap_or(example_space), vectors))
    }

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
        let mut stream = self.transcribe(transcription, audio, deadline).await?;
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

        // 2. Embed the segments (kept for AskMeeting) and the version's example lines, and
        //    label each segment by its nearest examples.
        send(events, progress("embed", 0, segments.len() as u64, "segments", 0.62, "embedding the transcript".into())).await?;
        let texts: Vec<String> = segments.iter().map(|s| s.text.trim().to_string()).collect();
        let (vectors, space, embed_timing) = self.embed_texts("embed_segments", &texts, deadline).await?;
        timings.push(embed_timing);
        let started = std::time::Instant::now();
        let (space, examples) = self.example_vectors(&prompt_version, space, deadline).await?;
        let kinds: Vec<Kind> = vectors.iter().map(|v| label(v, &examples, self.meeting.min_label_similarity)).collect();

        // 3. Owner and due date of each action item: one constrained generation per item,
        //    a few at a time, over the item and the segment before it.
        type Fields<'a> = futures::future::BoxFuture<'a, Result<(usize, String, Option<ModelInfo>), GatewayError>>;
        let mut requests: Vec<Fields<'_>> = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            if kinds[i] != Kind::ActionItem {
                continue;
            }
            let previous = i.checked_sub(1).map_or("", |p| segments[p].text.trim());
            let names = candidate_names(std::slice::from_ref(segment));
            let vars = serde_json::json!({ "title": title, "line": segment.text.trim(), "previous": previous, "names": names });
            let prompt = self.prompts.render(&prompt_version, "extract", &vars).map_err(|e| GatewayError::Invalid(e.to_string()))?;
            let schema = action_schema(&names);
            requests.push(Box::pin(async move {
                let (text, model, _) = self.chat("extract", &prompt, Some(&schema), self.meeting.extract_max_tokens, deadline).await?;
                Ok((i, text, model))
            }));
        }
        let total = requests.len();
        let mut fields: Vec<ActionFields> = (0..segments.len()).map(|_| ActionFields::default()).collect();
        let mut textgen_model = None;
        let mut extracted = futures::StreamExt::buffered(futures::stream::iter(requests), self.meeting.extract_concurrency.max(1));
        let mut done = 0;
        while let Some(result) = futures::StreamExt::next(&mut extracted).await {
            let (i, text, model) = result?;
            textgen_model = textgen_model.or(model);
            match serde_json::from_str::<ActionFields>(&text) {
                Ok(f) => fields[i] = f,
                // Constrained output only fails to parse when cut by max_tokens.
                Err(e) => tracing::warn!(segment = segments[i].id, error = %e, text, "action fields not parseable"),
            }
            done += 1;
            let fraction = 0.65 + 0.25 * done as f64 / total as f64;
            send(events, progress("extract", done as u64, total as u64, "action_items", fraction, format!("{done} of {total} action items"))).await?;
        }
        drop(extracted);
        let mut notes = Notes::default();
        for ((segment, kind), f) in segments.iter().zip(&kinds).zip(fields) {
            note(*kind, f, segment, &mut notes);
        }
        timings.push(timing("extract", started));
        let started = std::time::Instant::now();
        let notes = merge(notes);
        timings.push(timing("merge", started));

        // 4. Prose summary from the checked notes.
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
            // A JSON string field keeps the model writing prose rather than echoing the
            // prompt's headings.
            let schema = r#"{"type": "object", "properties": {"summary": {"type": "string", "minLength": 20, "maxLength": 400}}, "required": ["summary"], "additionalProperties": false, "x-guidance": {"whitespace_flexible": false}}"#;
            let (text, model, _) = self.chat("summarize", &prompt, Some(schema), 160, deadline).await?;
            textgen_model = textgen_model.or(model);
            let note_texts: Vec<String> = notes
                .decisions
                .iter()
                .chain(&notes.key_points)
                .chain(notes.action_items.iter().filter_map(|a| a.item.as_ref()))
                .map(|i| i.text.clone())
                .collect();
            #[derive(Deserialize)]
            struct Summary {
                summary: String,
            }
            let text = serde_json::from_str::<Summary>(&text).map(|s| s.summary.trim().to_string()).unwrap_or_default();
            if summary_is_grounded(&text, &note_texts) {
                text
            } else {
                tracing::info!(summary = text, "generated summary not grounded in the notes; template used");
                metrics::counter!("mmc_gateway_summary_fallbacks_total").increment(1);
                template_summary(&notes)
            }
        };
        models.extend(textgen_model);
        timings.push(timing("summarize", started));

        // 5. Store.
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
            .map(|(i, v)| (dot(v, &query.vector), i))
            .filter(|(score, _)| *score >= self.meeting.min_relevance)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(top_k);
        let not_answerable = || AskMeetingResponse { answer: NOT_IN_MEETING.into(), citations: vec![], answerable: false };
        if scored.is_empty() {
            return Ok(not_answerable());
        }
        // Only passages close to the best one, most relevant first: a small model tends to
        // answer from whatever line it is shown, so weak matches are left out.
        let best = scored[0].0;
        scored.retain(|(score, _)| *score >= best - RELEVANCE_MARGIN);
        let retrieved: Vec<&Segment> = scored.iter().map(|(_, i)| &segments[*i]).collect();
        let ids: Vec<u32> = retrieved.iter().map(|s| s.id).collect();
        let owned: Vec<Segment> = retrieved.iter().map(|s| (*s).clone()).collect();
        let title = stored.meeting.title.clone();
        let version = stored.meeting.summary.as_ref().map_or("", |s| s.prompt_version.as_str());
        let version = self.prompts.resolve(version).or_else(|_| self.prompts.resolve("")).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let vars = serde_json::json!({ "title": title, "question": question, "segments": lines(&owned) });
        let prompt = self.prompts.render(version, "answer", &vars).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        // Property order matters (see `action_schema`): the answer, then its lines. There is
        // no "answerable" flag: measured, the small model set it at random; whether the
        // answer stands is decided below from the lines it cites.
        let schema = format!(
            r#"{{"type": "object", "properties": {{"answer": {{"type": "string", "minLength": 1, "maxLength": 150}}, "lines": {{"type": "array", "items": {{"enum": {}}}, "minItems": 1, "maxItems": 3}}}}, "required": ["answer", "lines"], "additionalProperties": false, "x-guidance": {{"whitespace_flexible": false}}}}"#,
            serde_json::to_string(&ids).expect("ids serialize")
        );
        let (text, _, _) = self.chat("answer", &prompt, Some(&schema), 120, deadline).await?;
        #[derive(Deserialize)]
        struct Answer {
            answer: String,
            lines: Vec<u32>,
        }
        let Ok(answer) = serde_json::from_str::<Answer>(&text) else {
            tracing::warn!(text, "answer not parseable");
            return Ok(not_answerable());
        };
        // A citation counts when its line holds the answer and is about the question (it is
        // the best match, or shares a content word with the question).
        let answer_words = content_words(&answer.answer);
        let question_words = content_words(question);
        let best_id = retrieved[0].id;
        let mut citations: Vec<Citation> = Vec::new();
        for s in answer.lines.iter().filter_map(|id| owned.iter().find(|s| s.id == *id)) {
            let on_topic = s.id == best_id || support(&question_words, &s.text) > 0.0;
            if on_topic && support(&answer_words, &s.text) >= 0.5 && !citations.iter().any(|c| c.segment_id == s.id) {
                citations.push(Citation { segment_id: s.id, start_ms: s.start_ms, end_ms: s.end_ms, text: s.text.trim().to_string() });
            }
        }
        if citations.is_empty() {
            tracing::info!(answer = answer.answer, lines = ?answer.lines, "answer withheld: not grounded in the retrieved lines");
            metrics::counter!("mmc_gateway_answers_withheld_total").increment(1);
            return Ok(not_answerable());
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
    fn action_owners_and_due_dates_must_be_in_the_line() {
        let line = seg(2, "Maria will call the hosting provider tomorrow.");
        let mut notes = Notes::default();
        note(Kind::ActionItem, ActionFields { owner: "Maria".into(), due: "tomorrow".into() }, &line, &mut notes);
        note(Kind::ActionItem, ActionFields { owner: "David".into(), due: "Friday".into() }, &line, &mut notes);
        assert_eq!((notes.action_items[0].owner.as_str(), notes.action_items[0].due.as_str()), ("Maria", "tomorrow"));
        assert_eq!((notes.action_items[1].owner.as_str(), notes.action_items[1].due.as_str()), ("", ""));
        assert_eq!(notes.action_items[0].item.as_ref().unwrap().segment_ids, [2]);
    }

    #[test]
    fn lines_take_the_kind_of_their_nearest_examples() {
        let examples = vec![(Kind::Decision, vec![1.0, 0.0]), (Kind::ActionItem, vec![0.0, 1.0]), (Kind::ActionItem, vec![0.6, 0.8])];
        assert_eq!(label(&[0.0, 1.0], &examples, 0.3), Kind::ActionItem);
        // Votes are summed: one decision at 0.6 loses to two action items at 0.8 + 1.0.
        assert_eq!(label(&[0.6, 0.8], &examples, 0.3), Kind::ActionItem);
        assert_eq!(label(&[1.0, 0.0], &examples, 0.3), Kind::Decision);
        assert_eq!(label(&[-1.0, 0.0], &examples, 0.3), Kind::Other);
    }

    #[test]
    fn summaries_must_be_prose_from_the_notes() {
        let notes = ["We decided to move the product launch to March.".to_string(), "Anna will update the project plan by Friday.".into(), "David will write the job description.".into()];
        assert!(summary_is_grounded("The team will move the product launch to March. Anna will update the project plan.", &notes));
        assert!(!summary_is_grounded("Meeting: Weekly planning. Decisions: move the launch.", &notes));
        assert!(!summary_is_grounded("The team celebrated a record quarter with cake.", &notes));
        // Two notes blended into a claim neither makes.
        assert!(!summary_is_grounded("David will write the job description for Anna by Friday.", &notes));
    }
}
