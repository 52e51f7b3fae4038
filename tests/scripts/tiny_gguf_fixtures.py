#!/usr/bin/env python3
"""Tiny random-weight GGUFs of each architecture the text-generation service runs, with
llama.cpp's outputs on them.

No real Qwen2, Qwen3, Gemma 3 or Phi-3 GGUF can be had from the package registries, so
these prove the loading and the model code instead: for each architecture a small model
of the exact tensor layout and metadata llama.cpp's converter writes (Q8_0 matrices, f32
norms and biases, seeded random weights) with a small vocabulary of the architecture's
tokenizer type (byte-level BPE for llama/qwen2/qwen3, SentencePiece with byte fallback for
gemma3/phi3). llama.cpp (llama-cpp-python) then gives, on the same file, the token ids of a
few strings, every logit of the first step and a greedy continuation with its top-2 logits
per step. `services/textgen/tests/architectures.rs` loads each file through our engine and
compares. The GGUFs (about 100 KB each) and `reference.json` are committed.

    tar xzf llama_cpp_python-0.3.36.tar.gz   # the sdist `mmc models fetch` pins
    /path/to/llamavenv/bin/python tests/scripts/tiny_gguf_fixtures.py \
        --gguf-py llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py tests/fixtures/tiny-gguf
"""
import argparse
import json
import os
import sys

import numpy as np

HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
FFN = 128
LAYERS = 2
# Gemma 3: six layers make one global layer after five sliding-window ones, and a window
# shorter than the prompt makes the window matter in prefill and in every decode step.
GEMMA3_LAYERS = 6
GEMMA3_WINDOW = 5
CONTEXT = 256
GREEDY_TOKENS = 16

