//! Meeting notes as documents people share: Markdown, JSON, and the action items as an
//! iCalendar (RFC 5545) to-do list.
//!
//! What an export holds: the summary, decisions and action items that a person did not
//! reject, each with its review state (a reader must see which lines a person checked and
//! which are the machine's unreviewed draft), the transcript times it rests on, and the
//! notes' own review state. Due dates are exported as the meeting said them; in iCalendar a
//! `DUE` date is set only when one can be derived without guessing much: an ISO date
//! ("2026-12-11"), or a weekday name ("Friday"), taken as the first such day after the day
//! the meeting was stored.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    domain::{CitedItem, Export, ExportFormat, Meeting, ReviewStatus},
    error::GatewayError,
    flows::Flows,
};

/// One exported item.
#[derive(Serialize)]
struct ExportItem<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    due: Option<&'a str>,
    segment_ids: &'a [u32],
    /// Start of the first cited segment, ms.
    start_ms: Option<i64>,
    /// `pending` (machine draft) or `approved`.
    review_status: &'static str,
    /// `machine` or `human`.
    source: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reviewed_by: &'a str,
}

/// The JSON export.
#[derive(Serialize)]
struct ExportDoc<'a> {
    meeting_id: &'a str,
    title: &'a str,
    created_at_unix_ms: i64,
    audio_duration_ms: i64,
    /// ISO 639-1, as transcribed.
    language: &'a str,
    participants: &'a [String],
    notes_reviewed: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    notes_reviewed_by: &'a str,
    summary: &'a str,
    decisions: Vec<ExportItem<'a>>,
    action_items: Vec<ExportItem<'a>>,
}

fn item<'a>(meeting: &Meeting, i: &'a CitedItem, owner: Option<&'a str>, due: Option<&'a str>) -> ExportItem<'a> {
    let start_ms = i.segment_ids.first().and_then(|id| meeting.segments.iter().find(|s| s.id == *id)).map(|s| s.start_ms);
    ExportItem {
        text: &i.text,
        owner,
        due,
        segment_ids: &i.segment_ids,
        start_ms,
        review_status: i.review.status.as_str(),
        source: i.review.source.as_str(),
        reviewed_by: &i.review.reviewed_by,
    }
}

fn doc(meeting: &Meeting) -> ExportDoc<'_> {
    let kept = |i: &&CitedItem| i.review.status != ReviewStatus::Rejected;
    let summary = meeting.summary.as_ref();
    let decisions = summary.map(|s| s.decisions.iter().filter(kept).map(|d| item(meeting, d, None, None)).collect()).unwrap_or_default();
    let action_items = summary
        .map(|s| {
            s.action_items.iter().filter(|a| kept(&&a.item)).map(|a| item(meeting, &a.item, Some(a.owner.as_str()), Some(a.due.as_str()))).collect()
        })
        .unwrap_or_default();
    ExportDoc {
        meeting_id: &meeting.meeting_id,
        title: &meeting.title,
        created_at_unix_ms: meeting.created_at_unix_ms,
        audio_duration_ms: meeting.audio_duration_ms,
        language: &meeting.language,
        participants: &meeting.participants,
        notes_reviewed: meeting.review.reviewed,
        notes_reviewed_by: &meeting.review.reviewed_by,
        summary: summary.map_or("", |s| s.summary.as_str()),
        decisions,
        action_items,
    }
}

/// `m:ss` (or `h:mm:ss`) of a time in the recording.
pub(super) fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn review_note(i: &ExportItem) -> String {
    match (i.review_status, i.source) {
        ("approved", "human") => format!("edited by {}", i.reviewed_by),
        ("approved", _) => format!("approved by {}", i.reviewed_by),
        _ => "machine draft, not reviewed".to_string(),
    }
}

