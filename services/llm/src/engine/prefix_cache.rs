//! Prompt-prefix KV cache: the model state after a conversation's earlier turns, kept so that
//! the next request sharing them (a follow-up turn, or any request with the same system
//! prompt and few-shot examples) runs only its new tokens.
//!
//! Keys are exact token sequences; a hit is the longest cached sequence that is a strict
//! prefix of the new prompt (candle's modules cannot cut a KV cache shorter, so a partial
//! match of an entry is no use). Entries are model instances whose KV cache holds exactly
//! the key's positions; a hit is a clone (tensors are shared until written; appending to a
//! KV cache makes new tensors, so the entry is never changed). Least recently used entries
//! are evicted beyond the capacity, and prefixes longer than `max_tokens` are not kept, which
//! bounds the memory.

use std::sync::Mutex;

use super::model::Instance;

/// Entries kept by default.
pub const DEFAULT_ENTRIES: usize = 8;
/// Longest prefix kept by default, in tokens.
pub const DEFAULT_MAX_TOKENS: usize = 4096;

/// The cache (shared by the scheduler's sequences).
pub struct PrefixCache {
    entries: Mutex<Vec<(Vec<u32>, Instance)>>,
    capacity: usize,
    max_tokens: usize,
}

impl PrefixCache {
    /// A cache of `capacity` entries (0 = off) of at most `max_tokens` tokens each.
    pub fn new(capacity: usize, max_tokens: usize) -> PrefixCache {
        PrefixCache { entries: Mutex::new(Vec::new()), capacity, max_tokens }
    }

    /// True when the cache keeps nothing.
    pub fn is_off(&self) -> bool {
        self.capacity == 0
    }

    /// Whether a prefix of `len` tokens would be kept.
    pub fn wants(&self, len: usize) -> bool {
        !self.is_off() && len > 0 && len <= self.max_tokens
    }

    /// The state after the longest cached strict prefix of `ids`: (prefix length, instance).
    pub fn lookup(&self, ids: &[u32]) -> Option<(usize, Instance)> {
        if self.is_off() {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let best = entries
            .iter()
            .enumerate()
            .filter(|(_, (key, _))| key.len() < ids.len() && ids.starts_with(key))
            .max_by_key(|(_, (key, _))| key.len())
            .map(|(i, _)| i)?;
        // Most recently used last.
        let entry = entries.remove(best);
        let hit = entry.1.try_clone().map(|instance| (entry.0.len(), instance));
        entries.push(entry);
        hit
    }

    /// True when `ids` is already a key.
    pub fn contains(&self, ids: &[u32]) -> bool {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(key, _)| key == ids)
    }

    /// Keeps `instance` (whose KV cache holds exactly `ids`) under `ids`.
    pub fn insert(&self, ids: Vec<u32>, instance: Instance) {
        if !self.wants(ids.len()) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|(key, _)| *key != ids);
        entries.push((ids, instance));
        while entries.len() > self.capacity {
            entries.remove(0);
        }
        metrics::gauge!("mmc_textgen_prefix_cache_entries").set(entries.len() as f64);
    }
}
