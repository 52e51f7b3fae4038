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
//! A key may be followed by its scope (`read`, `write` or `admin`, see [`Scope`]; none:
//! admin): a call that needs more gets PERMISSION_DENIED (HTTP 403). With
//! `--api-key-rate-per-s N` each key may make N calls a second in bursts of
//! `--api-key-burst`; one more gets RESOURCE_EXHAUSTED with `retry-after` metadata (HTTP
//! 429 with a `Retry-After` header).
//!
//! Clients send a key with [`bearer`]; `--upstream-api-key-file` (gateway) and
//! `MMC_API_KEY` (the `mmc` client commands) name theirs.

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use governor::{clock::Clock as _, DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};

/// Shortest key accepted in a keys file.
pub const MIN_KEY_CHARS: usize = 16;

/// What a key may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Computations and reads: embeddings, chat, transcription, search, describing,
    /// getting and listing, asking a meeting, exports.
    Read,
    /// Also what changes stored data: indexing, summarizing (stores the meeting),
    /// review edits and approvals.
    Write,
    /// Also deletion.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// The scope a gRPC method needs, by its name, the same on every service: `Delete*` is
/// admin; methods that change what is stored (`Index*`, `Update*`, `Approve*`, `Mark*`,
/// `Summarize*`) are write; everything else (model computations, reads) is read. The
/// gateway's HTTP routes map to the same scopes as the methods they call.
pub fn scope_of_method(method: &str) -> Scope {
    if method.starts_with("Delete") {
        Scope::Admin
    } else if ["Index", "Update", "Approve", "Mark", "Summarize"].iter().any(|p| method.starts_with(p)) {
        Scope::Write
    } else {
        Scope::Read
    }
}

