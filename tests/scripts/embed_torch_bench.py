#!/usr/bin/env python3
"""PyTorch side of the latent-service benchmark (tests/bench/embed.sh): texts/s of
all-MiniLM-L6-v2 and images/s of EfficientNet-Lite0, on the same weights files the service
loads, with the same inputs, batch sizes and thread count.

- MiniLM: `transformers`' BertModel from the model directory, mean pooling over the
  attention mask, L2 normalisation (what sentence-transformers does for this model).
- EfficientNet-Lite0: the architecture written in torch (B0 blocks without
  squeeze-excitation, ReLU6, TensorFlow SAME padding, BatchNorm eps 1e-3) over the
  service's safetensors; checked against the committed numpy reference logits first, so the
  timing is of a faithful model.

Writes the texts it used to TEXTS_OUT (one per line) and prints one JSON line of results.

usage: embed_torch_bench.py MODELS_DIR TEXTS_OUT --threads N [--rounds R]
       (pip install torch transformers safetensors numpy)
"""
import argparse
import json
import math
import os
import pathlib
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel

sys.path.insert(0, os.path.dirname(__file__))
from efficientnet_lite0_reference import STAGES, same_padding  # noqa: E402  (the numpy reference's layout)

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEXT_BATCH = 32
IMAGE_BATCH = 16


def texts(n=256):
    """Caption- and meeting-like sentences of varied length (about 8 to 40 tokens)."""
    subjects = ["a red bike", "the tabby cat", "two engineers", "a cup of espresso", "the launch team",
                "Kevin", "Olivia and her manager", "a rocket on the pad"]
    verbs = ["is leaning against", "will review", "sleeps next to", "was placed beside", "agreed to finish",
             "talked about", "is waiting near", "photographed"]
    objects = ["a brick wall", "the quarterly budget", "the sofa", "the conference room booking",
               "the new website before Friday", "an old wooden table in the kitchen", "the March product launch",
               "a field of yellow flowers under a cloudy sky"]
    out = []
    for i in range(n):
        s = f"{subjects[i % 8]} {verbs[(i // 8) % 8]} {objects[(i * 3) % 8]}"
        out.append(" ".join([s] * (1 + i % 3)) + ".")
    return out


class Lite0(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def conv(self, x, weight, stride, groups=1):
        k = weight.shape[2]
        h, wd = x.shape[2:]
        (t, b), (l, r) = same_padding(h, k, stride), same_padding(wd, k, stride)
        return F.conv2d(F.pad(x, (l, r, t, b)), weight, stride=stride, groups=groups)

    def bn(self, x, p):
        w = self.w
        return F.batch_norm(x, w[p + ".running_mean"], w[p + ".running_var"], w[p + ".weight"], w[p + ".bias"],
                            training=False, eps=1e-3)

    def forward(self, x):
        w, relu6 = self.w, lambda t: torch.clamp(t, 0, 6)
        x = relu6(self.bn(self.conv(x, w["_conv_stem.weight"], 2), "_bn0"))
        b = 0
        for repeats, k, stride, expand, cin, cout in STAGES:
            for r in range(repeats):
                p = f"_blocks.{b}."
                s, ci = (stride, cin) if r == 0 else (1, cout)
                h = x
                if expand != 1:
                    h = relu6(self.bn(self.conv(h, w[p + "_expand_conv.weight"], 1), p + "_bn0"))
                dw = w[p + "_depthwise_conv.weight"]
                h = relu6(self.bn(self.conv(h, dw, s, groups=dw.shape[0]), p + "_bn1"))
                h = self.bn(self.conv(h, w[p + "_project_conv.weight"], 1), p + "_bn2")
                x = h + x if (s == 1 and ci == cout) else h
                b += 1
        x = relu6(self.bn(self.conv(x, w["_conv_head.weight"], 1), "_bn1"))
        return F.linear(x.mean(dim=(2, 3)), w["_fc.weight"], w["_fc.bias"])


def synthetic_image():
    """pixel(x, y, c) = (7x + 13y + 50c) mod 256, scaled to [-1, 1], as the reference."""
    y, x, c = torch.meshgrid(torch.arange(224), torch.arange(224), torch.arange(3), indexing="ij")
    pixels = ((7 * x + 13 * y + 50 * c) % 256).float()
    return (pixels / 127.5 - 1.0).permute(2, 0, 1)


def best_rate(items, run, rounds):
    run()  # warm-up
    best = math.inf
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return items / best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("texts_out")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = pathlib.Path(args.models)

    corpus = texts()
    pathlib.Path(args.texts_out).write_text("\n".join(corpus) + "\n")
    minilm = models / "all-minilm-l6-v2"
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    bert = BertModel.from_pretrained(minilm).eval()

    def embed_texts():
        with torch.inference_mode():
            for i in range(0, len(corpus), TEXT_BATCH):
                enc = tokenizer(corpus[i:i + TEXT_BATCH], padding=True, truncation=True, max_length=256, return_tensors="pt")
                hidden = bert(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    texts_per_s = best_rate(len(corpus), embed_texts, args.rounds)

    weights = load_file(models / "efficientnet-lite0" / "model.safetensors")
    net = Lite0({k: v.float() for k, v in weights.items()}).eval()
    image = synthetic_image()
    reference = json.loads((ROOT / "fixtures" / "efficientnet-lite0.logits.json").read_text())["logits"]
    with torch.inference_mode():
        logits = net(image.unsqueeze(0))[0]
    diff = (logits - torch.tensor(reference)).abs().max().item()
    assert diff < 1e-3, f"the torch EfficientNet-Lite0 differs from the reference logits by {diff}"
    n_images = 64
    batch = image.unsqueeze(0).repeat(IMAGE_BATCH, 1, 1, 1)

    def classify():
        with torch.inference_mode():
            for _ in range(n_images // IMAGE_BATCH):
                F.softmax(net(batch), dim=-1)

    images_per_s = best_rate(n_images, classify, args.rounds)
    print(json.dumps({
        "texts_per_s": texts_per_s, "images_per_s": images_per_s, "threads": args.threads,
        "text_batch": TEXT_BATCH, "image_batch": IMAGE_BATCH, "texts": len(corpus), "images": n_images,
        "efficientnet_logits_max_abs_diff": diff, "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }))


if __name__ == "__main__":
    main()
