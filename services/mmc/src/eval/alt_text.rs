//! `mmc eval alt-text`: every photo's alt text, written through the gateway, judged against
//! a committed list of what each photo shows (`tests/fixtures/alt-text/expected.toml`) by a
//! fixed rule, so "how often is the alt text right, honestly unsure, or wrong" is a number
//! anyone can reproduce and a test can hold.
//!
//! The rule (also in the fixture's header):
//! - **correct**: states no doubt and names one of the photo's subjects;
//! - **uncertain, right** / **uncertain, wrong**: says "(uncertain)"; its guess does or does
//!   not name a subject;
//! - **not recognised**: says the subject is not recognised;
//! - **wrong**: states no doubt and names none of the subjects;
//! - **absurd** (whatever the verdict): joins two things with a relation word or names one
//!   thing twice ("A mountain bike, possibly on a bicycle-built-for-two.", "A tripod,
//!   possibly on a tripod.").
//!
//! A subject word matches a whole word of the alt text, hyphenated words per part, plurals
//! as singular. No model judges another model here.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use mmc_proto::{
    caption::v1::CaptionMode,
    common::v1::Image,
    gateway::v1::{gateway_service_client::GatewayServiceClient, DescribeImageRequest},
};
use serde::{Deserialize, Serialize};

#[derive(Args, Debug)]
pub struct AltTextArgs {
    /// Gateway endpoint.
    #[arg(long, env = "MMC_GATEWAY_ENDPOINT", default_value = "http://127.0.0.1:50055")]
    gateway: String,
    /// What each photo shows.
    #[arg(long, default_value = "tests/fixtures/alt-text/expected.toml")]
    expected: PathBuf,
    /// Directories of photos (every photo in them must be in the expected list).
    #[arg(long = "photos", required = true)]
    photos: Vec<PathBuf>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// The committed list.
#[derive(Deserialize)]
struct Expected {
    photos: BTreeMap<String, Vec<String>>,
}

/// How one alt text is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Correct,
    UncertainRight,
    UncertainWrong,
    NotRecognised,
    Wrong,
}

/// One photo's result.
#[derive(Serialize)]
pub struct Judged {
    pub photo: String,
    pub alt_text: String,
    pub verdict: Verdict,
    /// Why it is absurd, when it is.
    pub absurd: Option<String>,
}

/// Relation words that join two things in a sentence.
const RELATIONS: &[&str] = &["on", "in", "with", "at", "near", "next", "beside", "behind", "under", "above"];
/// Words of the honest forms and articles, never a named thing.
const FORM_WORDS: &[&str] = &["a", "an", "the", "or", "and", "photo", "perhaps", "possibly", "uncertain", "subject", "is", "not", "recognised", "of"];

/// Words of `text`, lower case, hyphenated words split, plural `s` dropped from longer words.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(|w| if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") { w[..w.len() - 1].to_string() } else { w.to_string() })
        .collect()
}

/// Judges one alt text against the photo's subject words (see the module docs).
pub fn judge(photo: &str, alt_text: &str, subjects: &[String]) -> Judged {
    let w = words(alt_text);
    let names = |s: &String| words(s).iter().all(|p| w.contains(p));
    let named = subjects.iter().any(names);
    let lower = alt_text.to_lowercase();
    let verdict = if lower.contains("not recognised") {
        Verdict::NotRecognised
    } else if lower.contains("(uncertain)") {
        if named {
            Verdict::UncertainRight
        } else {
            Verdict::UncertainWrong
        }
    } else if named {
        Verdict::Correct
    } else {
        Verdict::Wrong
    };
    // Absurd: a relation word, or a content word twice ("tripod ... tripod").
    let relation = w.iter().find(|x| RELATIONS.contains(&x.as_str())).map(|r| format!("relation word {r:?}"));
    let content: Vec<&String> = w.iter().filter(|x| !FORM_WORDS.contains(&x.as_str()) && !RELATIONS.contains(&x.as_str())).collect();
    let repeated = content.iter().enumerate().find(|(i, x)| content[..*i].contains(x)).map(|(_, x)| format!("{x:?} named twice"));
    Judged { photo: photo.to_string(), alt_text: alt_text.to_string(), verdict, absurd: relation.or(repeated) }
}

/// Shares of each verdict and the absurd count.
#[derive(Serialize, Default)]
pub struct Totals {
    pub photos: usize,
    pub correct: usize,
    pub uncertain_right: usize,
    pub uncertain_wrong: usize,
    pub not_recognised: usize,
    pub wrong: usize,
    pub absurd: usize,
}

