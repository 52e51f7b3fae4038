#!/usr/bin/env python3
"""Reference outputs of llama.cpp (llama-cpp-python) on the bundled SmolLM2 GGUF.

Writes tests/fixtures/smollm2.llama_cpp.json: token ids of a set of strings, chat renders
by Jinja2 (as llama-cpp-python and Hugging Face render the GGUF's template) and greedy
continuations with the top logits of the first step. The textgen tests compare our engine
with these. Run once when the model or the cases change; the output is committed.

    python3 -m venv /tmp/llamavenv
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        /tmp/llamavenv/bin/pip install llama-cpp-python==0.3.36
    /tmp/llamavenv/bin/python tests/scripts/llama_cpp_reference.py models/smollm2-135m-instruct-q4_1/model.gguf
"""
import json
import sys

import jinja2.sandbox
import llama_cpp
import numpy as np

TOKENIZE = [
    "system",
    "Hello, world!",
    "The meeting is on 2026-11-28 at 14:30.",
    "  leading spaces and trailing  ",
    "line one\nline two\n\n\ttabbed",
    "naïve café — “quotes” and emoji 🚀",
    "<|im_start|>user\nHi<|im_end|>\n",
    "def f(x):\n    return x ** 2  # square",
    "1234567890 123 4.56",
    "Action item: Alice will send the budget by Friday.",
]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You summarize meetings."},
        {"role": "user", "content": "Bob: we ship on Monday. Alice: I will write the notes."},
    ],
]

GREEDY_PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nName three fruits.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
]
GREEDY_TOKENS = 24


def main(path):
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False,
        # f32 KV cache, as candle keeps it (llama.cpp defaults to f16).
        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    out = {"model": path.split("/")[-2], "llama_cpp_python": llama_cpp.__version__, "n_tokens": GREEDY_TOKENS}

    out["tokenize"] = [
        {"text": t, "ids": llm.tokenize(t.encode(), add_bos=True, special=True)} for t in TOKENIZE
    ]

    template = llm.metadata["tokenizer.chat_template"]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(template)
    out["chat"] = [
        {
            "messages": m,
            "rendered": tpl.render(messages=m, add_generation_prompt=True, bos_token="", eos_token=""),
        }
        for m in CHATS
    ]

    eos = llm.token_eos()
    greedy = []
    for prompt in GREEDY_PROMPTS:
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(tokens)
        generated, first_top, top2 = [], None, []
        for step in range(GREEDY_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            if step == 0:
                top = np.argsort(-logits)[:10]
                first_top = [[int(i), float(logits[i])] for i in top]
            tok = int(np.argmax(logits))
            # The two best candidates of each step: where greedy decoding diverges between
            # kernels, it must be at a near tie.
            best2 = np.argsort(-logits)[:2]
            top2.append([[int(i), float(logits[i])] for i in best2])
            if tok == eos:
                break
            generated.append(tok)
            llm.eval([tok])
        greedy.append({"prompt": prompt, "prompt_ids": tokens, "generated": generated, "first_top_logits": first_top, "top2": top2})
    out["greedy"] = greedy
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
