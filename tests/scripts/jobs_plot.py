"""Table and plot of `mmc bench jobs` results (tests/bench/jobs.sh runs it).

    python jobs_plot.py RESULTS.jsonl OUT.png [--title TEXT]

RESULTS holds one JSON line per measurement; a (job, case) measured in several runs is
reported as the median of each figure over the runs, its p50 with the range. Prints a
Markdown table (total p50/p95 per job and case, the mean time of each stage, the gateway's
own cost per hop: p50 where answers carry timings, mean otherwise) and draws one panel per
job: a bar per case, split into the mean time of each stage, with the client's p50 for the
whole call marked. The stages of indexing overlap (the gateway pipelines a stream's
images), so their sum may exceed the time per photo.
"""

import argparse
import json
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNITS = {"meeting": ("s", 1e-3)}


def median_of(runs, *path):
    values = []
    for r in runs:
        v = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            values.append(v)
    return statistics.median(values) if values else None


def merge(runs):
    """One measurement from several runs of it: the median of each figure."""
    first = runs[0]
    out = {"job": first["job"], "case": first["case"], "runs": len(runs), "n": first["n"]}
    for key in ("p50_ms", "p95_ms", "rate_per_s", "seconds_per_audio_minute"):
        out[key] = median_of(runs, key)
    out["p50_range"] = (min(r["p50_ms"] for r in runs), max(r["p50_ms"] for r in runs))
    for group in ("stages", "hops"):
        names = []
        for r in runs:
            names += [n for n in r[group] if n not in names]
        out[group] = {n: {k: median_of(runs, group, n, k) for k in ("mean_ms", "p50_ms")} for n in names}
    return out


def hop_figure(hops):
    parts = []
    for stage, h in hops.items():
        kind = "p50" if h.get("p50_ms") is not None else "mean"
        parts.append(f"{stage} {h[kind + '_ms']:.2f} ({kind})")
    return ", ".join(parts) or "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--title", default="mmc jobs")
    args = ap.parse_args()
    lines = [json.loads(line) for line in open(args.results) if line.strip()]
    grouped = {}
    for r in lines:
        grouped.setdefault((r["job"], r["case"]), []).append(r)
    rows = [merge(runs) for runs in grouped.values()]

    print(f"| job | case | p50 (range over {max(r['runs'] for r in rows)} runs) | p95 | rate | stages (mean ms) | gateway cost per hop (ms) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        stages = ", ".join(f"{k} {v['mean_ms']:.1f}" for k, v in r["stages"].items()) or "-"
        case = r["case"]
        if r["job"] == "meeting":
            case += f" ({r['seconds_per_audio_minute']:.1f} s per audio minute)"
        lo, hi = r["p50_range"]
        print(
            f"| {r['job']} | {case} | {r['p50_ms']:.1f} ms ({lo:.1f}-{hi:.1f}) | {r['p95_ms']:.1f} ms | "
            f"{r['rate_per_s']:.2f}/s | {stages} | {hop_figure(r['hops'])} |"
        )

    jobs = []
    for r in rows:
        if r["job"] not in jobs:
            jobs.append(r["job"])
    fig, axes = plt.subplots(len(jobs), 1, figsize=(10, 2.0 + 0.9 * len(rows) + 0.6 * len(jobs)), squeeze=False)
    palette = plt.get_cmap("tab10").colors
    colors = {}
    for ax, job in zip(axes[:, 0], jobs):
        unit, scale = UNITS.get(job, ("ms", 1.0))
        cases = [r for r in rows if r["job"] == job]
        for y, r in enumerate(cases):
            left = 0.0
            for stage, s in r["stages"].items():
                width = (s["mean_ms"] or 0.0) * scale
                color = colors.setdefault(stage, palette[len(colors) % len(palette)])
                shown = ax.get_legend_handles_labels()[1]
                ax.barh(y, width, left=left, color=color, label=None if stage in shown else stage)
                left += width
            total = r["p50_ms"] * scale
            ax.plot([total], [y], marker="|", markersize=18, color="black")
            ax.annotate(f"p50 {total:.1f} {unit}", (total, y), xytext=(4, 6), textcoords="offset points", fontsize=8)
        ax.set_xlim(left=0)
        ax.set_yticks(range(len(cases)), [r["case"] for r in cases])
        ax.invert_yaxis()
        per = "photo" if job == "index" else "call"
        ax.set_xlabel(f"{unit}: bars, mean per stage; mark, client p50 per {per}", fontsize=8)
        ax.set_title(job, loc="left", fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right", ncol=3)
    fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
