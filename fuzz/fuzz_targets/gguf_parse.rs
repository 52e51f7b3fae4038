//! GGUF parsing (candle's reader, as the text-generation engine opens a model): a
//! downloaded or user-supplied file must parse or be refused.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(content) = candle_core::quantized::gguf_file::Content::read(&mut cursor) {
        for (name, info) in &content.tensor_infos {
            let _ = (name.len(), info.shape.elem_count(), info.offset);
        }
    }
});
