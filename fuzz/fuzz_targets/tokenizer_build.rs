//! The tokenizer builder (`mmc_models::gguf_tokenizer::from_metadata`): a tokenizer made
//! from a GGUF's metadata (vocabulary, merges, token types), then used once.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    let Ok(content) = candle_core::quantized::gguf_file::Content::read(&mut cursor) else { return };
    if let Ok(tokenizer) = mmc_models::gguf_tokenizer::from_metadata(&content.metadata) {
        if let Ok(encoding) = tokenizer.encode("Hello, wörld! 123 <|im_start|>", true) {
            let _ = tokenizer.decode(encoding.get_ids(), false);
        }
    }
});
