//! Human review of a meeting's notes: a person edits, approves or rejects each decision and
//! action item, reassigns owners, sets due dates, adds what the machine missed (cited to
//! transcript segments they pick), and marks the notes reviewed.
//!
//! Every change is one write transaction of the meeting store (read, change, write back),
//! so it is durable when it returns and never interleaved with another. Each item carries a
//! version: a change made on an older version than the stored one is refused with
//! [`GatewayError::Conflict`] instead of silently overwriting a colleague's edit. Nothing is
//! deleted: a rejected item stays (marked) and earlier texts stay in the item's history.

use std::collections::HashSet;

use crate::{
    domain::{CitedItem, ItemEdit, ItemKind, ItemReview, Meeting, ReviewStatus, TextRevision, TextSource},
    error::{shown, GatewayError},
    flows::{
        images::now_unix_ms,
        limits::{MAX_ITEM_CHARS, MAX_OWNER_CHARS},
        review::{check_reviewer, check_text},
        Flows,
    },
    store::update_meeting,
};

/// An owner or due date a person set: trimmed, bounded, may be empty (none).
fn check_short(field: &str, value: &str) -> Result<String, GatewayError> {
    let value = value.trim();
    if value.chars().count() > MAX_OWNER_CHARS {
        return Err(GatewayError::Invalid(format!("{field} is over {MAX_OWNER_CHARS} characters")));
    }
    Ok(value.to_string())
}

fn not_found(meeting_id: &str) -> GatewayError {
    GatewayError::NotFound(format!("no meeting with id {}", shown(meeting_id)))
}

/// Sets `slot` to `new` when it differs, keeping the old value in `history`; true when changed.
fn replace(slot: &mut String, new: Option<String>, field: &str, review: &mut ItemReview, by: &str, at: i64) -> bool {
    match new {
        Some(new) if new != *slot => {
            let old = std::mem::replace(slot, new);
            review.history.push(TextRevision {
                field: field.into(),
                text: old,
                source: review.source,
                replaced_by: by.into(),
                replaced_at_unix_ms: at,
            });
            true
        }
        _ => false,
    }
}

