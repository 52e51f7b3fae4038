//! GGUF tokenizer metadata -> Hugging Face `tokenizer.json`.
//!
//! GGUF files carry their tokenizer as metadata (`tokenizer.ggml.*`): the vocabulary,
//! the BPE merges, token types and a `pre` name for the pre-tokenizer llama.cpp uses.
//! candle's `TokenizerFromGguf` builds a byte-level pre-tokenizer that adds a prefix
//! space, which is wrong for SmolLM2 (`pre = smollm`: "system" must be one token, 9690,
//! not " system"). This converter picks the pre-tokenizer from `tokenizer.ggml.pre` the
//! way llama.cpp does and refuses names it does not know rather than guessing.

use std::{collections::HashMap, fs::File, path::Path};

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::{
    decoders::byte_level::ByteLevel as ByteLevelDecoder,
    models::bpe::BPE,
    pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence, PreTokenizerWrapper},
    processors::PostProcessorWrapper,
    AddedToken, Tokenizer,
};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
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
    let model = get("tokenizer.ggml.model")?.to_string().map_err(|e| e.to_string())?;
    if model != "gpt2" {
        return Err(format!(
            "tokenizer model {model:?} is not supported yet (only byte-level BPE, \"gpt2\")"
        ));
    }
    let pre = match md.get("tokenizer.ggml.pre") {
        Some(v) => v.to_string().map_err(|e| e.to_string())?.clone(),
        None => "default".to_string(),
    };
    let tokens = strings(get("tokenizer.ggml.tokens")?)?;
    let merges = strings(get("tokenizer.ggml.merges")?)?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|t| t.to_i32().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
        None => vec![1; tokens.len()],
    };

    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("malformed merge {m:?}"))
        })
        .collect::<Result<_, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("building BPE: {e}"))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(&pre)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer.with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(false, true, true))));

    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
        .map(|(tok, _)| AddedToken::from(tok.clone(), true))
        .collect();
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_USER_DEFINED)
        .map(|(tok, _)| AddedToken::from(tok.clone(), false))
        .collect();
    tokenizer.add_special_tokens(special).map_err(|e| format!("special tokens: {e}"))?;
    tokenizer.add_tokens(user).map_err(|e| format!("user-defined tokens: {e}"))?;
    Ok(tokenizer)
}

/// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, String> {
    // Byte-level BPE without a prefix space (llama.cpp never adds one for BPE vocabularies).
    let byte_level = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    match pre {
        // SmolLM: digits split one by one, then GPT-2's regex.
        "smollm" => Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(),
        ]))),
        "gpt-2" | "gpt2" | "default" => Ok(byte_level()),
        other => Err(format!(
            "pre-tokenizer {other:?} is not supported yet (supported: smollm, gpt-2); see tokenizer.ggml.pre"
        )),
    }
}

fn strings(v: &Value) -> Result<Vec<String>, String> {
    v.to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|s| s.to_string().cloned().map_err(|e| e.to_string()))
        .collect()
}
