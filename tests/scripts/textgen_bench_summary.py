"""Summary of `tests/bench/textgen.sh`: each figure's median and range over the runs, the
ratios ours/llama.cpp per run (both measured in the same run), and the CPU.

    textgen_bench_summary.py WORK_DIR RUNS GGUF THREADS
"""
import glob
import json
import os
import sys

from bench_common import cpu_line, print_medians

work, runs, gguf, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
refs = sorted({os.path.basename(p).split(".")[0][len("ref-"):] for p in glob.glob(f"{work}/ref-*.1.json")})
rows = []
for r in range(1, runs + 1):
    ours = json.load(open(f"{work}/ours.{r}.json"))
    row = {
        "ours, prefill (tokens/s)": ours["prefill_tokens_per_s"],
        "ours, decode, 1 stream (tokens/s)": ours["decode_tokens_per_s"],
    }
    for a in ours["aggregate"]:
        row[f"ours, {a['streams']} streams, all tokens (tokens/s)"] = a["tokens_per_s"]
        row[f"ours, {a['streams']} streams, decode phase (tokens/s)"] = a["decode_tokens_per_s"]
    for name in refs:
        ref = json.load(open(f"{work}/ref-{name}.{r}.json"))
        row[f"llama.cpp {name}, prefill (tokens/s)"] = ref["prefill_tokens_per_s"]
        row[f"llama.cpp {name}, decode (tokens/s)"] = ref["decode_tokens_per_s"]
        row[f"prefill, ours / llama.cpp {name} (x)"] = ours["prefill_tokens_per_s"] / ref["prefill_tokens_per_s"]
        row[f"decode, ours / llama.cpp {name} (x)"] = ours["decode_tokens_per_s"] / ref["decode_tokens_per_s"]
    rows.append(row)

print(f"\n{cpu_line()}")
print(f"{os.path.basename(os.path.dirname(gguf))}, {threads} threads, {runs} runs (median [min-max])\n")
print_medians(rows, lambda key: (lambda v: f"{v:.2f}") if "(x)" in key else (lambda v: f"{v:.1f}"))