/// The keys a server accepts, as SHA-256 digests with their scopes, and the optional
/// per-key rate limit.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Scope)>,
    /// One token bucket per key (GCRA, `governor`); shared by every clone, so the gateway's
    /// gRPC and HTTP ports draw on one budget per key.
    limiter: Option<Arc<DefaultKeyedRateLimiter<[u8; 32]>>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("keys", &self.keys.len()).field("rate_limited", &self.limiter.is_some()).finish()
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is required: send `authorization: Bearer <key>`")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
    #[error("this API key has scope {}, and this call needs {}", granted.as_str(), needed.as_str())]
    Forbidden { needed: Scope, granted: Scope },
    #[error("rate limit of this API key reached; retry in {} s", retry_after_s)]
    RateLimited { retry_after_s: u64 },
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

    /// The keys of `path` with `rate_per_s` requests a second per key (bursts of `burst`;
    /// 0 = no limit), loaded once per process: every caller gets the same keys and the same
    /// buckets.
    pub fn shared(path: &Path, rate_per_s: u32, burst: u32) -> anyhow::Result<ApiKeys> {
        static LOADED: OnceLock<Mutex<Vec<(PathBuf, ApiKeys)>>> = OnceLock::new();
        let mut loaded = LOADED.get_or_init(Default::default).lock().expect("keys cache lock");
        if let Some((_, keys)) = loaded.iter().find(|(p, _)| p == path) {
            return Ok(keys.clone());
        }
        let keys = Self::load(path)?.with_rate_limit(rate_per_s, burst);
        loaded.push((path.to_path_buf(), keys.clone()));
        Ok(keys)
    }

    /// Parses the text of a keys file.
    pub fn parse(text: &str) -> anyhow::Result<ApiKeys> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let key = fields.next().unwrap_or_default();
            let scope = match fields.next() {
                None => Scope::Admin,
                Some(s) => Scope::parse(s).ok_or_else(|| anyhow::anyhow!("line {}: scope {s:?} is not read, write or admin", n + 1))?,
            };
            anyhow::ensure!(fields.next().is_none(), "line {}: a key, then at most a scope", n + 1);
            let digest = if let Some(hex_digest) = key.strip_prefix("sha256:") {
                let bytes = hex::decode(hex_digest).ok().filter(|b| b.len() == 32);
                let bytes = bytes.ok_or_else(|| anyhow::anyhow!("line {}: sha256: must be followed by 64 hex digits", n + 1))?;
                bytes.try_into().expect("32 bytes")
            } else {
                anyhow::ensure!(key.chars().count() >= MIN_KEY_CHARS, "line {}: a key must have at least {MIN_KEY_CHARS} characters", n + 1);
                digest(key)
            };
            keys.push((digest, scope));
        }
        anyhow::ensure!(!keys.is_empty(), "no keys in it");
        Ok(ApiKeys { keys, limiter: None })
    }

    /// Limits each key to `per_s` requests a second, in bursts of up to `burst` (at least
    /// `per_s`); `per_s` 0 = no limit.
    pub fn with_rate_limit(mut self, per_s: u32, burst: u32) -> Self {
        self.limiter = NonZeroU32::new(per_s).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_s)).unwrap_or(rate);
            Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
        });
        self
    }

    /// Checks an `authorization` header value for a call that needs `needed`: a known key
    /// (compared by digest in constant time), of that scope or above, within its rate.
    pub fn authorize(&self, authorization: Option<&str>, needed: Scope) -> Result<(), AuthError> {
        let value = authorization.map(str::trim).filter(|v| !v.is_empty()).ok_or(AuthError::Missing)?;
        let key = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim).ok_or(AuthError::Invalid)?;
        let d = digest(key);
        // Every digest is compared, so the time does not tell which one matched.
        let granted = self.keys.iter().fold(None, |found, (k, scope)| if same(k, &d) { Some(*scope) } else { found });
        let granted = granted.ok_or(AuthError::Invalid)?;
        if granted < needed {
            return Err(AuthError::Forbidden { needed, granted });
        }
        if let Some(limiter) = &self.limiter {
            if let Err(not_until) = limiter.check_key(&d) {
                let wait = not_until.wait_time_from(limiter.clock().now());
                metrics::counter!("mmc_api_key_rate_limited_total").increment(1);
                return Err(AuthError::RateLimited { retry_after_s: wait.max(Duration::from_millis(1)).as_secs_f64().ceil() as u64 });
            }
        }
        Ok(())
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
        let check = |auth: Option<&str>| keys.authorize(auth, Scope::Admin);
        assert_eq!(check(Some(&format!("Bearer {key}"))), Ok(()));
        assert_eq!(check(Some(&format!("bearer  {other} "))), Ok(()));
        assert_eq!(check(Some("Bearer nope-nope-nope-nope")), Err(AuthError::Invalid));
        assert_eq!(check(Some(key)), Err(AuthError::Invalid), "the scheme is required");
        assert_eq!(check(None), Err(AuthError::Missing));
        assert_eq!(check(Some("  ")), Err(AuthError::Missing));
        assert!(ApiKeys::parse("short").is_err());
        assert!(ApiKeys::parse("sha256:abcd").is_err());
        assert!(ApiKeys::parse("# nothing\n").is_err());
    }

    #[test]
    fn scopes_include_the_ones_below_and_are_checked() {
        let keys = ApiKeys::parse("reader-0123456789abcdef read\nwriter-0123456789abcdef write\nadmin-0123456789abcdef\n").unwrap();
        let auth = |k: &str| format!("Bearer {k}-0123456789abcdef");
        assert_eq!(keys.authorize(Some(&auth("reader")), Scope::Read), Ok(()));
        assert_eq!(keys.authorize(Some(&auth("reader")), Scope::Write), Err(AuthError::Forbidden { needed: Scope::Write, granted: Scope::Read }));
        assert_eq!(keys.authorize(Some(&auth("writer")), Scope::Write), Ok(()));
        assert!(matches!(keys.authorize(Some(&auth("writer")), Scope::Admin), Err(AuthError::Forbidden { .. })));
        assert_eq!(keys.authorize(Some(&auth("admin")), Scope::Admin), Ok(()), "a key without a scope has them all");
        assert!(ApiKeys::parse("reader-0123456789abcdef superuser").is_err());
        assert_eq!(scope_of_method("DeleteMeeting"), Scope::Admin);
        assert_eq!(scope_of_method("IndexImages"), Scope::Write);
        assert_eq!(scope_of_method("SummarizeMeeting"), Scope::Write);
        assert_eq!(scope_of_method("SearchImages"), Scope::Read);
        assert_eq!(scope_of_method("EmbedText"), Scope::Read);
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let keys = ApiKeys::parse("first-0123456789abcdef\nsecond-0123456789abcdef\n").unwrap().with_rate_limit(1, 2);
        let first = Some("Bearer first-0123456789abcdef");
        assert_eq!(keys.authorize(first, Scope::Read), Ok(()));
        assert_eq!(keys.authorize(first, Scope::Read), Ok(()), "a burst of 2");
        assert_eq!(keys.authorize(first, Scope::Read), Err(AuthError::RateLimited { retry_after_s: 1 }));
        assert_eq!(keys.authorize(Some("Bearer second-0123456789abcdef"), Scope::Read), Ok(()), "another key is not limited by the first");
        // Clones share the buckets (the gateway's two ports).
        assert!(matches!(keys.clone().authorize(first, Scope::Read), Err(AuthError::RateLimited { .. })));
    }
}
