"""Summary of `tests/bench/speech.sh`: each figure's median and range over the runs, the
ratios per run (ours against the references measured in the same run), and the CPU.

    speech_bench_summary.py WORK_DIR RUNS WEIGHTS MODEL THREADS
"""
import json, sys

from bench_common import cpu_line, print_medians

work, runs, weights, model, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
load = lambda name, r: json.load(open(f"{work}/{name}.{r}.json"))
rows = []
for r in range(1, runs + 1):
    ours, wcpp, fw8, fwd = load("ours", r), load("wcpp", r), load("fw_int8", r), load("fw_default", r)
    rows.append({
        "ours, 1 stream, default shape (RTF)": ours["one_stream_rtf"]["default"],
        "ours, 1 stream, 1 state x all threads (RTF)": ours["one_stream_rtf"]["one_state"],
        "ours, 2 streams (audio s per s)": ours["throughput"]["2"],
        "ours, 4 streams (audio s per s)": ours["throughput"]["4"],
        "whisper.cpp alone, same file (RTF)": wcpp["rtf"],
        "faster-whisper int8 (RTF)": fw8["rtf"],
        "faster-whisper default/f32 (RTF)": fwd["rtf"],
        "1 stream vs faster-whisper int8 (x)": fw8["rtf"] / ours["one_stream_rtf"]["default"],
        "1 stream vs faster-whisper f32 (x)": fwd["rtf"] / ours["one_stream_rtf"]["default"],
        "2 streams vs faster-whisper int8 one at a time (x)": ours["throughput"]["2"] * fw8["rtf"],
        "2 streams vs faster-whisper f32 one at a time (x)": ours["throughput"]["2"] * fwd["rtf"],
        "1 stream, 1 state vs whisper.cpp alone (x)": wcpp["rtf"] / ours["one_stream_rtf"]["one_state"],
    })
    try:  # FULL_WINDOW=1: the pipeline with Whisper's 30 s window for every chunk
        full = load("ours_full", r)
    except FileNotFoundError:
        continue
    rows[-1].update({
        "ours, full window, 1 stream, default shape (RTF)": full["one_stream_rtf"]["default"],
        "ours, full window, 2 streams (audio s per s)": full["throughput"]["2"],
        "fitted over full window, 1 stream (x)": full["one_stream_rtf"]["default"] / ours["one_stream_rtf"]["default"],
    })

print(f"\n{cpu_line()}")
print(f"model {model}, weights {weights}, {threads} threads in all, {runs} runs (median [min-max])\n")
print_medians(rows, lambda key: (lambda v: f"{v:.2f}") if "(x)" in key or "audio s" in key else (lambda v: f"{v:.4f}"))
