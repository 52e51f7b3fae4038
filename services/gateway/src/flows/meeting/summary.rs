//! The prose summary of a meeting's checked notes: one model call for a meeting whose notes
//! fit one window, map-reduce over time windows for a long one.
//!
//! Why windows: a 45-minute meeting has a hundred notes or more, past what a small model
//! phrases well and, with its prompt, past a small context window; and one failed call
//! would leave the whole meeting to the template. So the notes are grouped by where they
//! were said (windows of `summary_window_ms`, a crowded window split at
//! `summary_window_notes`), each window is summarized and checked on its own (map), and the
//! window summaries are summarized once more (reduce). Every text the model writes passes
//! [`summary_is_grounded`] against the notes it was given; a window whose summary fails
//! is represented by its lead note (first decision, else action item, else key point), and
//! a failed reduce gives the window summaries in time order, one after another: one
//! sentence or two per window, not the whole list of notes.

use serde::Deserialize;

use super::{export::clock, facts::Evidence, people::People, Notes};
use crate::{
    domain::{ModelRef, Segment},
    error::GatewayError,
    flows::Flows,
    upstream::Deadline,
};

/// A JSON string field keeps the model writing prose rather than echoing the prompt's
/// headings.
const SCHEMA: &str = r#"{"type": "object", "properties": {"summary": {"type": "string", "minLength": 20, "maxLength": 400}}, "required": ["summary"], "additionalProperties": false, "x-guidance": {"whitespace_flexible": false}}"#;

/// Notes said within one stretch of the recording.
#[derive(Default)]
pub(super) struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
    pub notes: Notes,
}

