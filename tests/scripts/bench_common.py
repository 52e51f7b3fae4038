"""What the benchmark summaries share: the CPU line (a figure from another machine is not
this one's) and the table of medians and ranges over runs."""
import os
import statistics

FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")


def cpu_line():
    """`CPU: <model>, <n> logical cores; flags: <the SIMD flags that matter here>`."""
    cpu = {}
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        cpu.setdefault(k.strip(), v.strip())
    flags = [f for f in FLAGS if f in cpu.get("flags", "").split()]
    return f"CPU: {cpu.get('model name', '?')}, {os.cpu_count()} logical cores; flags: {' '.join(flags)}"


def print_medians(rows, fmt):
    """One line per key of `rows` (one dict per run): the median and [min-max] over the
    runs, each value formatted by `fmt(key)`."""
    width = max(len(k) for k in rows[0])
    for key in rows[0]:
        values = [row[key] for row in rows]
        f = fmt(key)
        print(f"{key:<{width}}  {f(statistics.median(values))}  [{f(min(values))}-{f(max(values))}]")