/// The Markdown notes.
pub fn markdown(meeting: &Meeting) -> String {
    let d = doc(meeting);
    let mut out = String::new();
    let title = if d.title.is_empty() { "Meeting notes" } else { d.title };
    let _ = writeln!(out, "# {title}\n");
    let _ = writeln!(out, "- Meeting id: `{}`", d.meeting_id);
    let _ = writeln!(out, "- Recording: {}", clock(d.audio_duration_ms));
    if !d.language.is_empty() {
        let _ = writeln!(out, "- Language: {} ({})", super::language::name(d.language), d.language);
    }
    if !d.participants.is_empty() {
        let _ = writeln!(out, "- Participants: {}", d.participants.join(", "));
    }
    if d.notes_reviewed {
        let _ = writeln!(out, "- Notes reviewed by {}", d.notes_reviewed_by);
    } else {
        let _ = writeln!(out, "- **Draft**: these notes have not been reviewed by a person");
    }
    let _ = writeln!(out, "\n## Summary\n\n{}\n", if d.summary.is_empty() { "(none)" } else { d.summary });
    let _ = writeln!(out, "## Decisions\n");
    if d.decisions.is_empty() {
        let _ = writeln!(out, "(none)");
    }
    for i in &d.decisions {
        let at = i.start_ms.map(|ms| format!(" [{}]", clock(ms))).unwrap_or_default();
        let _ = writeln!(out, "- {}{at} _({})_", i.text, review_note(i));
    }
    let _ = writeln!(out, "\n## Action items\n");
    if d.action_items.is_empty() {
        let _ = writeln!(out, "(none)");
    }
    for i in &d.action_items {
        let at = i.start_ms.map(|ms| format!(" [{}]", clock(ms))).unwrap_or_default();
        let owner = i.owner.filter(|o| !o.is_empty()).unwrap_or("unassigned");
        let due = i.due.filter(|d| !d.is_empty()).map(|d| format!(", due {d}")).unwrap_or_default();
        let _ = writeln!(out, "- [ ] **{owner}**: {}{due}{at} _({})_", i.text, review_note(i));
    }
    out
}

/// The JSON notes.
pub fn json(meeting: &Meeting) -> String {
    serde_json::to_string_pretty(&doc(meeting)).expect("plain data serializes")
}

/// RFC 5545 text value: backslash, semicolon, comma and newlines escaped.
fn ical_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace(';', "\\;").replace(',', "\\,").replace('\n', "\\n")
}

