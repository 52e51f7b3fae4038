//! Meeting flows. SummarizeMeeting: audio upload -> `speech.Transcribe` (segments streamed
//! back as they come) -> segments embedded (`embed.EmbedText`, kept for AskMeeting) ->
//! the transcript cut into sentences, each classified by rules ([`notes`]): decision,
//! action item (owner, due), filler, or statement (a key point when its nearest example
//! lines, the prompt version's `labels.toml`, say so) -> owners matched to the
//! participants ([`people`]) -> the language model asked only where a line names two
//! possible owners -> merge and de-duplicate -> prose summary, checked by the fact checker
//! ([`facts`]), with a template fallback -> stored. AskMeeting ([`ask`]): question ->
//! lines that cover it and hold the kind of answer it wants -> the model's answer,
//! checked -> shown, or the best line quoted, or "The meeting does not say."
//!
//! Why structure first, measured on the bundled SmolLM2-135M: asked for whole-passage
//! notes it merged lines, gave tasks to the wrong person and invented task names; asked to
//! label one line at a time it gave every line the same label; asked questions it stated
//! amounts no line held, or echoed the question. A deciding verb, a name followed by "will",
//! a date phrase are reliable signals that need no model, and every item built from them
//! cites the line that holds them. The model is left what it is good at, phrasing, and
//! everything it writes is checked:
//! - an answer or summary sentence may hold no number, date or name its cited lines lack;
//! - an answer may not restate the question, and must hold what the question asks for;
//! - an owner is a participant or a name the transcript uses, and must be in the line;
//! - a due date is the line's own date phrase.

pub mod ask;
pub mod export;
pub mod facts;
pub mod language;
pub mod notes;
pub mod people;
pub mod review;
mod summary;

use std::collections::{HashMap, HashSet};

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use self::{
    notes::{Cue, Sentence},
    people::People,
    summary::SummaryJob,
};
use super::{limits::*, Flows};
use crate::{
    domain::{
        ActionItem, Answer, AnswerSource, AskRequest, Citation, CitedItem, Meeting, MeetingEvent, MeetingListing, MeetingPage, MeetingRequest,
        MeetingSummary, ModelRef, Progress, Segment, StageTiming, TranscribeOptions,
    },
    error::{shown, GatewayError},
    store::{dot, Space},
    upstream::{bad_answer, calls::TranscribeEvent, Deadline},
};

/// Answer given when the transcript does not answer a question.
pub const NOT_IN_MEETING: &str = "The meeting does not say.";

/// Settings of the meeting flows.
#[derive(Clone, Debug)]
pub struct MeetingSettings {
    /// Extraction windows generated at once (the text-generation service interleaves them).
    pub extract_concurrency: usize,
    /// Most tokens one extraction may generate.
    pub extract_max_tokens: u32,
    /// A segment whose nearest example line is less similar than this is labelled "other".
    pub min_label_similarity: f32,
    /// Segments scoring below this cosine with a question are not used to answer it (a
    /// loose floor: whether a line answers is decided by the words it shares, see `ask`).
    pub min_relevance: f32,
    /// A meeting whose notes span more than this is summarized window by window, then
    /// the window summaries together (map-reduce, see `summary`).
    pub summary_window_ms: i64,
    /// Most notes summarized in one call; a window with more is split.
    pub summary_window_notes: usize,
    /// The speech model meetings are transcribed with when the request names none (empty:
    /// the speech service picks by language). Whisper base hears English meetings better
    /// than tiny.en at a third of the speed (docs/gateway.md, evaluation).
    pub speech_model: String,
}

impl Default for MeetingSettings {
    fn default() -> Self {
        Self {
            extract_concurrency: 4,
            extract_max_tokens: 48,
            min_label_similarity: 0.3,
            min_relevance: 0.15,
            summary_window_ms: 10 * 60 * 1000,
            summary_window_notes: 16,
            speech_model: String::new(),
        }
    }
}

/// Where SummarizeMeeting's events go; a failed send means the client left.
pub type Events = mpsc::Sender<MeetingEvent>;

async fn send(events: &Events, event: MeetingEvent) -> Result<(), GatewayError> {
    events.send(event).await.map_err(|_| GatewayError::Cancelled)
}

