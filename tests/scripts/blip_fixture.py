"""Random-weight BLIP captioning model of the exact upstream layout, and reference outputs.

Real BLIP weights cannot be had here (no registry ships them), so the hub decoder's code is
proved on a tiny model built by the reference implementation (Hugging Face `transformers`):
same module tree and tensor names as Salesforce/blip-image-captioning-*, small sizes,
random weights. Writes to tests/fixtures/blip-tiny/:
  model.safetensors  every tensor (tied ones saved separately, as candle expects)
  config.json        the transformers config (candle reads text_config / vision_config)
  reference.json     pixel values, the vision encoder's patch latents, the decoder's greedy
                     ids and per-step logits from the reference; and, under "served", the
                     same for image.png through BLIP's own image processor, with the
                     caption text BLIP's tokenizer decodes (what the served chain must say).
  tokenizer.json     a BERT WordPiece tokenizer (BLIP's kind) over a 96-token vocabulary
  image.png          a 32x32 photo-like test image (the model's input size, so resizing is
                     the identity in both implementations)

    python3 -m venv v && v/bin/pip install torch==2.5.1 transformers==4.46.3 safetensors pillow==11.1.0
    v/bin/python tests/scripts/blip_fixture.py
"""
import json
import pathlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "blip-tiny"
STEPS = 8
# The served decoder's longest caption (detailed mode), in new tokens.
SERVED_STEPS = 60
# BERT's special tokens at BLIP's ids (pad 0, bos [DEC] 1, sep 2), then caption words.
VOCAB = ["[PAD]", "[DEC]", "[SEP]", "[UNK]", "[CLS]", "[MASK]"] + """a an the of on in with and at to is are
two three man woman dog cat bike bicycle car street table cup coffee plate food red blue green white black
brown yellow small large sitting standing riding parked next near front top grass road water sky tree
building wall window room person people group photo picture rocket launch pad bench park field beach
snow shirt hat plane boat train bus bird horse sheep kitchen bed chair light flowers looking
holding eating flying ##s ##ing ##ed ##er , .""".split()
assert len(VOCAB) == 96, len(VOCAB)

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

def greedy(latents, steps, stop):
    ids = [config.text_config.bos_token_id]
    logits_per_step = []
    with torch.no_grad():
        for _ in range(steps):
            out = model.text_decoder(input_ids=torch.tensor([ids]), encoder_hidden_states=latents, return_dict=True)
            logits = out.logits[0, -1]
            logits_per_step.append(logits.tolist())
            ids.append(int(logits.argmax()))
            if ids[-1] == stop:
                break
    return ids, logits_per_step


# The served chain: a PNG through BLIP's image processor, the vision encoder and the decoder.
(OUT / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
tokenizer = BertTokenizerFast(vocab_file=str(OUT / "vocab.txt"), do_lower_case=True, bos_token="[DEC]")
tokenizer.backend_tokenizer.save(str(OUT / "tokenizer.json"))
(OUT / "vocab.txt").unlink()
rng = np.random.default_rng(7)
yy, xx = np.mgrid[0:32, 0:32]
pixels = np.stack([xx * 8, yy * 8, 255 - (xx + yy) * 4], axis=-1) + rng.integers(0, 40, size=(32, 32, 3))
Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(OUT / "image.png")
processor = BlipImageProcessor(size={"height": 32, "width": 32})
served_pixels = processor(Image.open(OUT / "image.png"), return_tensors="pt")["pixel_values"]
with torch.no_grad():
    served_latents = model.vision_model(pixel_values=served_pixels).last_hidden_state
served_ids, _ = greedy(served_latents, SERVED_STEPS, config.text_config.sep_token_id)
reference = json.loads((OUT / "reference.json").read_text())
reference["served"] = {
    "image": "image.png",
    "image_mean": processor.image_mean,
    "image_std": processor.image_std,
    "latents_shape": list(served_latents.shape[1:]),
    "latents": served_latents.flatten().tolist(),
    "greedy_ids": served_ids,
    "max_new_tokens": SERVED_STEPS,
    "text": tokenizer.decode(served_ids[1:], skip_special_tokens=True),
}
(OUT / "reference.json").write_text(json.dumps(reference))
print("wrote", OUT, "greedy ids", ids, "served text", repr(reference["served"]["text"]))