/// Groups the notes by the start of their first cited segment into windows of `window_ms`
/// (in recording order; empty windows left out), splitting a window of more than
/// `max_notes` notes into consecutive parts.
pub(super) fn windows(notes: &Notes, segments: &[Segment], window_ms: i64, max_notes: usize) -> Vec<Window> {
    let start_of = |ids: &[u32]| ids.first().and_then(|id| segments.iter().find(|s| s.id == *id)).map_or(0, |s| s.start_ms);
    enum Item<'a> {
        Decision(&'a crate::domain::CitedItem),
        Action(&'a crate::domain::ActionItem),
        Point(&'a crate::domain::CitedItem),
    }
    let mut items: Vec<(i64, Item)> = Vec::new();
    items.extend(notes.decisions.iter().map(|d| (start_of(&d.segment_ids), Item::Decision(d))));
    items.extend(notes.action_items.iter().map(|a| (start_of(&a.item.segment_ids), Item::Action(a))));
    items.extend(notes.key_points.iter().map(|p| (start_of(&p.segment_ids), Item::Point(p))));
    items.sort_by_key(|(t, _)| *t);
    let (window_ms, max_notes) = (window_ms.max(1), max_notes.max(1));
    let mut out: Vec<Window> = Vec::new();
    let mut current: Option<(i64, usize)> = None; // (window index, notes in the current part)
    for (t, item) in items {
        let index = t / window_ms;
        let new_part = match current {
            Some((i, n)) => i != index || n >= max_notes,
            None => true,
        };
        if new_part {
            out.push(Window { start_ms: t, end_ms: t, notes: Notes::default() });
            current = Some((index, 0));
        }
        let w = out.last_mut().expect("a window");
        w.end_ms = t;
        match item {
            Item::Decision(d) => w.notes.decisions.push(d.clone()),
            Item::Action(a) => w.notes.action_items.push(a.clone()),
            Item::Point(p) => w.notes.key_points.push(p.clone()),
        }
        if let Some((_, n)) = current.as_mut() {
            *n += 1;
        }
    }
    out
}

/// Whether a summary may be shown: no fact the evidence lacks, prose (no headings or
/// lists), and every sentence restating one piece of evidence.
pub(super) fn summary_is_grounded(summary: &str, evidence: &[String], people: &People) -> bool {
    if !Evidence::new(evidence, people).unsupported(summary).is_empty() {
        return false;
    }
    if summary.is_empty() || summary.len() > 600 || summary.contains('\n') || summary.contains(':') || summary.trim_start().starts_with('-') {
        return false;
    }
    let sentences: Vec<&str> = summary.split(['.', '!', '?']).map(str::trim).filter(|s| !s.is_empty()).collect();
    !sentences.is_empty()
        && sentences.iter().all(|sentence| {
            let words = super::content_words(sentence);
            !words.is_empty() && evidence.iter().any(|n| super::support(&words, n) >= 0.75)
        })
}

/// The summary built from the notes when the model's is not usable.
pub(super) fn template_summary(notes: &Notes) -> String {
    let mut parts = Vec::new();
    if !notes.decisions.is_empty() {
        parts.push(format!("Decisions: {}", notes.decisions.iter().map(|d| d.text.trim_end_matches('.')).collect::<Vec<_>>().join("; ")));
    }
    if !notes.action_items.is_empty() {
        let items: Vec<String> = notes.action_items.iter().map(|a| a.item.text.trim_end_matches('.').to_string()).collect();
        parts.push(format!("Action items: {}", items.join("; ")));
    }
    if parts.is_empty() && !notes.key_points.is_empty() {
        parts.push(format!("Discussed: {}", notes.key_points.iter().map(|d| d.text.trim_end_matches('.')).collect::<Vec<_>>().join("; ")));
    }
    parts.join(". ") + "."
}

/// A window's stand-in when its summary fails the check: its first decision, else its
/// first action item, else its first key point (a note, so grounded by construction).
/// The whole template per window would make a long meeting's summary as long as its notes.
fn lead_sentence(notes: &Notes) -> String {
    let lead = notes.decisions.first().or(notes.action_items.first().map(|a| &a.item)).or(notes.key_points.first());
    let text = lead.map_or("", |i| i.text.trim()).trim_matches('"');
    if text.ends_with(['.', '!', '?']) {
        text.to_string()
    } else {
        format!("{text}.")
    }
}

/// What the notes say, as evidence for a summary: their texts, owners and due dates.
fn evidence(notes: &Notes) -> Vec<String> {
    let mut out: Vec<String> =
        notes.decisions.iter().chain(&notes.key_points).chain(notes.action_items.iter().map(|a| &a.item)).map(|i| i.text.clone()).collect();
    out.extend(notes.action_items.iter().flat_map(|a| [a.owner.clone(), a.due.clone()]).filter(|s| !s.is_empty()));
    out
}

/// Where a summary is written: the request's settings and its progress channel.
pub(super) struct SummaryJob<'a> {
    pub title: &'a str,
    pub prompt_version: &'a str,
    pub people: &'a People,
    pub deadline: Deadline,
    pub events: &'a super::Events,
}

impl Flows {
    /// The summary of non-empty notes, and the model that wrote (part of) it.
    pub(super) async fn write_summary(
        &self,
        job: &SummaryJob<'_>,
        notes: &Notes,
        segments: &[Segment],
    ) -> Result<(String, Option<ModelRef>), GatewayError> {
        let parts = windows(notes, segments, self.meeting.summary_window_ms, self.meeting.summary_window_notes);
        if parts.len() <= 1 {
            let (text, model) = self.phrase(job, notes, &[]).await?;
            return Ok((text.unwrap_or_else(|| template_summary(notes)), model));
        }
        // Map: each window on its own.
        let total = parts.len() as u64 + 1;
        let mut model = None;
        let mut summaries = Vec::new();
        for (i, w) in parts.iter().enumerate() {
            let message = format!("window {} of {} ({}–{})", i + 1, parts.len(), clock(w.start_ms), clock(w.end_ms));
            super::send(job.events, super::progress("summarize", i as u64, total, "windows", 0.92 + 0.07 * i as f64 / total as f64, message)).await?;
            let (text, m) = self.phrase(job, &w.notes, &[]).await?;
            model = model.or(m);
            summaries.push(text.unwrap_or_else(|| lead_sentence(&w.notes)));
        }
        // Reduce: the window summaries, summarized; checked against them and every note.
        super::send(job.events, super::progress("summarize", total - 1, total, "windows", 0.99, "joining the windows".into())).await?;
        let joined = Notes {
            key_points: summaries.iter().map(|s| crate::domain::CitedItem { text: s.clone(), ..Default::default() }).collect(),
            ..Default::default()
        };
        let mut extra = evidence(notes);
        extra.extend(summaries.iter().cloned());
        let (text, m) = self.phrase(job, &joined, &extra).await?;
        model = model.or(m);
        // No time stamps between them: "0:42" is a number the transcript does not hold, and
        // a heading mid-text reads as a name to the fact checker.
        let text = text.unwrap_or_else(|| summaries.join(" "));
        Ok((text, model))
    }

    /// One model call phrasing `notes`; the text only if it is grounded in the notes (and
    /// `extra` evidence). A failed call or an ungrounded text is counted and gives `None`.
    async fn phrase(&self, job: &SummaryJob<'_>, notes: &Notes, extra: &[String]) -> Result<(Option<String>, Option<ModelRef>), GatewayError> {
        let vars = serde_json::json!({
            "title": job.title,
            "decisions": notes.decisions.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            "key_points": notes.key_points.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            "action_items": notes.action_items.iter().map(|a| serde_json::json!({"owner": a.owner, "task": a.item.text, "due": a.due})).collect::<Vec<_>>(),
        });
        let prompt = self.prompts.render(job.prompt_version, "summary", &vars).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        // The transcript is already worth storing: a summary the model cannot write (the
        // service failing, a prompt past its context) falls back rather than losing the meeting.
        let (text, model) = match self.upstream.chat("summarize", &prompt, Some(SCHEMA), 160, job.deadline).await {
            Ok((text, model, _)) => (text, model),
            Err(e) => {
                tracing::warn!(error = %e, "the summary could not be generated; template used");
                metrics::counter!("mmc_gateway_summary_fallbacks_total").increment(1);
                return Ok((None, None));
            }
        };
        #[derive(Deserialize)]
        struct Summary {
            summary: String,
        }
        let text = serde_json::from_str::<Summary>(&text).map(|s| s.summary.trim().to_string()).unwrap_or_default();
        let mut evidence = if extra.is_empty() { evidence(notes) } else { extra.to_vec() };
        evidence.retain(|e| !e.is_empty());
        if summary_is_grounded(&text, &evidence, job.people) {
            Ok((Some(text), model))
        } else {
            tracing::info!(summary = text, "generated summary not grounded in the notes; template used");
            metrics::counter!("mmc_gateway_summary_fallbacks_total").increment(1);
            Ok((None, model))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionItem, CitedItem};

    fn seg(id: u32, start_ms: i64) -> Segment {
        Segment { id, start_ms, end_ms: start_ms + 1000, text: format!("line {id}"), ..Default::default() }
    }

    fn item(text: &str, id: u32) -> CitedItem {
        CitedItem { text: text.into(), segment_ids: vec![id], citation_verified: true, ..Default::default() }
    }

    #[test]
    fn notes_are_grouped_by_where_they_were_said_and_crowded_windows_split() {
        let segments: Vec<Segment> = (0..8).map(|i| seg(i, i as i64 * 200_000)).collect(); // every 3:20
        let notes = Notes {
            decisions: vec![item("d at 0:00", 0), item("d at 13:20", 4)],
            action_items: vec![ActionItem { item: item("a at 6:40", 2), owner: "Ann".into(), due: String::new() }],
            key_points: vec![item("p at 3:20", 1), item("p at 10:00", 3), item("p at 23:20", 7)],
        };
        let w = windows(&notes, &segments, 600_000, 16);
        let shape: Vec<(i64, usize, usize, usize)> =
            w.iter().map(|w| (w.start_ms, w.notes.decisions.len(), w.notes.action_items.len(), w.notes.key_points.len())).collect();
        // 0–10 min: three notes; 10–20: two; 20–30: one.
        assert_eq!(shape, [(0, 1, 1, 1), (600_000, 1, 0, 1), (1_400_000, 0, 0, 1)]);
        // A window of 10 min holding three notes, at most two per part: split in time order.
        let w = windows(&notes, &segments, 600_000, 2);
        let texts: Vec<Vec<String>> = w
            .iter()
            .map(|w| {
                w.notes
                    .decisions
                    .iter()
                    .chain(&w.notes.key_points)
                    .map(|i| i.text.clone())
                    .chain(w.notes.action_items.iter().map(|a| a.item.text.clone()))
                    .collect()
            })
            .collect();
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert_eq!(texts[0], ["d at 0:00", "p at 3:20"]);
        assert_eq!(texts[1], ["a at 6:40"]);
        // A short meeting is one window: the single-call path.
        assert_eq!(windows(&notes, &segments, 3_600_000, 16).len(), 1);
        assert!(windows(&Notes::default(), &segments, 600_000, 16).is_empty());
    }

    #[test]
    fn a_window_without_a_usable_summary_is_represented_by_its_lead_note() {
        let action = ActionItem { item: item("Ann will call the bank", 1), owner: "Ann".into(), due: String::new() };
        let notes = Notes { decisions: vec![], action_items: vec![action], key_points: vec![item("The bank was slow.", 2)] };
        assert_eq!(lead_sentence(&notes), "Ann will call the bank.");
        let notes = Notes { decisions: vec![item("\"We agreed to wait.\"", 0)], ..notes };
        assert_eq!(lead_sentence(&notes), "We agreed to wait.");
    }
}
