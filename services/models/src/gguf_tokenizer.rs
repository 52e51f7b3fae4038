//! GGUF tokenizer metadata -> Hugging Face `tokenizer.json`.
//!
//! GGUF files carry their tokenizer as metadata (`tokenizer.ggml.*`): the vocabulary, the
//! BPE merges or SentencePiece scores, token types and a `pre` name for the pre-tokenizer
//! llama.cpp uses. This converter rebuilds the tokenizer llama.cpp would run, as a
//! `tokenizers::Tokenizer`, for the two vocabulary types the supported architectures use:
//!
//! - **`gpt2`** (byte-level BPE: Llama 3, Qwen2/Qwen3, SmolLM, GPT-2, DeepSeek, StarCoder,
//!   ...): the pre-tokenizer is the list of split regexes llama.cpp's `llama-vocab.cpp`
//!   assigns to `tokenizer.ggml.pre`, applied in order, then byte-level mapping. candle's
//!   `TokenizerFromGguf` instead always builds GPT-2's with a prefix space, which is wrong
//!   for most of them (SmolLM2: "system" must be one token, 9690, not " system").
//! - **`llama`** (SentencePiece BPE: Llama 2, Mistral, TinyLlama, Phi-3, Gemma 3): spaces
//!   become `▁`, a `▁` is prepended to every run of text unless
//!   `tokenizer.ggml.add_space_prefix` is false, and pieces merge in order of their scores
//!   (llama.cpp's SPM tokenizer); characters outside the vocabulary fall back to byte
//!   tokens `<0xXX>`. The merges are derived from the scores as Hugging Face's
//!   `SentencePieceExtractor` does.
//!
//! Names it does not know are refused rather than guessed. The test
//! `tests/gguf_vocab_parity.rs` checks every table entry it can against llama.cpp's own
//! tokenizer test vectors.

use std::{collections::HashMap, fs::File, path::Path};

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::{
    decoders::{
        byte_fallback::ByteFallback, byte_level::ByteLevel as ByteLevelDecoder, fuse::Fuse, sequence::Sequence as DecoderSequence, strip::Strip,
        DecoderWrapper,
    },
    models::bpe::BPE,
    normalizers::{prepend::Prepend, replace::Replace, utils::Sequence as NormalizerSequence, NormalizerWrapper},
    pre_tokenizers::{
        byte_level::ByteLevel,
        sequence::Sequence,
        split::{Split, SplitPattern},
        PreTokenizerWrapper,
    },
    processors::PostProcessorWrapper,
    AddedToken, SplitDelimiterBehavior, Tokenizer,
};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Reads the tokenizer from the GGUF at `input` and writes `tokenizer.json` to `output`.
pub fn convert(input: &Path, output: &Path) -> Result<(), String> {
    let tokenizer = from_gguf(input)?;
    tokenizer.save(output, false).map_err(|e| format!("writing {}: {e}", output.display()))
}

/// Builds the tokenizer described by a GGUF file's metadata.
pub fn from_gguf(input: &Path) -> Result<Tokenizer, String> {
    let mut file = File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let content = Content::read(&mut file).map_err(|e| format!("{}: not a GGUF file: {e}", input.display()))?;
    from_metadata(&content.metadata)
}

/// Builds the tokenizer from GGUF metadata.
pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Tokenizer, String> {
    let get = |k: &str| md.get(k).ok_or_else(|| format!("GGUF metadata has no {k}"));
    let model = get("tokenizer.ggml.model")?.to_string().map_err(|e| e.to_string())?.clone();
    let tokens = strings(get("tokenizer.ggml.tokens")?)?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v.to_vec().map_err(|e| e.to_string())?.iter().map(|t| t.to_i32().map_err(|e| e.to_string())).collect::<Result<_, _>>()?,
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(format!("{} token types for {} tokens", types.len(), tokens.len()));
    }
    let mut tokenizer = match model.as_str() {
        "gpt2" => byte_level_bpe(md, &tokens)?,
        "llama" => sentencepiece_bpe(md, &tokens)?,
        other => {
            return Err(format!("tokenizer model {other:?} is not supported yet (supported: \"gpt2\", byte-level BPE; \"llama\", SentencePiece BPE)"))
        }
    };

    // Special tokens: llama.cpp matches control, user-defined and unknown tokens in the text
    // as whole tokens; control and unknown ones are left out of decoded text.
    let of_type = |wanted: &[i32], special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| wanted.contains(t))
            .map(|(tok, _)| AddedToken::from(tok.clone(), special).normalized(false))
            .collect()
    };
    tokenizer.add_special_tokens(of_type(&[TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN], true)).map_err(|e| format!("special tokens: {e}"))?;
    tokenizer.add_tokens(of_type(&[TOKEN_TYPE_USER_DEFINED], false)).map_err(|e| format!("user-defined tokens: {e}"))?;
    Ok(tokenizer)
}

/// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the pre-tokenizer of
/// `tokenizer.ggml.pre`.
fn byte_level_bpe(md: &HashMap<String, Value>, tokens: &[String]) -> Result<Tokenizer, String> {
    let pre = match md.get("tokenizer.ggml.pre") {
        Some(v) => v.to_string().map_err(|e| e.to_string())?.clone(),
        None => "default".to_string(),
    };
    let rule = pre_tokenizer_rule(&pre)?;
    let merges = strings(md.get("tokenizer.ggml.merges").ok_or("GGUF metadata has no tokenizer.ggml.merges")?)?;
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| format!("malformed merge {m:?}")))
        .collect::<Result<_, _>>()?;
    let bpe =
        BPE::builder().vocab_and_merges(vocab(tokens), merges).ignore_merges(rule.ignore_merges).build().map_err(|e| format!("building BPE: {e}"))?;

    // Byte-level mapping without a prefix space (llama.cpp never adds one for BPE).
    let byte_level = ByteLevel::new(false, true, false);
    let mut steps: Vec<PreTokenizerWrapper> = rule
        .regexes
        .iter()
        .map(|r| {
            Split::new(SplitPattern::Regex(r.to_string()), SplitDelimiterBehavior::Isolated, false)
                .map(PreTokenizerWrapper::Split)
                .map_err(|e| format!("pre-tokenizer regex {r:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    steps.push(PreTokenizerWrapper::ByteLevel(byte_level));

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(steps))));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer.with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(false, true, true))));
    Ok(tokenizer)
}

/// SentencePiece BPE (`tokenizer.ggml.model = "llama"`), as llama.cpp's SPM tokenizer runs
/// it: text with spaces as `▁` (and one prepended unless `add_space_prefix` is false),
/// pieces merged best score first, unknown characters as byte tokens.
fn sentencepiece_bpe(md: &HashMap<String, Value>, tokens: &[String]) -> Result<Tokenizer, String> {
    let scores: Vec<f32> = md
        .get("tokenizer.ggml.scores")
        .ok_or("GGUF metadata has no tokenizer.ggml.scores (needed by a SentencePiece vocabulary)")?
        .to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.to_f32().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if scores.len() != tokens.len() {
        return Err(format!("{} scores for {} tokens", scores.len(), tokens.len()));
    }
    let add_space_prefix = md.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.to_bool().ok()).unwrap_or(true);
    let unk = md.get("tokenizer.ggml.unknown_token_id").and_then(|v| v.to_u32().ok()).and_then(|id| tokens.get(id as usize).cloned());

    let vocab = vocab(tokens);
    let mut builder = BPE::builder().vocab_and_merges(vocab.clone(), merges_from_scores(tokens, &scores, &vocab)).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(|e| format!("building BPE: {e}"))?;

    let replace = |from: &str, to: &str| Replace::new(from, to).map_err(|e| e.to_string());
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new("▁".into())));
    }
    normalizers.push(NormalizerWrapper::Replace(replace(" ", "▁")?));
    let mut decoders =
        vec![DecoderWrapper::Replace(replace("▁", " ")?), DecoderWrapper::ByteFallback(ByteFallback::new()), DecoderWrapper::Fuse(Fuse::new())];
    if add_space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(normalizers)))).map_err(|e| format!("normalizer: {e}"))?;
    tokenizer.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(decoders))));
    Ok(tokenizer)
}

