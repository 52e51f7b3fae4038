"""Random-weight CLIP of the exact upstream layout, its tokenizer, and reference outputs.

Real CLIP weights cannot be had here (no registry ships them), so the latent service's CLIP
code is proved on a tiny model built by the reference implementation (Hugging Face
`transformers`): same module tree and tensor names as openai/clip-vit-base-patch32, small
sizes, random weights, and a byte-level BPE tokenizer of CLIP's kind (`CLIPTokenizerFast`)
over a small vocabulary whose end-of-text token has the largest id, as in real CLIP (the
text tower pools at it). Writes to tests/fixtures/clip-tiny/:
  model.safetensors  every tensor
  config.json        the transformers config
  tokenizer.json     the fast tokenizer
  reference.json     token ids, projected text and image features (L2-normalised) for
                     fixed texts and for ../blip-tiny/image.png through CLIPImageProcessor

    python3 -m venv v && v/bin/pip install torch==2.5.1 transformers==4.46.3 safetensors pillow==11.1.0
    v/bin/python tests/scripts/clip_fixture.py
"""
import json
import pathlib
import tempfile

import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast
from transformers.models.clip.tokenization_clip import bytes_to_unicode

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
OUT = FIXTURES / "clip-tiny"
TEXTS = ["a photo of a cat", "a cup of coffee", "A Motorcycle!", "a rocket on its launch pad", "",
         "cats and dogs, photographed at night " * 4]

# CLIP's BPE alphabet: each byte as a character, alone and word-final, then a few merges,
# then the start and end tokens (end last: the largest id).
alphabet = list(bytes_to_unicode().values())
vocab = alphabet + [c + "</w>" for c in alphabet]
merges = [("c", "a"), ("ca", "t</w>"), ("o", "f</w>"), ("p", "h"), ("ph", "o"), ("t", "o</w>"),
          ("pho", "to</w>"), ("c", "u"), ("cu", "p</w>"), ("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>")]
vocab += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
OUT.mkdir(parents=True, exist_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    (tmp / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = CLIPTokenizerFast(vocab_file=str(tmp / "vocab.json"), merges_file=str(tmp / "merges.txt"),
                                  model_max_length=24)
tokenizer.backend_tokenizer.save(str(OUT / "tokenizer.json"))
V = len(vocab)

torch.manual_seed(4321)
config = CLIPConfig(
    text_config=dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=24, projection_dim=16,
                     bos_token_id=V - 2, eos_token_id=V - 1, pad_token_id=V - 1),
    vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       image_size=32, patch_size=8, projection_dim=16),
    projection_dim=16,
)
model = CLIPModel(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.02)
state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
state.pop("text_model.embeddings.position_ids", None)
state.pop("vision_model.embeddings.position_ids", None)
save_file(state, OUT / "model.safetensors")
(OUT / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True, default=str))

texts = []
with torch.no_grad():
    for t in TEXTS:
        enc = tokenizer(t, truncation=True, max_length=24)
        ids = enc["input_ids"]
        full = len(tokenizer(t)["input_ids"])
        features = model.get_text_features(input_ids=torch.tensor([ids]))
        features = torch.nn.functional.normalize(features, dim=-1)[0]
        texts.append({"text": t, "ids": ids, "untruncated_tokens": full, "embedding": features.tolist()})

processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
pixels = processor(Image.open(FIXTURES / "blip-tiny" / "image.png"), return_tensors="pt")["pixel_values"]
with torch.no_grad():
    image = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels), dim=-1)[0]

(OUT / "reference.json").write_text(json.dumps({
    "texts": texts,
    "image": {"file": "../blip-tiny/image.png", "embedding": image.tolist()},
    "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
}, indent=1))
print("wrote", OUT, "vocab", V, [t["ids"] for t in texts[:3]])
