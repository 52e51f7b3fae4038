#!/usr/bin/env python3
"""Reference sentence embeddings for all-MiniLM-L6-v2, computed with numpy alone
(HF `tokenizers` for the token ids, `safetensors` to read the weights), independent of
candle: BERT forward, mean pooling, L2 normalisation, as sentence-transformers does.
Texts longer than 256 tokens are cut to 255 tokens + [SEP] (sentence-transformers'
max_seq_length for this model).

usage: minilm_reference.py MODEL_DIR OUT.json    (pip install numpy tokenizers safetensors)
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

TEXTS = [
    "a red bike leaning against a brick wall",
    "A cat sleeps on the sofa.",
    "Quarterly revenue grew 12% year over year.",
    "Café crème, naïve résumé — ünïcödé and emoji 🚲",
    "",
    " ".join(["the meeting notes mention the budget review again"] * 40),
]
MAX_TOKENS = 256

erf = np.frompyfunc(math.erf, 1, 1)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def embed(W, cfg, ids):
    heads = cfg["num_attention_heads"]
    eps = cfg["layer_norm_eps"]
    n = len(ids)
    x = (
        W["embeddings.word_embeddings.weight"][ids]
        + W["embeddings.position_embeddings.weight"][:n]
        + W["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)
    d = x.shape[1] // heads
    for layer in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        lin = lambda t, name: t @ W[p + name + ".weight"].T + W[p + name + ".bias"]
        q = lin(x, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
        x = layer_norm(lin(ctx, "attention.output.dense") + x,
                       W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"], eps)
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)).astype(np.float64))
        x = layer_norm(lin(h, "output.dense") + x, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def main(model_dir, out):
    cfg = json.load(open(f"{model_dir}/config.json"))
    W = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_truncation()
    tok.no_padding()
    sep = tok.token_to_id("[SEP]")
    result = {"texts": TEXTS, "embeddings": [], "token_counts": [], "original_token_counts": []}
    for text in TEXTS:
        ids = tok.encode(text).ids
        original = len(ids)
        if len(ids) > MAX_TOKENS:
            ids = ids[: MAX_TOKENS - 1] + [sep]
        result["embeddings"].append([float(v) for v in embed(W, cfg, ids)])
        result["token_counts"].append(len(ids))
        result["original_token_counts"].append(original)
    json.dump(result, open(out, "w"))
    print(f"{len(TEXTS)} embeddings -> {out}; token counts {result['original_token_counts']}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
