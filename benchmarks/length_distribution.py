"""Response-length distributions side by side: any length traces, one PNG.

    python benchmarks/length_distribution.py --out docs/length_distribution.png \
        "built-in model, default workload=runs/default_workload_lengths.jsonl" \
        "Vicuna-7B on Alpaca=../shared/data/alpaca-vicuna-lengths.jsonl"

Each argument is LABEL=TRACE[@LIMIT] (a trace `seqsched lengths collect` writes, or the
paper's format; LIMIT, default 512, is the max_new_tokens it was collected with);
``--field`` picks the length (default L_t0.0, greedy). The legend gives each trace's mean,
median, p90 and the share of answers cut at the limit (drawn as a dashed line).
"""

from __future__ import annotations

import argparse
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from seqsched.data.traces import read_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", nargs="+", help="LABEL=TRACE[@LIMIT]")
    parser.add_argument("--field", default="L_t0.0")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    print(f"{'trace':45} {'n':>6} {'mean':>7} {'median':>7} {'p90':>6} {'limit':>6} {'at limit':>9}")
    top = 0
    for item in args.traces:
        label, _, rest = item.partition("=")
        path, _, limit_text = rest.partition("@")
        limit = int(limit_text) if limit_text else 512
        lengths = np.array(read_trace(path).actual(args.field))
        at_limit = float((lengths >= limit).mean())
        stats = (
            f"mean {lengths.mean():.0f}, median {statistics.median(lengths):.0f}, "
            f"p90 {np.percentile(lengths, 90):.0f}, {100 * at_limit:.0f}% at limit {limit}"
        )
        # bins end at the limit, so answers cut there sit in the last bin, left of the dashed line
        color = ax.hist(
            np.minimum(lengths, limit),
            bins=np.linspace(0, limit, limit // 16 + 1),
            density=True,
            alpha=0.5,
            label=f"{label}: {stats}",
        )[2][0].get_facecolor()
        ax.axvline(limit, color=color, linestyle="--", linewidth=1, alpha=0.9)
        top = max(top, limit)
        print(
            f"{label:45} {len(lengths):6d} {lengths.mean():7.1f} {statistics.median(lengths):7.0f} "
            f"{np.percentile(lengths, 90):6.0f} {limit:6d} {100 * at_limit:8.1f}%"
        )
    ax.set_xlim(0, top * 1.05)
    ax.set_xlabel(f"response length ({args.field}, decode steps)")
    ax.set_ylabel("density")
    ax.set_title("Response length distributions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
