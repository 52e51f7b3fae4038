//! The evaluation set's files (`tests/fixtures/meetings/*.toml`, described in the README
//! beside them).

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// One scripted meeting and its facts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meeting {
    /// File stem, filled in on load.
    #[serde(skip)]
    pub name: String,
    pub title: String,
    pub setting: String,
    pub participants: Vec<String>,
    pub lines: Vec<String>,
    #[serde(default)]
    pub decisions: Vec<Decision>,
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub questions: Vec<Question>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub keys: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub owner: String,
    pub keys: Vec<String>,
    /// Key terms of the due phrase; empty when the meeting states none.
    pub due: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub q: String,
    /// Key terms of a right answer; empty when the meeting does not say.
    pub answer: Vec<String>,
}

/// One long meeting made of `set` in order, its lines `times` times over; every
/// participant, fact and question once.
pub fn concatenate(set: &[Meeting], times: usize) -> Meeting {
    let mut all = Meeting {
        name: "concatenated".into(),
        title: "Long meeting".into(),
        setting: format!("{} meetings", set.len()),
        participants: Vec::new(),
        lines: Vec::new(),
        decisions: Vec::new(),
        actions: Vec::new(),
        questions: Vec::new(),
    };
    for m in set {
        for p in &m.participants {
            if !all.participants.contains(p) {
                all.participants.push(p.clone());
            }
        }
        all.lines.extend(m.lines.iter().cloned());
        all.decisions.extend(m.decisions.iter().cloned());
        all.actions.extend(m.actions.iter().cloned());
        all.questions.extend(m.questions.iter().cloned());
    }
    let once = std::mem::take(&mut all.lines);
    for _ in 0..times.max(1) {
        all.lines.extend(once.iter().cloned());
    }
    all
}

/// Every meeting in `dir` (sorted by name), or those named in `only`.
pub fn load(dir: &Path, only: &[String]) -> anyhow::Result<Vec<Meeting>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading the evaluation set {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut meeting: Meeting = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        meeting.name = name;
        out.push(meeting);
    }
    if let Some(missing) = only.iter().find(|n| !out.iter().any(|m| &m.name == *n)) {
        anyhow::bail!("no meeting {missing:?} in {}", dir.display());
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
