//! Hugging Face `config.json` files read with the defaults `transformers` applies.
//!
//! `transformers` saves a nested config (BLIP's `text_config`, `vision_config`) with only the
//! values that differ from its class defaults in some versions, and whole in others;
//! candle-transformers' config structs need every field. Filling the gaps with the
//! reference's defaults makes both kinds of file load, with the meaning `transformers`
//! gives them. Shared by the latent service (BLIP's vision tower) and the caption service
//! (BLIP's text decoder), which read the same checkpoint, and by the latent service's CLIP.

use std::path::Path;

use serde_json::{json, Value};

/// `transformers` 4.46 defaults of `BlipConfig`, `BlipTextConfig` and `BlipVisionConfig`.
fn blip_defaults() -> Value {
    json!({
        "projection_dim": 512,
        "image_text_hidden_size": 256,
        "text_config": {
            "vocab_size": 30524, "hidden_size": 768, "encoder_hidden_size": 768, "intermediate_size": 3072,
            "projection_dim": 768, "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 512,
            "hidden_act": "gelu", "layer_norm_eps": 1e-12, "is_decoder": true,
            "bos_token_id": 30522, "pad_token_id": 0, "eos_token_id": 2, "sep_token_id": 102
        },
        "vision_config": {
            "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 512, "num_hidden_layers": 12,
            "num_attention_heads": 12, "image_size": 384, "patch_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-5
        }
    })
}

/// `transformers` 4.46 defaults of `CLIPConfig`, `CLIPTextConfig` and `CLIPVisionConfig`.
fn clip_defaults() -> Value {
    json!({
        "projection_dim": 512,
        "text_config": {
            "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "projection_dim": 512,
            "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5
        },
        "vision_config": {
            "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 512, "num_hidden_layers": 12,
            "num_attention_heads": 12, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5
        }
    })
}

/// Fills every key `defaults` has and `value` lacks (or holds null), recursively.
fn fill(value: &mut Value, defaults: &Value) {
    let (Some(obj), Some(defs)) = (value.as_object_mut(), defaults.as_object()) else { return };
    for (key, default) in defs {
        match obj.get_mut(key) {
            Some(v) if !v.is_null() => fill(v, default),
            _ => {
                obj.insert(key.clone(), default.clone());
            }
        }
    }
}

/// A BLIP checkpoint's `config.json` (in `dir`) with `transformers`' defaults filled in.
pub fn blip_config(dir: &Path) -> Result<Value, String> {
    with_defaults(dir, &blip_defaults())
}

/// A CLIP checkpoint's `config.json` (in `dir`) with `transformers`' defaults filled in.
pub fn clip_config(dir: &Path) -> Result<Value, String> {
    with_defaults(dir, &clip_defaults())
}

fn with_defaults(dir: &Path, defaults: &Value) -> Result<Value, String> {
    let path = dir.join("config.json");
    let raw = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut value: Value = serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
    if !value.is_object() {
        return Err(format!("{}: not a JSON object", path.display()));
    }
    fill(&mut value, defaults);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_transformers_defaults_and_present_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type": "blip", "text_config": {"num_attention_heads": 12, "pad_token_id": null}, "vision_config": {"image_size": 224}}"#,
        )
        .unwrap();
        let c = blip_config(dir.path()).unwrap();
        assert_eq!(c["text_config"]["num_attention_heads"], 12);
        assert_eq!(c["text_config"]["vocab_size"], 30524);
        assert_eq!(c["text_config"]["pad_token_id"], 0);
        assert_eq!(c["vision_config"]["image_size"], 224);
        assert_eq!(c["vision_config"]["patch_size"], 16);
        assert_eq!(c["image_text_hidden_size"], 256);
        std::fs::write(dir.path().join("config.json"), "[1]").unwrap();
        assert!(blip_config(dir.path()).unwrap_err().contains("not a JSON object"));
    }
}
