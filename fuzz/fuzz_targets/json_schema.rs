//! JSON-schema compilation (`mmc_llm::engine::constraint`): a client's `json_schema` or
//! `response_format` becomes a token constraint for the bundled model's vocabulary, and
//! the first few steps are taken. Any schema must compile or be refused.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mmc_llm::engine::constraint::ConstraintFactory;

/// The bundled text model's vocabulary (`MMC_MODELS_DIR`, else the repository's models/).
fn factory() -> &'static ConstraintFactory {
    static FACTORY: OnceLock<ConstraintFactory> = OnceLock::new();
    FACTORY.get_or_init(|| {
        let dir = std::env::var_os("MMC_MODELS_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../models").into());
        let path = dir.join("smollm2-135m-instruct-q4_1/tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("{}: {e} (mmc models fetch)", path.display()));
        let eos = tokenizer.token_to_id("<|im_end|>").unwrap_or(2);
        ConstraintFactory::new(&tokenizer, &[eos]).expect("constraint factory")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(schema) = std::str::from_utf8(data) else { return };
    if let Ok(mut constraint) = factory().json_schema(schema) {
        // A few steps, taking the first allowed token each time.
        for _ in 0..4 {
            let Ok(allowed) = constraint.allowed() else { return };
            let Some(token) = (0..49_152).find(|&t| allowed.contains(t)) else { return };
            if constraint.consume(token).is_err() || constraint.is_finished() {
                return;
            }
        }
    }
});