pub fn totals(judged: &[Judged]) -> Totals {
    let mut t = Totals { photos: judged.len(), ..Default::default() };
    for j in judged {
        match j.verdict {
            Verdict::Correct => t.correct += 1,
            Verdict::UncertainRight => t.uncertain_right += 1,
            Verdict::UncertainWrong => t.uncertain_wrong += 1,
            Verdict::NotRecognised => t.not_recognised += 1,
            Verdict::Wrong => t.wrong += 1,
        }
        t.absurd += usize::from(j.absurd.is_some());
    }
    t
}

pub async fn run(args: AltTextArgs) -> anyhow::Result<ExitCode> {
    let expected: Expected =
        toml::from_str(&std::fs::read_to_string(&args.expected).with_context(|| format!("reading {}", args.expected.display()))?)
            .with_context(|| format!("parsing {}", args.expected.display()))?;
    let channel = crate::cli_client::connect(&args.gateway).await.with_context(|| format!("cannot reach the gateway at {}", args.gateway))?;
    let mut client = GatewayServiceClient::new(channel).max_encoding_message_size(64 << 20);
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in &args.photos {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_lowercase();
            if ["png", "jpg", "jpeg", "webp", "gif", "bmp"].contains(&ext.as_str()) {
                files.push(path);
            }
        }
    }
    files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    let mut judged = Vec::new();
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let subjects = expected.photos.get(&name).with_context(|| format!("{name} is not in {}: add what it shows", args.expected.display()))?;
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let request = DescribeImageRequest {
            image: Some(Image { data: data.into(), mime_type: String::new(), source_name: name.clone() }),
            modes: vec![CaptionMode::AltText as i32],
        };
        let response = client.describe_image(request).await.with_context(|| format!("describing {name}"))?.into_inner();
        let text = response.captions.first().map(|c| c.text.clone()).unwrap_or_default();
        judged.push(judge(&name, &text, subjects));
    }
    let t = totals(&judged);
    if args.json {
        println!("{}", serde_json::json!({ "photos": judged, "totals": t }));
    } else {
        println!("{:<24} {:<16} {:<8} alt text", "photo", "verdict", "absurd");
        for j in &judged {
            let verdict = serde_json::to_value(j.verdict)?.as_str().unwrap_or_default().to_string();
            println!("{:<24} {:<16} {:<8} {}", j.photo, verdict, if j.absurd.is_some() { "ABSURD" } else { "" }, j.alt_text);
        }
        let share = |n: usize| format!("{n} ({:.0}%)", 100.0 * n as f64 / t.photos.max(1) as f64);
        println!(
            "\n{} photos: correct {}, uncertain and right {}, uncertain and wrong {}, not recognised {}, wrong {}, absurd {}",
            t.photos,
            share(t.correct),
            share(t.uncertain_right),
            share(t.uncertain_wrong),
            share(t.not_recognised),
            share(t.wrong),
            share(t.absurd)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn the_rule_as_documented() {
        let bike = s(&["bike", "bicycle"]);
        assert_eq!(judge("bike.jpg", "A bicycle-built-for-two.", &bike).verdict, Verdict::Correct);
        let j = judge("bike.jpg", "A mountain bike, possibly on a bicycle-built-for-two.", &bike);
        assert_eq!((j.verdict, j.absurd.as_deref()), (Verdict::Correct, Some("relation word \"on\"")));
        let j = judge("camera.png", "A tripod, possibly a tripod.", &s(&["tripod"]));
        assert_eq!(j.absurd.as_deref(), Some("\"tripod\" named twice"));
        assert_eq!(judge("x", "Photo, perhaps a bobsled or a football helmet (uncertain).", &s(&["astronaut"])).verdict, Verdict::UncertainWrong);
        assert_eq!(judge("x", "Photo, perhaps a cat (uncertain).", &s(&["cat"])).verdict, Verdict::UncertainRight);
        assert_eq!(judge("x", "Photo; the subject is not recognised (uncertain).", &s(&["moon"])).verdict, Verdict::NotRecognised);
        assert_eq!(judge("x", "A bubble.", &s(&["clock"])).verdict, Verdict::Wrong);
        assert_eq!(judge("x", "Two coins.", &s(&["coin"])).verdict, Verdict::Correct);
        assert_eq!(judge("x", "A colour wheel.", &s(&["color wheel", "colour"])).verdict, Verdict::Correct);
        assert!(judge("x", "Photo, perhaps a golf ball or a bubble (uncertain).", &s(&["coin"])).absurd.is_none());
    }
}
