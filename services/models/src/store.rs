//! Where model files live: `$MMC_MODELS_DIR/<model id>/<file>`.
//!
//! The default directory is `models/` at the repository root (git-ignored), so a
//! checkout works without configuration; deployments set `MMC_MODELS_DIR` to a volume.

use std::path::{Path, PathBuf};

/// Name of the file that marks a model directory complete and verified; it lists every
/// file's sha256 so later runs can re-verify without the network.
pub const STAMP: &str = ".mmc-verified.json";

/// The models directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `MMC_MODELS_DIR`, else `<repository>/models`.
    pub fn from_env() -> Self {
        match std::env::var_os("MMC_MODELS_DIR") {
            Some(dir) if !dir.is_empty() => Self::new(dir),
            _ => Self::new(default_dir()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of one model.
    pub fn model_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// A file of a model, checked to exist, with an error that says how to fetch it.
    pub fn file(&self, id: &str, name: &str) -> Result<PathBuf, String> {
        let path = self.model_dir(id).join(name);
        if path.is_file() && self.model_dir(id).join(STAMP).is_file() {
            Ok(path)
        } else {
            Err(format!(
                "model file {} is missing; run `mmc models fetch` (models directory: {}, set MMC_MODELS_DIR to change it)",
                path.display(),
                self.root.display()
            ))
        }
    }
}

/// Where a service finds its model file, and the id it reports: an explicit file given on
/// the command line (id = its file stem), else `<models dir>/<model id>/<file>` with the
/// models directory from the flag or [`ModelStore::from_env`].
pub fn locate(models_dir: Option<&Path>, model: &str, file: &str, explicit: Option<&Path>) -> (PathBuf, String) {
    if let Some(path) = explicit {
        let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| model.to_string());
        return (path.to_path_buf(), id);
    }
    let root = models_dir.map(Path::to_path_buf).unwrap_or_else(|| ModelStore::from_env().root().to_path_buf());
    (root.join(model).join(file), model.to_string())
}

/// First 12 hex digits of a model file's sha256 as recorded by `mmc models fetch` (the
/// stamp), or "unknown" for directories not made by it. Reported as a model's revision, so a
/// change of weights is visible even under the same id.
pub fn revision_of(dir: &Path, file: &str) -> String {
    std::fs::read(dir.join(STAMP))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["files"][file].as_str().map(|s| s[..12.min(s.len())].to_string()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The `model_type` of a Hugging Face checkpoint directory (its `config.json`), e.g.
/// "blip"; None for directories without one (GGUF, ggml and our converted models). Services
/// pick the model code a directory needs from it.
pub fn model_type(dir: &Path) -> Option<String> {
    std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["model_type"].as_str().map(str::to_string))
}

fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}
