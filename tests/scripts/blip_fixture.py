"""Random-weight BLIP captioning model of the exact upstream layout, and reference outputs.

Real BLIP weights cannot be had here (no registry ships them), so the hub decoder's code is
proved on a tiny model built by the reference implementation (Hugging Face `transformers`):
same module tree and tensor names as Salesforce/blip-image-captioning-*, small sizes,
random weights. Writes to tests/fixtures/blip-tiny/:
  model.safetensors  every tensor (tied ones saved separately, as candle expects)
  config.json        the transformers config (candle reads text_config / vision_config)
  reference.json     pixel values, the vision encoder's patch latents, the decoder's greedy
                     ids and per-step logits from the reference.

    python3 -m venv v && v/bin/pip install torch==2.5.1 transformers==4.46.3 safetensors
    v/bin/python tests/scripts/blip_fixture.py
"""
import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import BlipConfig, BlipForConditionalGeneration

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "blip-tiny"
STEPS = 8

torch.manual_seed(1234)
config = BlipConfig(
    text_config=dict(
        vocab_size=96, hidden_size=32, encoder_hidden_size=48, intermediate_size=64, projection_dim=32,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, hidden_act="gelu",
        layer_norm_eps=1e-12, is_decoder=True, bos_token_id=1, pad_token_id=0, sep_token_id=2, eos_token_id=2,
    ),
    vision_config=dict(
        hidden_size=48, intermediate_size=96, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-5,
    ),
    projection_dim=32,
    image_text_hidden_size=32,
)
model = BlipForConditionalGeneration(config).eval()
# Random init leaves some tensors at constants (LayerNorm 1/0, biases 0); perturb every one
# so a tensor our code skipped or misnamed changes the outputs.
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.02)

OUT.mkdir(parents=True, exist_ok=True)
state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
save_file(state, OUT / "model.safetensors")
(OUT / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True, default=str))

pixel_values = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    latents = model.vision_model(pixel_values=pixel_values).last_hidden_state  # [1, 17, 48]
    ids = [config.text_config.bos_token_id]
    step_logits = []
    for _ in range(STEPS):
        out = model.text_decoder(input_ids=torch.tensor([ids]), encoder_hidden_states=latents, return_dict=True)
        logits = out.logits[0, -1]
        step_logits.append(logits.tolist())
        ids.append(int(logits.argmax()))

(OUT / "reference.json").write_text(json.dumps({
    "pixel_values_shape": list(pixel_values.shape),
    "pixel_values": pixel_values.flatten().tolist(),
    "latents_shape": list(latents.shape),
    "latents": latents.flatten().tolist(),
    "greedy_ids": ids,
    "step_logits": step_logits,
    "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
}))
print("wrote", OUT, "greedy ids", ids)
