#!/usr/bin/env python3
"""Reference EfficientNet-Lite0 forward pass in numpy, on the weights read straight from
the original legacy PyTorch checkpoint (via pth_legacy_reference.py's reader), so that
neither candle nor our converter is involved. Architecture: EfficientNet-B0 blocks
without squeeze-excitation, ReLU6, TensorFlow SAME padding, BatchNorm eps 1e-3.

The input is a synthetic 224x224 RGB image both sides can build exactly:
pixel(x, y, c) = (7x + 13y + 50c) mod 256, scaled to [-1, 1].

usage: efficientnet_lite0_reference.py CHECKPOINT.pth OUT.json   (pip install numpy)
"""
import json
import pickle
import struct
import sys
from array import array

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
import pth_legacy_reference as ref  # noqa: E402

STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


def load(path):
    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        state = ref.Unpickler(f).load()
        keys = pickle.load(f)
        storages = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            typ = next(r.storage[0] for r in state.values() if isinstance(r, ref.Ref) and r.storage[1] == key)
            code, size = ref.TYPES[typ]
            data = array(code)
            data.frombytes(f.read(numel * size))
            storages[key] = np.array(data, dtype=np.float64 if code != "q" else np.int64)
    weights = {}
    for name, r in state.items():
        if not isinstance(r, ref.Ref):
            continue
        base = storages[r.storage[1]]
        weights[name] = np.lib.stride_tricks.as_strided(
            base[r.offset:], shape=r.size, strides=[s * base.itemsize for s in r.stride]).copy()
    return weights


def same_padding(n, k, s):
    """TensorFlow SAME padding of one dimension of size n: (before, after)."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def same_pad(x, k, s):
    h, w = x.shape[1:]
    (t, b), (l, r) = same_padding(h, k, s), same_padding(w, k, s)
    return np.pad(x, ((0, 0), (t, b), (l, r)))


def conv(x, w, s):  # x [C,H,W], w [O,C,k,k]
    k = w.shape[2]
    x = same_pad(x, k, s)
    c, h, wd = x.shape
    oh, ow = (h - k) // s + 1, (wd - k) // s + 1
    cols = np.empty((c, k, k, oh, ow))
    for i in range(k):
        for j in range(k):
            cols[:, i, j] = x[:, i:i + s * oh:s, j:j + s * ow:s]
    return np.tensordot(w, cols, axes=([1, 2, 3], [0, 1, 2]))


def depthwise(x, w, s):  # w [C,1,k,k]
    k = w.shape[2]
    x = same_pad(x, k, s)
    c, h, wd = x.shape
    oh, ow = (h - k) // s + 1, (wd - k) // s + 1
    out = np.zeros((c, oh, ow))
    for i in range(k):
        for j in range(k):
            out += w[:, 0, i, j][:, None, None] * x[:, i:i + s * oh:s, j:j + s * ow:s]
    return out


def bn(x, W, p):
    scale = W[p + ".weight"] / np.sqrt(W[p + ".running_var"] + 1e-3)
    return x * scale[:, None, None] + (W[p + ".bias"] - W[p + ".running_mean"] * scale)[:, None, None]


relu6 = lambda x: np.clip(x, 0, 6)


def forward(W, x):
    x = relu6(bn(conv(x, W["_conv_stem.weight"], 2), W, "_bn0"))
    b = 0
    for repeats, k, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            p = f"_blocks.{b}."
            s, ci = (stride, cin) if r == 0 else (1, cout)
            h = x
            if expand != 1:
                h = relu6(bn(conv(h, W[p + "_expand_conv.weight"], 1), W, p + "_bn0"))
            h = relu6(bn(depthwise(h, W[p + "_depthwise_conv.weight"], s), W, p + "_bn1"))
            h = bn(conv(h, W[p + "_project_conv.weight"], 1), W, p + "_bn2")
            x = h + x if (s == 1 and ci == cout) else h
            b += 1
    x = relu6(bn(conv(x, W["_conv_head.weight"], 1), W, "_bn1"))
    pooled = x.mean(axis=(1, 2))
    return W["_fc.weight"] @ pooled + W["_fc.bias"]


def main(path, out):
    W = load(path)
    y, x_, c = np.meshgrid(np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    pixels = ((7 * x_ + 13 * y + 50 * c) % 256).astype(np.float64)  # HWC
    x = (pixels / 127.5 - 1.0).transpose(2, 0, 1)
    logits = forward(W, x)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    json.dump({"input": "pixel(x,y,c) = (7x + 13y + 50c) mod 256", "logits": logits.tolist(),
               "probs": probs.tolist(), "top5": np.argsort(-probs)[:5].tolist()}, open(out, "w"))
    print("top5", np.argsort(-probs)[:5].tolist(), "max prob", probs.max())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
