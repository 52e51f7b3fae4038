//! The CTranslate2 to whisper.cpp converter (`mmc_fetch::convert::ct2_whisper`), which
//! reads a downloaded `model.bin` and `vocabulary.txt`. The first input byte says how many
//! of the next bytes are the vocabulary; the rest is the model.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let (vocabulary, model) = rest.split_at((n as usize).min(rest.len()));
    let vocabulary = String::from_utf8_lossy(vocabulary);
    let _ = mmc_fetch::convert::ct2_whisper::convert_bytes(model, &vocabulary, mmc_fetch::convert::ct2_whisper::Weights::AsStored, &mut std::io::sink());
});