impl Flows {
    /// Applies one reviewer's change to one item, or adds an item (see the module docs).
    pub async fn update_meeting_item(&self, edit: ItemEdit) -> Result<Meeting, GatewayError> {
        let reviewer = check_reviewer(&edit.reviewer)?;
        let text = edit.text.as_deref().map(|t| check_text("text", t, MAX_ITEM_CHARS)).transpose()?;
        let owner = edit.owner.as_deref().map(|o| check_short("owner", o)).transpose()?;
        let due = edit.due.as_deref().map(|d| check_short("due", d)).transpose()?;
        if edit.kind == ItemKind::Decision && (owner.is_some() || due.is_some()) {
            return Err(GatewayError::Invalid("decisions have no owner or due date; those are for action items".into()));
        }
        if edit.index.is_none() && (text.is_none() || edit.segment_ids.is_empty()) {
            return Err(GatewayError::Invalid("a new item needs text and segment_ids (the transcript segments it rests on)".into()));
        }
        if edit.meeting_id.is_empty() {
            return Err(GatewayError::Invalid("meeting_id is empty".into()));
        }
        let meeting_id = edit.meeting_id.clone();
        let now = now_unix_ms();
        let updated = update_meeting(&*self.meetings, &meeting_id, move |meeting: &mut Meeting| {
                let known: HashSet<u32> = meeting.segments.iter().map(|s| s.id).collect();
                if let Some(bad) = edit.segment_ids.iter().find(|id| !known.contains(id)) {
                    return Err(GatewayError::Invalid(format!("segment {bad} is not in this meeting's transcript ({} segments)", known.len())));
                }
                let summary = meeting.summary.get_or_insert_with(Default::default);
                let kind = edit.kind.as_str();
                let (item, owner_slot, due_slot) = match (edit.kind, edit.index) {
                    (ItemKind::Decision, None) => {
                        summary.decisions.push(CitedItem::default());
                        (summary.decisions.last_mut().expect("pushed"), None, None)
                    }
                    (ItemKind::ActionItem, None) => {
                        summary.action_items.push(Default::default());
                        let a = summary.action_items.last_mut().expect("pushed");
                        (&mut a.item, Some(&mut a.owner), Some(&mut a.due))
                    }
                    (ItemKind::Decision, Some(i)) => {
                        let n = summary.decisions.len();
                        let item = summary.decisions.get_mut(i as usize).ok_or_else(|| no_item(kind, i, n))?;
                        (item, None, None)
                    }
                    (ItemKind::ActionItem, Some(i)) => {
                        let n = summary.action_items.len();
                        let a = summary.action_items.get_mut(i as usize).ok_or_else(|| no_item(kind, i, n))?;
                        (&mut a.item, Some(&mut a.owner), Some(&mut a.due))
                    }
                };
                if let Some(expected) = edit.expected_version.filter(|v| edit.index.is_some() && *v != item.review.version) {
                    return Err(GatewayError::Conflict(format!(
                        "{kind} {} was changed by someone else (version {}, your change was made on version {expected}); reload the meeting and apply your change again",
                        edit.index.unwrap_or_default(),
                        item.review.version,
                    )));
                }
                let new = edit.index.is_none();
                let mut changed = new;
                let mut review = std::mem::take(&mut item.review);
                if new {
                    item.text = text.clone().unwrap_or_default();
                } else {
                    changed |= replace(&mut item.text, text, "text", &mut review, &reviewer, now);
                }
                if let Some(slot) = owner_slot {
                    changed |= replace(slot, owner, "owner", &mut review, &reviewer, now);
                }
                if let Some(slot) = due_slot {
                    changed |= replace(slot, due, "due", &mut review, &reviewer, now);
                }
                if !edit.segment_ids.is_empty() && edit.segment_ids != item.segment_ids {
                    item.segment_ids = edit.segment_ids.clone();
                    changed = true;
                }
                if changed {
                    review.source = TextSource::Human;
                    // The cited segments are the person's choice now, not the automatic check's.
                    item.citation_verified = false;
                }
                let status = edit.status.or(changed.then_some(ReviewStatus::Approved));
                if status.is_none() && !changed {
                    return Err(GatewayError::Invalid("nothing to change: give text, owner, due, segment_ids or status".into()));
                }
                if let Some(status) = status {
                    review.status = status;
                }
                review.reviewed_by = reviewer.clone();
                review.reviewed_at_unix_ms = now;
                review.version += 1;
                item.review = review;
                meeting.review.version += 1;
                Ok(())
            })
            .await?;
        metrics::counter!("mmc_gateway_reviews_total", "action" => "meeting_item").increment(1);
        updated.ok_or_else(|| not_found(&meeting_id))
    }

    /// Marks the notes reviewed: every item not rejected counts as approved by `reviewer`.
    pub async fn mark_meeting_reviewed(&self, meeting_id: &str, reviewer: &str, expected_version: Option<u64>) -> Result<Meeting, GatewayError> {
        let reviewer = check_reviewer(reviewer)?;
        if meeting_id.is_empty() {
            return Err(GatewayError::Invalid("meeting_id is empty".into()));
        }
        let now = now_unix_ms();
        let updated = update_meeting(&*self.meetings, meeting_id, move |meeting: &mut Meeting| {
            if let Some(expected) = expected_version.filter(|v| *v != meeting.review.version) {
                return Err(GatewayError::Conflict(format!(
                    "the meeting was changed by someone else (version {}, your review was made on version {expected}); reload it and review again",
                    meeting.review.version
                )));
            }
            if let Some(summary) = &mut meeting.summary {
                let items = summary.decisions.iter_mut().chain(summary.action_items.iter_mut().map(|a| &mut a.item));
                for item in items.filter(|i| i.review.status == ReviewStatus::Pending) {
                    item.review.status = ReviewStatus::Approved;
                    item.review.reviewed_by = reviewer.clone();
                    item.review.reviewed_at_unix_ms = now;
                    item.review.version += 1;
                }
            }
            meeting.review.reviewed = true;
            meeting.review.reviewed_by = reviewer;
            meeting.review.reviewed_at_unix_ms = now;
            meeting.review.version += 1;
            Ok(())
        })
        .await?;
        metrics::counter!("mmc_gateway_reviews_total", "action" => "meeting_reviewed").increment(1);
        updated.ok_or_else(|| not_found(meeting_id))
    }
}

fn no_item(kind: &str, index: u32, len: usize) -> GatewayError {
    GatewayError::NotFound(format!("the meeting has no {kind} {index} ({len} in its notes, numbered from 0)"))
}
