//! Meetings stored by earlier versions, as `gateway.v1.Meeting` protobuf: read into the
//! gateway's own [`Meeting`] so that no summarized meeting is lost on upgrade. The only
//! protobuf in the stores; new rows are written as JSON (see [`super::meetings`]).

use mmc_proto::gateway::v1 as pb;
use prost::Message as _;

use crate::{
    domain::{ActionItem, CitedItem, Meeting, MeetingSummary, StageTiming},
    upstream::calls::{model_ref as model, segment},
};

/// Decodes a protobuf row.
pub fn meeting(bytes: &[u8]) -> Result<Meeting, prost::DecodeError> {
    let m = pb::Meeting::decode(bytes)?;
    Ok(Meeting {
        meeting_id: m.meeting_id,
        title: m.title,
        language: m.language,
        audio_duration_ms: m.audio_duration_ms,
        segments: m.segments.into_iter().map(segment).collect(),
        summary: m.summary.map(summary),
        created_at_unix_ms: m.created_at_unix_ms,
        participants: m.participants,
        review: Default::default(),
    })
}

fn cited(i: pb::CitedItem) -> CitedItem {
    CitedItem { text: i.text, segment_ids: i.segment_ids, citation_verified: i.citation_verified, review: Default::default() }
}

fn summary(s: pb::MeetingSummary) -> MeetingSummary {
    MeetingSummary {
        meeting_id: s.meeting_id,
        summary: s.summary,
        key_points: s.key_points.into_iter().map(cited).collect(),
        decisions: s.decisions.into_iter().map(cited).collect(),
        action_items: s
            .action_items
            .into_iter()
            .map(|a| ActionItem { item: a.item.map(cited).unwrap_or_default(), owner: a.owner, due: a.due })
            .collect(),
        prompt_version: s.prompt_version,
        models: s.models.into_iter().map(model).collect(),
        timings: s.timings.into_iter().map(|t| StageTiming { stage: t.stage, duration_ms: t.duration_ms, upstream_ms: t.upstream_ms }).collect(),
        language: s.language,
    }
}
