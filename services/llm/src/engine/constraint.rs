//! JSON-Schema-constrained decoding with llguidance (the engine llama.cpp, vLLM and SGLang
//! use): at each step the constraint says which tokens keep the output a valid prefix of a
//! document that conforms to the schema; the sampler only draws among those, and the
//! end-of-turn token is allowed only once the document is complete.
//!
//! Supported schema features are llguidance's (its `docs/json_schema.md`): `type` (object,
//! array, string, number, integer, boolean, null, and lists of them), `properties`,
//! `required`, `additionalProperties`, `items`, `prefixItems`, `minItems`/`maxItems`,
//! `enum`, `const`, `anyOf`, `oneOf` (as anyOf), `allOf`, `$ref`/`$defs`, `minLength`/
//! `maxLength`, `pattern`, `format` (date, time, date-time, email, uuid, ...),
//! `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`. Schemas using anything else
//! are refused with the reason rather than silently half-enforced.
//!
//! Output is compact single-line JSON (`", "` and `": "` separators, no free whitespace):
//! small models given free whitespace tend to emit newlines forever. A schema may override
//! this with llguidance's own `"x-guidance"` options.

use std::sync::Arc;

use llguidance::{
    api::TopLevelGrammar,
    toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv},
    Matcher, ParserFactory,
};

/// Errors of constrained decoding.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintError {
    #[error("json_schema is not valid JSON: {0}")]
    NotJson(String),
    #[error("json_schema cannot be enforced: {0}")]
    Schema(String),
    /// The schema compiled but the engine cannot follow it (recursion without a base case,
    /// too many short alternatives): the request's fault, reported by its first line (the
    /// engine's state dump goes to the log, not to the client).
    #[error("json_schema cannot be enforced: {0}; simplify it (a $ref without a way out, or many short alternatives)")]
    TooComplex(String),
    #[error("constraint engine: {0}")]
    Engine(String),
}

/// Deepest nesting of objects and arrays a schema may have.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Longest `pattern` a schema may hold, in bytes (each becomes a lexer automaton).
pub const MAX_PATTERN_BYTES: usize = 512;

/// Checks what is cheap to check before the engine sees a schema: nesting depth and
/// pattern lengths.
fn check_schema_shape(value: &serde_json::Value, depth: usize) -> Result<(), ConstraintError> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(ConstraintError::Schema(format!("it nests deeper than {MAX_SCHEMA_DEPTH} levels")));
    }
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(p)) = map.get("pattern") {
                if p.len() > MAX_PATTERN_BYTES {
                    return Err(ConstraintError::Schema(format!("a pattern is {} bytes; the limit is {MAX_PATTERN_BYTES}", p.len())));
                }
            }
            map.values().try_for_each(|v| check_schema_shape(v, depth + 1))
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| check_schema_shape(v, depth + 1)),
        _ => Ok(()),
    }
}

/// A failure of the engine while following a compiled schema: its first line for the
/// client, the whole state dump in the log.
fn too_complex(e: impl std::fmt::Display) -> ConstraintError {
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default().trim();
    let first: String = first.chars().take(200).collect();
    tracing::warn!(detail = %full, "the constraint engine could not follow a schema");
    ConstraintError::TooComplex(first)
}

/// Builds constraints for one model's vocabulary (the token trie is made once, at load).
pub struct ConstraintFactory {
    factory: ParserFactory,
    vocab_size: usize,
}

/// Our bridge from the tokenizer to llguidance's `TokenizerEnv`.
///
/// (`toktrie_hf_tokenizers` does the same but pins an older `tokenizers` major than ours.)
struct Env {
    tokenizer: tokenizers::Tokenizer,
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |s| self.tokenizer.encode(s, false).map(|e| e.get_ids().to_vec()).unwrap_or_default())
    }
}

impl ConstraintFactory {
    /// Prepares constraints for `tokenizer`; `stop_ids` end a document (the first is EOS).
    pub fn new(tokenizer: &tokenizers::Tokenizer, stop_ids: &[u32]) -> Result<ConstraintFactory, ConstraintError> {
        let json = tokenizer.to_string(false).map_err(|e| ConstraintError::Engine(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| ConstraintError::Engine(e.to_string()))?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&value).map_err(|e| ConstraintError::Engine(e.to_string()))?;
        let vocab_size = tokenizer.get_vocab_size(true).max(words.len());
        words.resize(vocab_size, Vec::new());
        let eos = *stop_ids.first().ok_or_else(|| ConstraintError::Engine("the model has no EOS token".into()))?;
        let info = TokRxInfo::new(vocab_size as u32, eos);
        let mut trie = TokTrie::from(&info, &words);
        if stop_ids.len() > 1 {
            trie = trie.with_eos_tokens(stop_ids);
        }
        let env: TokEnv = Arc::new(Env { tokenizer: tokenizer.clone(), trie });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Engine(e.to_string()))?;
        // llguidance logs warnings to stderr by default; ours go through the grammar errors.
        factory.set_stderr_log_level(0);
        Ok(ConstraintFactory { factory, vocab_size })
    }

    /// A fresh constraint for `schema` (JSON Schema as JSON text).
    pub fn json_schema(&self, schema: &str) -> Result<Constraint, ConstraintError> {
        let mut schema: serde_json::Value = serde_json::from_str(schema).map_err(|e| ConstraintError::NotJson(e.to_string()))?;
        check_schema_shape(&schema, 0)?;
        if let Some(obj) = schema.as_object_mut() {
            obj.entry("x-guidance")
                .or_insert_with(|| serde_json::json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": " }));
        }
        let parser = self.factory.create_parser(TopLevelGrammar::from_json_schema(schema)).map_err(|e| ConstraintError::Schema(e.to_string()))?;
        let mut matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Schema(e));
        }
        // The first step, now: a schema that admits no document at all (`{"$ref": "#"}`)
        // is refused before the request is queued, not mid-stream.
        matcher.compute_mask_or_eos().map_err(too_complex)?;
        Ok(Constraint { matcher, vocab_size: self.vocab_size })
    }
}

/// The constraint state of one sequence.
pub struct Constraint {
    matcher: Matcher,
    vocab_size: usize,
}

/// Which tokens a constraint allows at one step.
pub struct Allowed {
    mask: llguidance::toktrie::SimpleVob,
    vocab_size: usize,
}

impl Allowed {
    /// Whether token `id` may be sampled.
    pub fn contains(&self, id: u32) -> bool {
        (id as usize) < self.vocab_size && self.mask.is_allowed(id)
    }
}

impl Constraint {
    /// The tokens allowed next (the end-of-turn tokens once the document is complete).
    pub fn allowed(&mut self) -> Result<Allowed, ConstraintError> {
        let mask = self.matcher.compute_mask_or_eos().map_err(too_complex)?;
        Ok(Allowed { mask, vocab_size: self.vocab_size })
    }

    /// Advances past a sampled token.
    pub fn consume(&mut self, token: u32) -> Result<(), ConstraintError> {
        self.matcher.consume_token(token).map_err(too_complex)
    }

    /// True once the document is complete and nothing more may follow.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}
