//! Versioned prompt templates (see `services/gateway/prompts/README.md`).
//!
//! A prompt is five minijinja templates (instruction, context, input, output format,
//! constraints) in one TOML file per task, one directory per version. Version `v1` is
//! compiled in; `--prompts-dir` adds or replaces versions at start-up, so prompts can be
//! compared (A/B) without rebuilding.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

/// The tasks a version must define.
pub const TASKS: [&str; 3] = ["extract", "summary", "answer"];

/// The five parts of one prompt, as written in its file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplate {
    pub instruction: String,
    pub context: String,
    pub input: String,
    pub output_format: String,
    pub constraints: String,
}

/// Example lines of each kind (`labels.toml`), for labelling transcript lines by similarity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineExamples {
    pub decision: Vec<String>,
    pub action_item: Vec<String>,
    pub key_point: Vec<String>,
    pub other: Vec<String>,
}

/// A rendered prompt: the chat messages to send.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedPrompt {
    pub system: String,
    pub user: String,
}

/// Why prompts could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt version {0} is not loaded (known: {1})")]
    UnknownVersion(String, String),
    #[error("prompt file {path}: {message}")]
    File { path: String, message: String },
    #[error("rendering prompt {version}/{task}: {message}")]
    Render { version: String, task: String, message: String },
}

/// Every loaded version, by name, then by task.
pub struct PromptLibrary {
    versions: BTreeMap<String, BTreeMap<String, PromptTemplate>>,
    examples: BTreeMap<String, LineExamples>,
    /// Used when a request names no version.
    pub default_version: String,
}

const BUNDLED_V1: [(&str, &str); 3] = [
    ("extract", include_str!("../../prompts/v1/extract.toml")),
    ("summary", include_str!("../../prompts/v1/summary.toml")),
    ("answer", include_str!("../../prompts/v1/answer.toml")),
];
const BUNDLED_V1_LABELS: &str = include_str!("../../prompts/v1/labels.toml");

fn parse<T: serde::de::DeserializeOwned>(path: &str, text: &str) -> Result<T, PromptError> {
    toml::from_str(text).map_err(|e| PromptError::File { path: path.to_string(), message: e.to_string() })
}

impl PromptLibrary {
    /// The compiled-in `v1`, as default.
    pub fn bundled() -> Self {
        let v1 = BUNDLED_V1.iter().map(|(task, text)| (task.to_string(), parse(task, text).expect("bundled prompt parses"))).collect();
        let labels = parse("labels", BUNDLED_V1_LABELS).expect("bundled labels parse");
        Self {
            versions: BTreeMap::from([("v1".to_string(), v1)]),
            examples: BTreeMap::from([("v1".to_string(), labels)]),
            default_version: "v1".into(),
        }
    }

    /// Adds every version directory under `dir` (each must hold all [`TASKS`] and
    /// `labels.toml`); a version already loaded is replaced.
    pub fn load_dir(&mut self, dir: &Path) -> Result<(), PromptError> {
        let file_error = |path: &Path, e: std::io::Error| PromptError::File { path: path.display().to_string(), message: e.to_string() };
        for entry in std::fs::read_dir(dir).map_err(|e| file_error(dir, e))? {
            let entry = entry.map_err(|e| file_error(dir, e))?;
            if !entry.path().is_dir() {
                continue;
            }
            let version = entry.file_name().to_string_lossy().into_owned();
            let mut tasks = BTreeMap::new();
            for task in TASKS {
                let path = entry.path().join(format!("{task}.toml"));
                let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
                tasks.insert(task.to_string(), parse(&path.display().to_string(), &text)?);
            }
            let path = entry.path().join("labels.toml");
            let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
            self.examples.insert(version.clone(), parse(&path.display().to_string(), &text)?);
            self.versions.insert(version, tasks);
        }
        Ok(())
    }

    /// The version a request asked for (`""` = the default), checked to exist.
    pub fn resolve<'a>(&'a self, version: &'a str) -> Result<&'a str, PromptError> {
        let version = if version.is_empty() { self.default_version.as_str() } else { version };
        if self.versions.contains_key(version) {
            Ok(version)
        } else {
            Err(PromptError::UnknownVersion(crate::error::shown(version), self.versions.keys().cloned().collect::<Vec<_>>().join(", ")))
        }
    }

    /// The example lines of `version` (resolved as [`Self::resolve`]).
    pub fn line_examples(&self, version: &str) -> Result<&LineExamples, PromptError> {
        Ok(&self.examples[self.resolve(version)?])
    }

    /// Renders `task` of `version` with `vars`: system = instruction + constraints + output
    /// format; user = context + input.
    pub fn render<V: Serialize>(&self, version: &str, task: &str, vars: &V) -> Result<RenderedPrompt, PromptError> {
        let version = self.resolve(version)?;
        let template = &self.versions[version][task];
        let render_error = |e: minijinja::Error| PromptError::Render { version: version.to_string(), task: task.to_string(), message: e.to_string() };
        let env = minijinja::Environment::new();
        let ctx = minijinja::Value::from(minijinja::value::Serde(vars));
        let part = |t: &str| env.render_str(t, ctx.clone()).map(|s| s.trim().to_string()).map_err(render_error);
        let system = [part(&template.instruction)?, part(&template.constraints)?, part(&template.output_format)?].join("\n");
        let user = [part(&template.context)?, part(&template.input)?].join("\n");
        Ok(RenderedPrompt { system, user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_prompts_render_and_new_versions_load_from_files() {
        let mut lib = PromptLibrary::bundled();
        #[derive(Serialize)]
        struct Seg {
            id: u32,
            start: String,
            text: &'static str,
        }
        let vars = serde_json::json!({"title": "Weekly", "question": "Who calls?", "line": "Anna will call.", "previous": "", "segments": [Seg { id: 3, start: "00:05".into(), text: "Anna will call." }]});
        let p = lib.render("", "extract", &vars).unwrap();
        assert!(p.user.contains("Action item: Anna will call.") && p.user.contains("Meeting: Weekly"), "{}", p.user);
        assert!(p.system.contains("Do not invent"));
        let p = lib.render("", "answer", &vars).unwrap();
        assert!(p.user.contains("[3] Anna will call.") && p.user.contains("Question: Who calls?"), "{}", p.user);

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("v2")).unwrap();
        for task in TASKS {
            let body =
                format!("instruction = \"{task} v2\"\ncontext = \"\"\ninput = \"{{{{ title }}}}\"\noutput_format = \"\"\nconstraints = \"\"\n");
            std::fs::write(dir.path().join("v2").join(format!("{task}.toml")), body).unwrap();
        }
        let labels = "decision = [\"a\"]\naction_item = [\"b\"]\nkey_point = []\nother = []\n";
        std::fs::write(dir.path().join("v2").join("labels.toml"), labels).unwrap();
        lib.load_dir(dir.path()).unwrap();
        let p = lib.render("v2", "answer", &vars).unwrap();
        assert_eq!(p.system.trim(), "answer v2");
        assert_eq!(p.user.trim(), "Weekly");
        assert!(matches!(lib.resolve("v9"), Err(PromptError::UnknownVersion(..))));
        assert_eq!(lib.line_examples("v2").unwrap().action_item, ["b"]);
        assert!(lib.line_examples("v1").unwrap().decision.len() >= 5);
    }
}
