//! API keys: who may call a server.
//!
//! A server started with `--api-keys-file FILE` answers only requests that carry one of
//! the file's keys as `authorization: Bearer <key>` (gRPC metadata or HTTP header); others
//! get UNAUTHENTICATED (HTTP 401). Health checks and reflection stay open, so probes and
//! `mmc health` work without a key. Without the flag nothing is checked: the default
//! listeners are loopback only, and a deployment that opens them sets keys (docs/deploy.md).
//!
//! The file holds one key per line; `#` starts a comment. A line is the key itself, or
//! `sha256:<hex>`, the hex SHA-256 of the key, so a server need not hold the key in the
//! clear (`printf %s "$KEY" | sha256sum`). Keys are compared by digest in constant time. A
//! key shorter than 16 characters is refused when the file is read: short keys are guessed.
//!
//! Clients send a key with [`bearer`]; `--upstream-api-key-file` (gateway) and
//! `MMC_API_KEY` (the `mmc` client commands) name theirs.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Shortest key accepted in a keys file.
pub const MIN_KEY_CHARS: usize = 16;

/// The keys a server accepts, as SHA-256 digests.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is required: send `authorization: Bearer <key>`")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equal digests, compared in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Reads a keys file (see the module docs).
    pub fn load(path: &Path) -> anyhow::Result<ApiKeys> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading API keys file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("API keys file {}: {e}", path.display()))
    }

    /// Parses the text of a keys file.
    pub fn parse(text: &str) -> anyhow::Result<ApiKeys> {
        let mut digests = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            if let Some(hex_digest) = line.strip_prefix("sha256:") {
                let bytes = hex::decode(hex_digest.trim()).ok().filter(|b| b.len() == 32);
                let bytes = bytes.ok_or_else(|| anyhow::anyhow!("line {}: sha256: must be followed by 64 hex digits", n + 1))?;
                digests.push(bytes.try_into().expect("32 bytes"));
            } else {
                anyhow::ensure!(line.chars().count() >= MIN_KEY_CHARS, "line {}: a key must have at least {MIN_KEY_CHARS} characters", n + 1);
                digests.push(digest(line));
            }
        }
        anyhow::ensure!(!digests.is_empty(), "no keys in it");
        Ok(ApiKeys { digests })
    }

    /// Checks an `authorization` header value.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        let value = authorization.map(str::trim).filter(|v| !v.is_empty()).ok_or(AuthError::Missing)?;
        let key = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim).ok_or(AuthError::Invalid)?;
        let d = digest(key);
        // Every digest is compared, so the time does not tell which one matched.
        let found = self.digests.iter().fold(false, |found, k| found | same(k, &d));
        if found {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// The first key of a client's key file (a plain key, not a digest): what a client sends.
pub fn read_client_key(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading API key file {}: {e}", path.display()))?;
    let key = text.lines().map(|l| l.split('#').next().unwrap_or_default().trim()).find(|l| !l.is_empty());
    let key = key.ok_or_else(|| anyhow::anyhow!("API key file {} holds no key", path.display()))?;
    anyhow::ensure!(!key.starts_with("sha256:"), "API key file {} holds a digest; a client needs the key itself", path.display());
    Ok(key.to_string())
}

/// `Bearer <key>` as a metadata value, for clients.
pub fn bearer(key: &str) -> anyhow::Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    format!("Bearer {key}").parse().map_err(|_| anyhow::anyhow!("an API key must be printable ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_digests_are_accepted_others_refused() {
        let key = "k3y-0123456789abcdef";
        let other = "another-key-0123456789";
        let hashed = hex::encode(digest(other));
        let keys = ApiKeys::parse(&format!("# operators\n{key}\n\nsha256:{hashed}  # ci\n")).unwrap();
        assert_eq!(keys.check(Some(&format!("Bearer {key}"))), Ok(()));
        assert_eq!(keys.check(Some(&format!("bearer  {other} "))), Ok(()));
        assert_eq!(keys.check(Some("Bearer nope-nope-nope-nope")), Err(AuthError::Invalid));
        assert_eq!(keys.check(Some(key)), Err(AuthError::Invalid), "the scheme is required");
        assert_eq!(keys.check(None), Err(AuthError::Missing));
        assert_eq!(keys.check(Some("  ")), Err(AuthError::Missing));
        assert!(ApiKeys::parse("short").is_err());
        assert!(ApiKeys::parse("sha256:abcd").is_err());
        assert!(ApiKeys::parse("# nothing\n").is_err());
    }
}