fn progress(stage: &str, done: u64, total: u64, unit: &str, fraction: f64, message: String) -> MeetingEvent {
    MeetingEvent::Progress(Progress {
        stage: stage.into(),
        done_units: done,
        total_units: total,
        unit: unit.into(),
        fraction_done: fraction.clamp(0.0, 1.0),
        message,
    })
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
    "the", "and", "for", "that", "this", "with", "will", "shall", "would", "should", "could", "can", "are", "was", "were", "been", "have", "has",
    "had", "all", "our", "their", "they", "them", "you", "your", "his", "her", "she", "him", "its", "from", "into", "onto", "about", "also", "then",
    "than", "there", "here", "what", "which", "who", "whom", "when", "where", "why", "how", "not", "but", "any", "some", "more", "most", "very",
    "just", "let", "lets", "let's", "one", "two", "out", "off", "over", "under", "next", "new", "team", "meeting", "everyone", "agreed", "agree",
    "decided", "decide", "decision", "going", "need", "needs", "make", "made", "take", "took", "get", "got", "per", "via", "did", "does", "doing",
    "done",
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

/// What the model picks for an action item line that names several people.
#[derive(Debug, Default, Deserialize)]
struct ActionFields {
    #[serde(default)]
    owner: String,
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

/// The JSON schema of an action item's owner: one of the people the line names (or none).
/// The due date is not asked for: the line's own date phrase is ([`notes::due_phrase`]).
fn action_schema(names: &[String]) -> String {
    let mut owners: Vec<&str> = vec![""];
    owners.extend(names.iter().map(String::as_str));
    // Written out rather than built with `json!`: the constrained decoder emits properties
    // in schema order (see the answer schema).
    format!(
        r#"{{"type": "object", "properties": {{"owner": {{"enum": {}}}}}, "required": ["owner"], "additionalProperties": false, "x-guidance": {{"whitespace_flexible": false}}}}"#,
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

/// Items of all lines, checked.
#[derive(Default)]
struct Notes {
    decisions: Vec<CitedItem>,
    action_items: Vec<ActionItem>,
    key_points: Vec<CitedItem>,
}

/// The cited item of `sentence`.
fn cited(sentence: &Sentence) -> CitedItem {
    CitedItem { text: sentence.text.clone(), segment_ids: sentence.segment_ids.clone(), citation_verified: true, review: Default::default() }
}

/// The action item of `sentence`. The owner comes from [`notes::classify`] (a person the
/// line names, or a participant its subject sounds like) or is the model's pick among the
/// line's names; the due date must be the line's own phrase.
fn action_item(sentence: &Sentence, owner: Option<String>, due: Option<String>) -> ActionItem {
    let owner = owner.unwrap_or_default();
    let due = due.filter(|d| sentence.text.contains(d.as_str())).unwrap_or_default();
    ActionItem { item: cited(sentence), owner, due }
}

/// Merges the notes: duplicates removed, and decisions that restate an action item
/// left to the action item (it carries the owner).
fn merge(notes: Notes) -> Notes {
    let mut actions: Vec<ActionItem> = Vec::new();
    for a in notes.action_items {
        let words = content_words(&a.item.text);
        let duplicate = actions.iter().any(|b| b.owner == a.owner && jaccard(&content_words(&b.item.text), &words) >= 0.6);
        if !duplicate {
            actions.push(a);
        }
    }
    let action_words: Vec<HashSet<String>> = actions.iter().map(|a| content_words(&a.item.text)).collect();
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
        let (example_vectors, example_space, _) = self.upstream.embed_texts("embed_examples", &example_texts, deadline).await?;
        let Some(example_space) = example_space else {
            return Err(GatewayError::Invalid(format!("prompt version {version} has no example lines in labels.toml")));
        };
        let vectors = std::sync::Arc::new(example_kinds.iter().map(|(k, _)| *k).zip(example_vectors).collect::<Vec<_>>());
        cache.insert(version.to_string(), (example_space.clone(), vectors.clone()));
        Ok((space.unwrap_or(example_space), vectors))
    }

    /// Checks a SummarizeMeeting request before any audio is read (the edges call it
    /// before they accept the upload; [`Flows::summarize_meeting`] calls it again).
    pub fn check_meeting(&self, request: &MeetingRequest) -> Result<(), GatewayError> {
        if request.title.chars().count() > MAX_TITLE_CHARS {
            return Err(GatewayError::Invalid(format!("title is over {MAX_TITLE_CHARS} characters")));
        }
        self.prompts.resolve(&request.prompt_version).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        people::check_participants(&request.participants).map_err(GatewayError::Invalid)?;
        Ok(())
    }

    /// Runs SummarizeMeeting: `audio` yields the uploaded chunks in order; events (progress,
    /// segments) go to `events`; returns the stored summary (the caller sends it last).
    pub async fn summarize_meeting(
        &self,
        request: MeetingRequest,
        audio: mpsc::Receiver<Vec<u8>>,
        deadline: Deadline,
        events: &Events,
    ) -> Result<MeetingSummary, GatewayError> {
        self.check_meeting(&request)?;
        let prompt_version = self.prompts.resolve(&request.prompt_version).map_err(|e| GatewayError::Invalid(e.to_string()))?.to_string();
        let title = if request.title.trim().is_empty() { "Meeting".to_string() } else { request.title.trim().to_string() };
        let mut timings = Vec::new();
        let mut models: Vec<ModelRef> = Vec::new();

        // 1. Transcribe, forwarding segments and progress as they come.
        let started = std::time::Instant::now();
        let mut transcription = TranscribeOptions { formats: vec![], ..request.transcription };
        if transcription.model_id.is_empty() {
            transcription.model_id = self.meeting.speech_model.clone();
        }
        let stream = self.upstream.transcribe(&transcription, audio, deadline).await?;
        let mut stream = std::pin::pin!(stream);
        let mut segments: Vec<Segment> = Vec::new();
        let mut result = None;
        while let Some(event) = stream.next().await {
            match event? {
                TranscribeEvent::Segment(s) => {
                    segments.push(s.clone());
                    send(events, MeetingEvent::Segment(s)).await?;
                }
                TranscribeEvent::Progress { done_units, total_units, unit, fraction_done, message } => {
                    send(events, progress("transcribe", done_units, total_units, &unit, fraction_done * 0.6, message)).await?;
                }
                TranscribeEvent::Result(r) => result = Some(r),
            }
        }
        let result = result.ok_or_else(|| bad_answer("transcribe", &self.upstream.speech, "transcription ended without a result"))?;
        models.extend(result.model.clone());
        timings.push(timing("transcribe", started));
        segments.retain(|s| !s.text.trim().is_empty());

        // 2. Embed the segments (kept for AskMeeting) and the version's example lines, and
        //    label each segment by its nearest examples.
        send(events, progress("embed", 0, segments.len() as u64, "segments", 0.62, "embedding the transcript".into())).await?;
        let texts: Vec<String> = segments.iter().map(|s| s.text.trim().to_string()).collect();
        let (vectors, space, embed_timing) = self.upstream.embed_texts("embed_segments", &texts, deadline).await?;
        timings.push(embed_timing);
        let started = std::time::Instant::now();
        let (space, examples) = self.example_vectors(&prompt_version, space, deadline).await?;
        let kinds: Vec<Kind> = vectors.iter().map(|v| label(v, &examples, self.meeting.min_label_similarity)).collect();

        let kind_of: HashMap<u32, Kind> = segments.iter().zip(&kinds).map(|(s, k)| (s.id, *k)).collect();

        // 3. Structure first: each sentence classified by rules (decision, action item with
        //    owner and due, filler, statement); the model is asked only to pick the owner of
        //    a line that names two possible owners, among those names.
        let people = People::new(&request.participants, &segments);
        // The rules read English: a meeting in another language gets no notes (see `language`).
        let notes_supported = language::notes_supported(&result.language);
        let sentences = if notes_supported { notes::sentences(&segments) } else { Vec::new() };
        let cues: Vec<Cue> = sentences.iter().map(|s| notes::classify(&s.text, &people)).collect();
        type Fields<'a> = futures::future::BoxFuture<'a, Result<(usize, String, Option<ModelRef>), GatewayError>>;
        let mut requests: Vec<Fields<'_>> = Vec::new();
        for (i, (sentence, cue)) in sentences.iter().zip(&cues).enumerate() {
            let Cue::Action { candidates, .. } = cue else { continue };
            if candidates.len() < 2 {
                continue;
            }
            let previous = i.checked_sub(1).map_or("", |p| sentences[p].text.as_str());
            let vars = serde_json::json!({ "title": title, "line": sentence.text, "previous": previous, "names": candidates });
            let prompt = self.prompts.render(&prompt_version, "extract", &vars).map_err(|e| GatewayError::Invalid(e.to_string()))?;
            let schema = action_schema(candidates);
            requests.push(Box::pin(async move {
                let (text, model, _) = self.upstream.chat("extract", &prompt, Some(&schema), self.meeting.extract_max_tokens, deadline).await?;
                Ok((i, text, model))
            }));
        }
        let total = requests.len();
        send(events, progress("extract", 0, total as u64, "action_items", 0.65, format!("{} sentences classified", sentences.len()))).await?;
        let mut chosen: HashMap<usize, String> = HashMap::new();
        let mut textgen_model = None;
        let mut extracted = futures::StreamExt::buffered(futures::stream::iter(requests), self.meeting.extract_concurrency.max(1));
        let mut done = 0;
        while let Some(result) = futures::StreamExt::next(&mut extracted).await {
            let (i, text, model) = result?;
            textgen_model = textgen_model.or(model);
            match serde_json::from_str::<ActionFields>(&text) {
                Ok(f) if !f.owner.trim().is_empty() => {
                    chosen.insert(i, f.owner.trim().to_string());
                }
                Ok(_) => {}
                // Constrained output only fails to parse when cut by max_tokens.
                Err(e) => tracing::warn!(sentence = %sentences[i].text, error = %e, text, "action fields not parseable"),
            }
            done += 1;
            let fraction = 0.65 + 0.25 * done as f64 / total as f64;
            send(events, progress("extract", done as u64, total as u64, "action_items", fraction, format!("{done} of {total} owners"))).await?;
        }
        drop(extracted);
        let mut notes = Notes::default();
        for (i, (sentence, cue)) in sentences.iter().zip(cues).enumerate() {
            match cue {
                Cue::Decision => notes.decisions.push(cited(sentence)),
                Cue::Action { owner, candidates, due } => {
                    // The model's pick stands only if it is one of the names offered.
                    let owner = chosen.remove(&i).filter(|o| candidates.contains(o)).or(owner);
                    notes.action_items.push(action_item(sentence, owner, due));
                }
                Cue::Statement => {
                    let kind = sentence.segment_ids.first().and_then(|id| kind_of.get(id));
                    if matches!(kind, Some(Kind::KeyPoint | Kind::Decision)) {
                        notes.key_points.push(cited(sentence));
                    }
                }
                Cue::Filler => {}
            }
        }
        timings.push(timing("extract", started));
        let started = std::time::Instant::now();
        let notes = merge(notes);
        timings.push(timing("merge", started));

        // 4. Prose summary from the checked notes.
        let started = std::time::Instant::now();
        send(events, progress("summarize", 0, 1, "chunks", 0.92, "writing the summary".into())).await?;
        let summary = if notes.decisions.is_empty() && notes.action_items.is_empty() && notes.key_points.is_empty() {
            if segments.is_empty() {
                "The recording has no speech.".to_string()
            } else if !notes_supported {
                language::unsupported_summary(&result.language)
            } else {
                "No decisions, action items or main points were found.".to_string()
            }
        } else {
            let job = SummaryJob { title: &title, prompt_version: &prompt_version, people: &people, deadline, events };
            let (text, model) = self.write_summary(&job, &notes, &segments).await?;
            textgen_model = textgen_model.or(model);
            text
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
            language: result.language.clone(),
        };
        let meeting = Meeting {
            meeting_id,
            title,
            language: result.language.clone(),
            audio_duration_ms: result.audio_duration_ms,
            segments,
            summary: Some(summary.clone()),
            created_at_unix_ms,
            participants: people.participants().to_vec(),
            review: Default::default(),
        };
        self.meetings.put(&meeting, &vectors, &space).await?;
        metrics::counter!("mmc_gateway_meetings_total").increment(1);
        Ok(summary)
    }

    /// The stored meeting with this id.
    pub async fn get_meeting(&self, meeting_id: &str) -> Result<Meeting, GatewayError> {
        if meeting_id.is_empty() {
            return Err(GatewayError::Invalid("meeting_id is empty".into()));
        }
        let stored = self.meetings.get(meeting_id).await?;
        Ok(stored.ok_or_else(|| GatewayError::NotFound(format!("no meeting with id {}", shown(meeting_id))))?.meeting)
    }

    /// A page of the stored meetings, newest first.
    pub async fn list_meetings(&self, page_size: u32, page_token: &str) -> Result<MeetingPage, GatewayError> {
        let size = match page_size {
            0 => 50,
            n => n.min(crate::flows::limits::MAX_PAGE_SIZE),
        } as usize;
        let from = match page_token {
            "" => 0,
            token => token.parse::<usize>().map_err(|_| GatewayError::Invalid("page_token is not one this server issued".into()))?,
        };
        let all = self.meetings.list().await?;
        let meetings = all
            .iter()
            .skip(from)
            .take(size)
            .map(|m| MeetingListing {
                meeting_id: m.meeting_id.clone(),
                title: m.title.clone(),
                created_at_unix_ms: m.created_at_unix_ms,
                audio_duration_ms: m.audio_duration_ms,
                notes_reviewed: m.review.reviewed,
                decisions: m.summary.as_ref().map_or(0, |s| s.decisions.len() as u32),
                action_items: m.summary.as_ref().map_or(0, |s| s.action_items.len() as u32),
            })
            .collect();
        let next_page_token = if all.len() > from + size { (from + size).to_string() } else { String::new() };
        Ok(MeetingPage { meetings, next_page_token })
    }

    /// Deletes every stored meeting created before `cutoff_unix_ms` (the retention period;
    /// transcript, notes, history and vectors), and returns how many.
    pub async fn expire_meetings(&self, cutoff_unix_ms: i64) -> Result<usize, GatewayError> {
        let mut expired = 0;
        for m in self.meetings.list().await?.iter().filter(|m| m.created_at_unix_ms < cutoff_unix_ms) {
            if self.meetings.delete(&m.meeting_id).await? {
                expired += 1;
                tracing::info!(meeting_id = %m.meeting_id, created_at_unix_ms = m.created_at_unix_ms, "meeting past its retention period deleted");
            }
        }
        metrics::counter!("mmc_gateway_meetings_expired_total").increment(expired as u64);
        Ok(expired)
    }

    /// Deletes a stored meeting for good (NotFound when there is none).
    pub async fn delete_meeting(&self, meeting_id: &str) -> Result<(), GatewayError> {
        if meeting_id.is_empty() {
            return Err(GatewayError::Invalid("meeting_id is empty".into()));
        }
        if !self.meetings.delete(meeting_id).await? {
            return Err(GatewayError::NotFound(format!("no meeting with id {}", shown(meeting_id))));
        }
        metrics::counter!("mmc_gateway_meetings_deleted_total").increment(1);
        tracing::info!(meeting_id, "meeting deleted");
        Ok(())
    }

    /// Answers a question from the stored meeting's transcript only (see [`ask`]).
    pub async fn ask_meeting(&self, request: AskRequest, deadline: Deadline) -> Result<Answer, GatewayError> {
        let meeting_id = request.meeting_id.as_str();
        if meeting_id.is_empty() {
            return Err(GatewayError::Invalid("meeting_id is empty".into()));
        }
        let question = request.question.trim();
        if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
            return Err(GatewayError::Invalid(format!("question must be 1..={MAX_QUESTION_CHARS} characters")));
        }
        let top_k = match request.top_k {
            0 => 5,
            k if k > MAX_ASK_TOP_K => return Err(GatewayError::Invalid(format!("top_k {k} is over the limit of {MAX_ASK_TOP_K}"))),
            k => k as usize,
        };
        let stored =
            self.meetings.get(meeting_id).await?.ok_or_else(|| GatewayError::NotFound(format!("no meeting with id {}", shown(meeting_id))))?;
        let (query, _) = self.upstream.embed_text("embed_query", question, deadline).await?;
        if query.space != stored.space {
            return Err(crate::store::StoreError::SpaceMismatch { stored: stored.space, offered: query.space }.into());
        }
        let meeting = &stored.meeting;
        let segments = &meeting.segments;
        let people = People::new(&meeting.participants, segments);
        let expect = ask::expect(question);
        // Retrieval over sentences (a segment may hold several, and a sentence may run over
        // two); a sentence scores its best segment's similarity and cites all of them.
        let sentences = notes::sentences(segments);
        let index_of: HashMap<u32, usize> = segments.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let segment_similarity: Vec<f32> = stored.vectors.iter().map(|v| dot(v, &query.vector)).collect();
        let similarities: Vec<f32> = sentences
            .iter()
            .map(|s| s.segment_ids.iter().filter_map(|id| index_of.get(id)).map(|i| segment_similarity[*i]).fold(f32::MIN, f32::max))
            .collect();
        let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
        // The notes' owner of each sentence that is an action item.
        let action_items = meeting.summary.as_ref().map_or(&[][..], |s| &s.action_items[..]);
        let owners: Vec<Option<String>> =
            sentences.iter().map(|s| action_items.iter().find(|a| a.item.text == s.text && !a.owner.is_empty()).map(|a| a.owner.clone())).collect();
        let retrievable: Vec<ask::Line<'_>> = texts
            .iter()
            .zip(&owners)
            .zip(&similarities)
            .map(|((text, owner), similarity)| ask::Line { text, owner: owner.as_deref(), similarity: *similarity })
            .collect();
        let mut found = ask::candidates(question, &expect, &retrievable, &meeting.title, &people, self.meeting.min_relevance);
        found.truncate(top_k.clamp(1, 3));
        let answered = |source: AnswerSource| {
            metrics::counter!("mmc_gateway_answers_total", "source" => source.as_str()).increment(1);
        };
        let Some(best) = found.first().cloned() else {
            answered(AnswerSource::None);
            return Ok(Answer {
                answer: NOT_IN_MEETING.into(),
                citations: vec![],
                answerable: false,
                source: AnswerSource::None,
                withheld_reason: String::new(),
            });
        };
        let citations = |i: usize| -> Vec<Citation> {
            sentences[i]
                .segment_ids
                .iter()
                .filter_map(|id| index_of.get(id))
                .map(|j| {
                    let s = &segments[*j];
                    Citation { segment_id: s.id, start_ms: s.start_ms, end_ms: s.end_ms, text: s.text.trim().to_string() }
                })
                .collect()
        };
        // The model sees the candidate sentences, numbered by their position.
        let shown: Vec<Line<'_>> = found
            .iter()
            .map(|c| {
                let start = sentences[c.index].segment_ids.first().and_then(|id| index_of.get(id)).map_or(0, |j| segments[*j].start_ms);
                Line { id: c.index as u32, start: clock(start), text: texts[c.index] }
            })
            .collect();
        let ids: Vec<u32> = shown.iter().map(|l| l.id).collect();
        let version = meeting.summary.as_ref().map_or("", |s| s.prompt_version.as_str());
        let version = self.prompts.resolve(version).or_else(|_| self.prompts.resolve("")).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let vars = serde_json::json!({ "title": meeting.title, "question": question, "segments": shown });
        let prompt = self.prompts.render(version, "answer", &vars).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        // Property order matters (see `action_schema`): the answer, then its lines. There is
        // no "answerable" flag: measured, the small model set it at random; whether the
        // answer stands is decided by the checks.
        let schema = format!(
            r#"{{"type": "object", "properties": {{"answer": {{"type": "string", "minLength": 1, "maxLength": 150}}, "lines": {{"type": "array", "items": {{"enum": {}}}, "minItems": 1, "maxItems": 3}}}}, "required": ["answer", "lines"], "additionalProperties": false, "x-guidance": {{"whitespace_flexible": false}}}}"#,
            serde_json::to_string(&ids).expect("ids serialize")
        );
        let (text, _, _) = self.upstream.chat("answer", &prompt, Some(&schema), 120, deadline).await?;
        #[derive(Deserialize)]
        struct ModelAnswer {
            answer: String,
            lines: Vec<u32>,
        }
        let checked = match serde_json::from_str::<ModelAnswer>(&text) {
            Ok(answer) => {
                let cited: Vec<usize> = found.iter().map(|c| c.index).filter(|i| answer.lines.contains(&(*i as u32))).collect();
                let cited_texts: Vec<&str> = cited.iter().map(|i| texts[*i]).collect();
                let owner = cited.first().and_then(|i| owners[*i].as_deref());
                let text = ask::canonical_names(answer.answer.trim(), &people);
                ask::check_answer(&text, &cited_texts, question, &expect, &people, owner).map(|()| (text, cited))
            }
            Err(_) => {
                tracing::warn!(text, "answer not parseable");
                Err(ask::Rejection::NoCitation)
            }
        };
        match checked {
            Ok((text, cited)) => {
                answered(AnswerSource::Model);
                let citations = cited.into_iter().flat_map(citations).collect();
                Ok(Answer { answer: text, citations, answerable: true, source: AnswerSource::Model, withheld_reason: String::new() })
            }
            Err(rejection) => {
                tracing::info!(question, reason = %rejection, "model answer withheld; the best line is quoted");
                metrics::counter!("mmc_gateway_answers_withheld_total", "reason" => rejection.label()).increment(1);
                answered(AnswerSource::Extractive);
                Ok(Answer {
                    answer: ask::quote(texts[best.index], &expect, question, &people, owners[best.index].as_deref()),
                    citations: citations(best.index),
                    answerable: true,
                    source: AnswerSource::Extractive,
                    withheld_reason: rejection.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{summary::summary_is_grounded, *};

    #[test]
    fn merge_removes_duplicates_and_decisions_that_restate_actions() {
        let item = |t: &str, id| CitedItem { text: t.into(), segment_ids: vec![id], citation_verified: true, ..Default::default() };
        let notes = Notes {
            decisions: vec![
                item("Move the product launch to March", 1),
                item("move the launch of the product to March", 4),
                item("Anna will update the project plan", 2),
            ],
            action_items: vec![ActionItem { item: item("update the project plan", 2), owner: "Anna".into(), due: String::new() }],
            key_points: vec![item("Move the product launch to March", 1), item("Budget for the website", 0)],
        };
        let merged = merge(notes);
        assert_eq!(merged.decisions.len(), 1);
        assert_eq!(merged.decisions[0].segment_ids, [1, 4]);
        assert_eq!(merged.key_points.len(), 1);
        assert_eq!(merged.key_points[0].text, "Budget for the website");
    }

    #[test]
    fn due_dates_must_be_in_the_line() {
        let line = Sentence { text: "Maria will call the hosting provider tomorrow.".into(), segment_ids: vec![2] };
        let a = action_item(&line, Some("Maria".into()), Some("tomorrow".into()));
        let b = action_item(&line, None, Some("Friday".into()));
        assert_eq!((a.owner.as_str(), a.due.as_str()), ("Maria", "tomorrow"));
        assert_eq!((b.owner.as_str(), b.due.as_str()), ("", ""));
        assert_eq!(a.item.segment_ids, [2]);
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
        let notes = [
            "We decided to move the product launch to March.".to_string(),
            "Anna will update the project plan by Friday.".into(),
            "David will write the job description.".into(),
        ];
        let p = People::new(&[], &[]);
        assert!(summary_is_grounded("The team will move the product launch to March. Anna will update the project plan.", &notes, &p));
        assert!(!summary_is_grounded("Meeting: Weekly planning. Decisions: move the launch.", &notes, &p));
        assert!(!summary_is_grounded("The team celebrated a record quarter with cake.", &notes, &p));
        // Two notes blended into a claim neither makes.
        assert!(!summary_is_grounded("David will write the job description for Anna by Friday.", &notes, &p));
        // A figure no note holds.
        assert!(!summary_is_grounded("The team will move the product launch to March 3.", &notes, &p));
    }
}