/// A content line folded at 75 octets (RFC 5545 3.1), CRLF-terminated.
fn ical_line(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// The due date as `YYYYMMDD`, when it can be derived (see the module docs).
pub fn due_date(due: &str) -> Option<String> {
    let due = due.trim().to_lowercase();
    let ymd = |days: i64| {
        let (y, m, d) = civil_from_days(days);
        format!("{y:04}{m:02}{d:02}")
    };
    if let [y, m, d] = due.split('-').map(str::parse::<i64>).collect::<Result<Vec<_>, _>>().ok()?.as_slice() {
        return ((1..=12).contains(m) && (1..=31).contains(d)).then(|| ymd(days_from_civil(*y, *m, *d)));
    }
    None
}

/// A weekday named in `due`, as the first such day after `meeting_day`.
fn weekday_date(due: &str, meeting_day: i64) -> Option<String> {
    const DAYS: [&str; 7] = ["thursday", "friday", "saturday", "sunday", "monday", "tuesday", "wednesday"];
    let due = due.to_lowercase();
    let target = DAYS.iter().position(|d| due.split(|c: char| !c.is_alphabetic()).any(|w| w == *d))? as i64;
    // 1970-01-01 was a Thursday (index 0 above).
    let today = meeting_day.rem_euclid(7);
    let ahead = (target - today).rem_euclid(7);
    let (y, m, d) = civil_from_days(meeting_day + if ahead == 0 { 7 } else { ahead });
    Some(format!("{y:04}{m:02}{d:02}"))
}

/// The action items as an iCalendar to-do list.
pub fn icalendar(meeting: &Meeting) -> String {
    let d = doc(meeting);
    let day = meeting.created_at_unix_ms.div_euclid(86_400_000);
    let stamp = {
        let (y, m, dd) = civil_from_days(day);
        let s = meeting.created_at_unix_ms.div_euclid(1000).rem_euclid(86_400);
        format!("{y:04}{m:02}{dd:02}T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60)
    };
    let mut out = String::new();
    for line in ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//mmc//meeting notes//EN", "CALSCALE:GREGORIAN"] {
        ical_line(&mut out, line);
    }
    for (n, i) in d.action_items.iter().enumerate() {
        ical_line(&mut out, "BEGIN:VTODO");
        ical_line(&mut out, &format!("UID:{}-action-{n}@mmc", d.meeting_id));
        ical_line(&mut out, &format!("DTSTAMP:{stamp}"));
        let owner = i.owner.filter(|o| !o.is_empty());
        let summary = match owner {
            Some(o) => format!("{o}: {}", i.text),
            None => i.text.to_string(),
        };
        ical_line(&mut out, &format!("SUMMARY:{}", ical_text(&summary)));
        let due = i.due.unwrap_or("");
        if let Some(date) = due_date(due).or_else(|| weekday_date(due, day)) {
            ical_line(&mut out, &format!("DUE;VALUE=DATE:{date}"));
        }
        let mut description = format!("From the meeting \"{}\"", d.title);
        if let Some(ms) = i.start_ms {
            let _ = write!(description, " at {}", clock(ms));
        }
        if !due.is_empty() {
            let _ = write!(description, "; due as said: {due}");
        }
        let _ = write!(description, "; {}.", review_note(i));
        ical_line(&mut out, &format!("DESCRIPTION:{}", ical_text(&description)));
        ical_line(&mut out, "STATUS:NEEDS-ACTION");
        ical_line(&mut out, "END:VTODO");
    }
    ical_line(&mut out, "END:VCALENDAR");
    out
}

impl Flows {
    /// The stored meeting as a document in `format`.
    pub async fn export_meeting(&self, meeting_id: &str, format: ExportFormat) -> Result<Export, GatewayError> {
        let meeting = self.get_meeting(meeting_id).await?;
        let (content, content_type, ext) = match format {
            ExportFormat::Markdown => (markdown(&meeting), "text/markdown; charset=utf-8", "md"),
            ExportFormat::Json => (json(&meeting), "application/json", "json"),
            ExportFormat::ICalendar => (icalendar(&meeting), "text/calendar; charset=utf-8", "ics"),
        };
        Ok(Export { content: content.into_bytes(), content_type, file_name: format!("{}.{ext}", meeting.meeting_id) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionItem, ItemReview, MeetingSummary, Segment, TextSource};

    #[test]
    fn dates_round_trip_and_weekdays_come_after_the_meeting() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2026, 12, 4)), (2026, 12, 4));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        // 2026-12-04 is a Friday.
        let friday = days_from_civil(2026, 12, 4);
        assert_eq!(weekday_date("by Friday", friday).as_deref(), Some("20261211"));
        assert_eq!(weekday_date("Monday", friday).as_deref(), Some("20261207"));
        assert_eq!(weekday_date("next week", friday), None);
        assert_eq!(due_date("2026-12-11").as_deref(), Some("20261211"));
        assert_eq!(due_date("the 10th"), None);
    }

    #[test]
    fn exports_leave_out_rejected_items_and_say_what_was_reviewed() {
        let seg = |id, start_ms, text: &str| Segment { id, start_ms, end_ms: start_ms + 3000, text: text.into(), ..Default::default() };
        let approved = |by: &str, source| ItemReview { status: ReviewStatus::Approved, source, reviewed_by: by.into(), ..Default::default() };
        let meeting = Meeting {
            meeting_id: "mtg-1".into(),
            title: "Budget, Q3".into(),
            audio_duration_ms: 65_000,
            segments: vec![seg(0, 0, "Hello."), seg(1, 62_000, "Ana will send the report by Friday.")],
            created_at_unix_ms: days_from_civil(2026, 12, 4) * 86_400_000 + 3_600_000,
            summary: Some(MeetingSummary {
                summary: "The budget was discussed.".into(),
                decisions: vec![
                    CitedItem {
                        text: "Hello.".into(),
                        segment_ids: vec![0],
                        review: ItemReview { status: ReviewStatus::Rejected, ..Default::default() },
                        ..Default::default()
                    },
                    CitedItem { text: "Keep the budget".into(), segment_ids: vec![1], ..Default::default() },
                ],
                action_items: vec![ActionItem {
                    item: CitedItem {
                        text: "Send the report".into(),
                        segment_ids: vec![1],
                        review: approved("Lee", TextSource::Human),
                        ..Default::default()
                    },
                    owner: "Ana".into(),
                    due: "Friday".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let md = markdown(&meeting);
        assert!(!md.contains("Hello."), "{md}");
        assert!(md.contains("- Keep the budget [1:02] _(machine draft, not reviewed)_"), "{md}");
        assert!(md.contains("- [ ] **Ana**: Send the report, due Friday [1:02] _(edited by Lee)_"), "{md}");
        assert!(md.contains("**Draft**"), "{md}");
        let v: serde_json::Value = serde_json::from_str(&json(&meeting)).unwrap();
        assert_eq!(v["decisions"].as_array().unwrap().len(), 1);
        assert_eq!(v["action_items"][0]["owner"], "Ana");
        assert_eq!(v["action_items"][0]["source"], "human");
        let ics = icalendar(&meeting);
        assert!(ics.contains("SUMMARY:Ana: Send the report\r\n"), "{ics}");
        assert!(ics.contains("DUE;VALUE=DATE:20261211\r\n"), "{ics}");
        assert!(ics.contains("From the meeting \"Budget\\, Q3\" at 1:02"), "{ics}");
        assert!(ics.lines().all(|l| l.len() <= 76), "{ics}");
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\n") && ics.ends_with("END:VCALENDAR\r\n"));
    }
}