# Strings whose ids must match llama.cpp (special-token text included, parsed as specials).
TOKENIZE = ["Hello world", " the theme", "a\n\nb  c", "naïve 🚀", "12345"]


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (byte-level BPE vocabularies)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# A few merges of frequent English pairs, so that words become multi-byte tokens.
BPE_MERGES = [("t", "h"), ("Ġ", "t"), ("h", "e"), ("th", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("e", "r"),
              ("Ġ", "w"), ("o", "r"), ("l", "l"), ("Ġth", "e"), ("Ġthe", "me")]


def bpe_vocab(specials):
    table = bytes_to_unicode()
    tokens = [table[b] for b in range(256)]
    merges = []
    for a, b in BPE_MERGES:
        if a + b in tokens:
            continue
        if a not in tokens or b not in tokens:
            # Build the halves first ("Ġth" from "Ġt" + "h").
            continue
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    types = [1] * len(tokens)
    for s in specials:
        tokens.append(s)
        types.append(3)
    return tokens, types, merges


SPM_PIECES = ["▁", "t", "h", "e", "a", "o", "n", "i", "r", "l", "d", "w", "c", "b", "H", "m", "s", "▁t", "th",
              "he", "▁th", "▁the", "er", "in", "▁a", "▁w", "or", "ll", "lo", "ld", "▁b", "▁c", "me", "▁theme"]


def spm_vocab(specials):
    tokens = ["<unk>", "<s>", "</s>"]
    types = [2, 3, 3]
    scores = [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(6)
        scores.append(0.0)
    for i, p in enumerate(SPM_PIECES):
        tokens.append(p)
        types.append(1)
        scores.append(-float(i))
    for s in specials:
        tokens.append(s)
        types.append(3)
        scores.append(0.0)
    return tokens, types, scores


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

ARCHS = {
    # name: (tokenizer type, pre-tokenizer, specials, extra per-layer tensors)
    "llama": ("gpt2", "llama-bpe", ["<|begin_of_text|>", "<|eot_id|>"]),
    "qwen2": ("gpt2", "qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "qwen3": ("gpt2", "qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "gemma3": ("llama", None, ["<start_of_turn>", "<end_of_turn>"]),
    "phi3": ("llama", None, ["<|user|>", "<|assistant|>", "<|end|>"]),
}


def build(gguf, arch, path, seed):
    rng = np.random.default_rng(seed)
    model, pre, specials = ARCHS[arch]
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    layers = GEMMA3_LAYERS if arch == "gemma3" else LAYERS
    w.add_block_count(layers)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-6)
    # Gemma 3's global layers use a base of 1e6, its sliding ones 1e4 (llama.cpp's default).
    w.add_rope_freq_base(1e6 if arch == "gemma3" else 10000.0)
    w.add_rope_dimension_count(HEAD_DIM)
    if arch in ("qwen3", "gemma3"):
        w.add_key_length(HEAD_DIM)
        w.add_value_length(HEAD_DIM)
    if arch == "gemma3":
        w.add_sliding_window(GEMMA3_WINDOW)
        # Gemma 3 4B and larger: linear RoPE scaling by 8 on the global layers.
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(8.0)

    w.add_tokenizer_model(model)
    if model == "gpt2":
        tokens, types, merges = bpe_vocab(specials)
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(tokens.index(specials[0]))
        w.add_eos_token_id(tokens.index(specials[-1]))
        w.add_add_bos_token(arch == "llama")
    else:
        tokens, types, scores = spm_vocab(specials)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_scores(scores)
        w.add_bos_token_id(1)
        w.add_eos_token_id(tokens.index(specials[-1]))
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        if arch == "gemma3":
            w.add_add_space_prefix(False)
    if arch.startswith("qwen"):
        w.add_chat_template(CHATML)
    vocab = len(tokens)

    q8 = gguf.GGMLQuantizationType.Q8_0

    def matrix(name, rows, cols, gain=1.0):
        data = (rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(data, q8), raw_dtype=q8)

    def vector(name, n, mean=1.0, std=0.1):
        w.add_tensor(name, (mean + std * rng.standard_normal(n)).astype(np.float32))

    embd = rng.standard_normal((vocab, HIDDEN)).astype(np.float32)
    w.add_tensor("token_embd.weight", gguf.quants.quantize(embd, q8), raw_dtype=q8)
    for i in range(layers):
        p = f"blk.{i}"
        vector(f"{p}.attn_norm.weight", HIDDEN)
        if arch == "phi3":
            matrix(f"{p}.attn_qkv.weight", HIDDEN + 2 * KV_HEADS * HEAD_DIM, HIDDEN)
        else:
            matrix(f"{p}.attn_q.weight", HEADS * HEAD_DIM, HIDDEN)
            matrix(f"{p}.attn_k.weight", KV_HEADS * HEAD_DIM, HIDDEN)
            matrix(f"{p}.attn_v.weight", KV_HEADS * HEAD_DIM, HIDDEN)
        if arch == "qwen2":
            vector(f"{p}.attn_q.bias", HEADS * HEAD_DIM, 0.0, 0.2)
            vector(f"{p}.attn_k.bias", KV_HEADS * HEAD_DIM, 0.0, 0.2)
            vector(f"{p}.attn_v.bias", KV_HEADS * HEAD_DIM, 0.0, 0.2)
        if arch in ("qwen3", "gemma3"):
            vector(f"{p}.attn_q_norm.weight", HEAD_DIM)
            vector(f"{p}.attn_k_norm.weight", HEAD_DIM)
        matrix(f"{p}.attn_output.weight", HIDDEN, HEADS * HEAD_DIM)
        if arch == "gemma3":
            vector(f"{p}.post_attention_norm.weight", HIDDEN)
        vector(f"{p}.ffn_norm.weight", HIDDEN)
        if arch == "phi3":
            matrix(f"{p}.ffn_up.weight", 2 * FFN, HIDDEN)
        else:
            matrix(f"{p}.ffn_gate.weight", FFN, HIDDEN)
            matrix(f"{p}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"{p}.ffn_down.weight", HIDDEN, FFN)
        if arch == "gemma3":
            vector(f"{p}.post_ffw_norm.weight", HIDDEN)
    if arch == "llama":
        # Llama 3.1+: per-frequency divisors of the rotary angles (`rope_freqs`), here spread
        # wide so that ignoring them shows.
        w.add_tensor("rope_freqs.weight", rng.uniform(0.5, 4.0, HEAD_DIM // 2).astype(np.float32))
    vector("output_norm.weight", HIDDEN)
    # A large output gain spreads the logits, so greedy choices are rarely near ties.
    matrix("output.weight", vocab, HIDDEN, gain=6.0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference(llama_cpp, path):
    llm = llama_cpp.Llama(model_path=path, n_ctx=CONTEXT, n_threads=2, n_batch=CONTEXT, logits_all=True,
                          verbose=False, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    out = {"tokenize": [{"text": t, "ids": llm.tokenize(t.encode(), add_bos=True, special=True)} for t in TOKENIZE]}
    prompt = llm.tokenize(b"Hello the world, the theme", add_bos=True, special=True)
    llm.reset()
    llm.eval(prompt)
    out["prompt_ids"] = prompt
    out["first_logits"] = [float(x) for x in llm.scores[llm.n_tokens - 1]]
    generated, top2 = [], []
    for _ in range(GREEDY_TOKENS):
        logits = np.array(llm.scores[llm.n_tokens - 1])
        order = np.argsort(-logits, kind="stable")
        top2.append([[int(order[0]), float(logits[order[0]])], [int(order[1]), float(logits[order[1]])]])
        generated.append(int(order[0]))
        llm.eval([int(order[0])])
    out["generated"] = generated
    out["top2"] = top2
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py directory")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    import gguf
    import llama_cpp

    os.makedirs(args.out_dir, exist_ok=True)
    refs = {"llama_cpp_python": llama_cpp.__version__, "n_tokens": GREEDY_TOKENS}
    for seed, arch in enumerate(ARCHS):
        path = os.path.join(args.out_dir, f"{arch}.gguf")
        build(gguf, arch, path, seed)
        refs[arch] = reference(llama_cpp, path)
        print(arch, os.path.getsize(path), "bytes; greedy", refs[arch]["generated"], file=sys.stderr)
    with open(os.path.join(args.out_dir, "reference.json"), "w") as f:
        json.dump(refs, f, indent=1)


if __name__ == "__main__":
    main()
