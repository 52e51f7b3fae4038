#!/usr/bin/env python3
"""llama.cpp's speed on a GGUF, the reference for `tests/bench/textgen.sh`.

Prints JSON: prefill tokens/s (one pass over a prompt of --prompt-tokens tokens) and decode
tokens/s (greedy, --decode-tokens tokens, one at a time), with --threads threads.
"""
import argparse
import ctypes
import json
import time

import llama_cpp
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--build", default="", help="how this llama.cpp was built, printed with the figures")
    a = ap.parse_args()
    llm = llama_cpp.Llama(model_path=a.gguf, n_ctx=2048, n_threads=a.threads, n_threads_batch=a.threads,
                          n_batch=a.prompt_tokens, verbose=False)
    n_vocab = llm.n_vocab()
    words = llm.tokenize(b"The quarterly planning meeting covered budgets, hiring and the launch. ", add_bos=False)
    prompt = (words * (a.prompt_tokens // len(words) + 1))[: a.prompt_tokens]

    def last_logits():
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))

    best = {"prefill": 0.0, "decode": 0.0}
    for _ in range(3):  # best of three, as for ours
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        best["prefill"] = max(best["prefill"], len(prompt) / (time.perf_counter() - t))
        counting = llm.tokenize(b"1, 2, 3, 4, 5, 6, 7, 8,", add_bos=False)
        llm.reset()
        llm.eval(counting)
        t = time.perf_counter()
        for _ in range(a.decode_tokens):
            tok = int(np.argmax(last_logits()))
            llm.eval([tok])
        best["decode"] = max(best["decode"], a.decode_tokens / (time.perf_counter() - t))
    build = f", {a.build}" if a.build else ""
    print(json.dumps({"engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}{build})", "threads": a.threads,
                      "prefill_tokens_per_s": best["prefill"], "decode_tokens_per_s": best["decode"]}))


if __name__ == "__main__":
    main()