/// BPE merges that reproduce SentencePiece's merge-by-score: every split of a piece into
/// two pieces of the vocabulary is a merge, ranked by the piece's score, best first (ties
/// by the ids of the halves), as Hugging Face's `SentencePieceExtractor` derives them.
fn merges_from_scores(tokens: &[String], scores: &[f32], vocab: &tokenizers::models::bpe::Vocab) -> Vec<(String, String)> {
    let mut merges: Vec<(u32, u32, f32)> = Vec::new();
    for (piece, &score) in tokens.iter().zip(scores) {
        let start = merges.len();
        for (i, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(i);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                merges.push((li, ri, score));
            }
        }
        merges[start..].sort_by_key(|&(l, r, _)| (l, r));
    }
    // Stable: equal scores keep the order above.
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    merges.into_iter().map(|(l, r, _)| (tokens[l as usize].clone(), tokens[r as usize].clone())).collect()
}

fn vocab(tokens: &[String]) -> tokenizers::models::bpe::Vocab {
    tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect()
}

/// How llama.cpp pre-tokenizes one family of byte-level BPE vocabularies.
struct PreTokenizerRule {
    /// `tokenizer.ggml.pre` values that select it.
    names: &'static [&'static str],
    /// Split regexes, applied one after the other (each splits the pieces of the last).
    regexes: &'static [&'static str],
    /// A piece that is itself in the vocabulary is one token, whatever the merges say
    /// (Llama 3's tokenizer.json sets `ignore_merges`).
    ignore_merges: bool,
}

/// GPT-2's split regex, which several families share.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// The pre-tokenizers of llama.cpp's `llama-vocab.cpp` (llama-cpp-python 0.3.36), for the
/// `tokenizer.ggml.pre` names of the families this service runs or that share their rules.
const PRE_TOKENIZERS: &[PreTokenizerRule] = &[
    PreTokenizerRule {
        names: &["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "dbrx", "smaug-bpe"],
        regexes: &[r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
        ignore_merges: true,
    },
    PreTokenizerRule {
        names: &["qwen2", "deepseek-r1-qwen", "stablelm2", "hunyuan"],
        regexes: &[r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
        ignore_merges: false,
    },
    PreTokenizerRule {
        names: &["qwen35"],
        regexes: &[r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
        ignore_merges: false,
    },
    PreTokenizerRule {
        names: &["deepseek-llm"],
        // Non-ASCII characters escaped: the class has ranges whose ends have canonical
        // equivalents that editors silently normalize, which inverts the range.
        regexes: &[
            "[\\r\\n]",
            "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
            "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
            "\\s+$",
            "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
            "\\p{N}+",
        ],
        ignore_merges: false,
    },
    PreTokenizerRule {
        names: &["deepseek-coder"],
        regexes: &[r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"],
        ignore_merges: false,
    },
    PreTokenizerRule {
        names: &["falcon"],
        regexes: &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2_REGEX, r"[0-9][0-9][0-9]"],
        ignore_merges: false,
    },
    PreTokenizerRule {
        // Digits one by one, then GPT-2's regex.
        names: &["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"],
        regexes: &[r"\p{N}", GPT2_REGEX],
        ignore_merges: false,
    },
    PreTokenizerRule {
        names: &["gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais"],
        regexes: &[GPT2_REGEX],
        ignore_merges: false,
    },
    PreTokenizerRule {
        // What llama.cpp runs for `default` or no `pre` at all (it warns that quality
        // suffers: such a file predates pre-tokenizer names and should be regenerated).
        names: &["default"],
        regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"],
        ignore_merges: false,
    },
];

/// The rule llama.cpp applies for a `tokenizer.ggml.pre` name.
fn pre_tokenizer_rule(pre: &str) -> Result<&'static PreTokenizerRule, String> {
    PRE_TOKENIZERS.iter().find(|r| r.names.contains(&pre)).ok_or_else(|| {
        let known: Vec<&str> = PRE_TOKENIZERS.iter().flat_map(|r| r.names.iter().copied()).collect();
        format!(
            "pre-tokenizer {pre:?} (tokenizer.ggml.pre) is not supported yet; supported: {}. \
             Ship the model's tokenizer.json beside the GGUF to use it anyway",
            known.join(", ")
        )
    })
}

fn strings(v: &Value) -> Result<Vec<String>, String> {
    v.to_vec().map_err(|e| e.to_string())?.iter().map(|s| s.to_string().cloned().map_err(|e| e.to_string())).collect()
}
