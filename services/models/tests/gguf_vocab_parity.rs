//! Our GGUF tokenizer converter against llama.cpp's own tokenizer tests.
//!
//! llama.cpp ships, for each family of vocabularies, a GGUF holding only the tokenizer
//! (`ggml-vocab-*.gguf`), test inputs (`.inp`: accents, CJK, emoji, runs of spaces and
//! newlines, digits, code, apostrophes) and the ids its tokenizer must give for them
//! (`.out`, checked in llama.cpp's CI by `test-tokenizer-0`; we re-checked them against
//! llama-cpp-python 0.3.36 with `tests/scripts/llama_cpp_vocab_check.py`). Each case here
//! builds the tokenizer from the GGUF metadata alone, exactly as the text-generation
//! service does when no `tokenizer.json` ships beside the model, and must give llama.cpp's
//! ids for every input.
//!
//! Needs `mmc models fetch --profile test-assets` (model `llama-cpp-vocabs`).

use mmc_models::{gguf_tokenizer, ModelStore};

/// Separator of the `.inp` files (llama.cpp's `convert_hf_to_gguf_update.py`).
const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// Checks every test input of one vocabulary; reports all mismatches at once.
fn check(vocab: &str) {
    let store = ModelStore::from_env();
    let file = |ext: &str| {
        store
            .file("llama-cpp-vocabs", &format!("ggml-vocab-{vocab}.{ext}"))
            .unwrap_or_else(|e| panic!("{e} (run `mmc models fetch --profile test-assets`)"))
    };
    let tokenizer = gguf_tokenizer::from_gguf(&file("gguf")).unwrap_or_else(|e| panic!("{vocab}: {e}"));
    let inputs = std::fs::read_to_string(file("gguf.inp")).unwrap();
    let outputs = std::fs::read_to_string(file("gguf.out")).unwrap();
    let inputs: Vec<&str> = inputs.split(SEPARATOR).collect();
    let outputs: Vec<&str> = outputs.split('\n').collect();
    assert!(inputs.len() >= 40 && outputs.len() >= inputs.len(), "{vocab}: {} inputs, {} outputs", inputs.len(), outputs.len());

    let mut failures = Vec::new();
    for (text, expected) in inputs.iter().zip(&outputs) {
        let expected: Vec<u32> = expected.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let got = tokenizer.encode(*text, false).unwrap_or_else(|e| panic!("{vocab}: encoding {text:?}: {e}"));
        if got.get_ids() != expected.as_slice() {
            failures.push(format!("  {text:?}\n    ours:      {:?}\n    llama.cpp: {expected:?}", got.get_ids()));
        }
    }
    println!("{vocab}: {} of {} inputs tokenize as llama.cpp does", inputs.len() - failures.len(), inputs.len());
    assert!(failures.is_empty(), "{vocab}: {} input(s) differ from llama.cpp:\n{}", failures.len(), failures.join("\n"));
}

// Byte-level BPE, one test per `tokenizer.ggml.pre` rule.

/// Llama 3 (`llama-bpe`): digits in threes, `ignore_merges`.
#[test]
fn llama3_bpe() {
    check("llama-bpe");
}

/// Qwen2 and Qwen3 (`qwen2`): digits one by one.
#[test]
fn qwen2() {
    check("qwen2");
}

/// Qwen3.5 (`qwen35`): combining marks join letters.
#[test]
fn qwen35() {
    check("qwen35");
}

#[test]
fn gpt2() {
    check("gpt-2");
}

#[test]
fn mpt() {
    check("mpt");
}

/// The rule SmolLM shares: digits one by one, then GPT-2's regex.
#[test]
fn starcoder() {
    check("starcoder");
}

#[test]
fn refact() {
    check("refact");
}

#[test]
fn command_r() {
    check("command-r");
}

#[test]
fn deepseek_llm() {
    check("deepseek-llm");
}

#[test]
fn deepseek_coder() {
    check("deepseek-coder");
}

#[test]
fn falcon() {
    check("falcon");
}

// SentencePiece BPE.

/// Llama 2 / Mistral / TinyLlama vocabulary (`tokenizer.ggml.model = "llama"`).
#[test]
fn llama_spm() {
    check("llama-spm");
}

/// Phi-3: SentencePiece with chat-control tokens added.
#[test]
fn phi3_spm() {
    check("phi-3");
}
