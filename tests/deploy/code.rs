//! What the deployed code says about itself: options, their variables and defaults
//! (from each binary's `--help`), and the model manifest.

use std::{collections::BTreeMap, process::Command};

use crate::tools::run_ok;

/// The services, as named in binaries (`mmc-<name>`), Deployments and compose services.
pub const SERVICES: [&str; 5] = ["embed", "caption", "speech", "textgen", "gateway"];

/// The model services (all but the gateway).
pub const MODEL_SERVICES: [&str; 4] = ["embed", "caption", "speech", "textgen"];

/// The options that name the models each model service loads (and must be fetched for it).
pub fn model_options(service: &str) -> &'static [&'static str] {
    match service {
        "embed" => &["MMC_TEXT_MODEL", "MMC_IMAGE_MODEL"],
        "caption" => &["MMC_CAPTION_DECODER"],
        "speech" => &["MMC_SPEECH_MODEL", "MMC_SPEECH_MULTILINGUAL_MODEL"],
        "textgen" => &["MMC_TEXTGEN_MODEL"],
        _ => &[],
    }
}

/// A binary's environment variables and their defaults (`None`: no default).
#[derive(Debug)]
pub struct Options {
    pub binary: String,
    pub env: BTreeMap<String, Option<String>>,
}

impl Options {
    /// Options of `binary` (`args` selects a subcommand, e.g. `["models", "fetch"]`).
    pub fn of(binary: &str, args: &[&str]) -> Options {
        let help = run_ok(Command::new(mmc_tests::binary(binary)).args(args).arg("--help"));
        let mut env = BTreeMap::new();
        let mut rest = help.as_str();
        while let Some(i) = rest.find("[env: ") {
            rest = &rest[i + 6..];
            // `[env: NAME=VALUE]`, or `[env: NAME]` for options whose values are hidden (secrets).
            let name = rest[..rest.find(['=', ']']).unwrap()].to_string();
            rest = &rest[rest.find(']').unwrap() + 1..];
            let default = rest.strip_prefix(" [default: ").map(|d| d[..d.find(']').unwrap()].to_string());
            env.insert(name, default);
        }
        assert!(env.contains_key("MMC_LOG_FORMAT") || !args.is_empty(), "{binary} --help lists no variables:\n{help}");
        Options { binary: format!("{binary} {}", args.join(" ")).trim().to_string(), env }
    }

    /// Whether the binary reads this variable.
    pub fn accepts(&self, name: &str) -> bool {
        self.env.contains_key(name)
    }

    /// The default of an option, by variable.
    pub fn default(&self, name: &str) -> &str {
        self.env.get(name).and_then(|d| d.as_deref()).unwrap_or_else(|| panic!("{} has no default for {name}", self.binary))
    }

    /// The port of an address option's default (`127.0.0.1:50051` -> 50051).
    pub fn default_port(&self, name: &str) -> u16 {
        let addr = self.default(name);
        addr.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("{name} default {addr:?}"))
    }
}

/// The profile a model id belongs to in the built-in manifest, if it is there.
pub fn model_profile(id: &str) -> Option<String> {
    mmc_fetch::Manifest::builtin().get(id).map(|m| m.profile.clone())
}
