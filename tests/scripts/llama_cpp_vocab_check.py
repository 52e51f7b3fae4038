#!/usr/bin/env python3
"""Checks that llama.cpp itself (llama-cpp-python) gives the ids in llama.cpp's tokenizer
test files, for the vocabularies `services/models/tests/gguf_vocab_parity.rs` uses.

The `.out` files come with llama.cpp (its CI checks them with `test-tokenizer-0`); this
confirms them against the llama.cpp release we compare with everywhere else (0.3.36).

    /path/to/llamavenv/bin/python tests/scripts/llama_cpp_vocab_check.py models/llama-cpp-vocabs
"""
import sys

import llama_cpp

VOCABS = ["llama-bpe", "qwen2", "qwen35", "llama-spm", "phi-3", "gpt-2", "mpt", "starcoder", "refact",
          "command-r", "deepseek-llm", "deepseek-coder", "falcon"]


def main(directory):
    failed = 0
    for name in VOCABS:
        base = f"{directory}/ggml-vocab-{name}.gguf"
        inputs = open(base + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
        outputs = open(base + ".out", encoding="utf-8").read().split("\n")
        llm = llama_cpp.Llama(base, vocab_only=True, verbose=False)
        bad = 0
        for text, expected in zip(inputs, outputs):
            got = llm.tokenize(text.encode(), add_bos=False, special=False)
            if got != [int(x) for x in expected.split()]:
                bad += 1
                print(f"{name}: {text!r}: llama.cpp {got}, file {expected}")
        print(f"{name}: {len(inputs) - bad} of {len(inputs)} match")
        failed += bad
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1])
