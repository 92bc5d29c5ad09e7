"""Response-length distributions side by side: any length traces, one PNG.

    python benchmarks/length_distribution.py --out docs/length_distribution.png \
        "built-in model, default workload=runs/default_workload_lengths.jsonl" \
        "Vicuna-7B on Alpaca=../shared/data/alpaca-vicuna-lengths.jsonl"

Each argument is LABEL=TRACE (a trace `seqsched lengths collect` writes, or the paper's
format); ``--field`` picks the length (default L_t0.0, greedy).
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
    parser.add_argument("traces", nargs="+", help="LABEL=TRACE")
    parser.add_argument("--field", default="L_t0.0")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    print(f"{'trace':45} {'n':>6} {'mean':>7} {'median':>7} {'p90':>6} {'max':>5}")
    for item in args.traces:
        label, _, path = item.partition("=")
        lengths = np.array(read_trace(path).actual(args.field))
        ax.hist(lengths, bins=np.arange(0, lengths.max() + 17, 16), density=True, alpha=0.5, label=label)
        print(
            f"{label:45} {len(lengths):6d} {lengths.mean():7.1f} {statistics.median(lengths):7.0f} "
            f"{np.percentile(lengths, 90):6.0f} {lengths.max():5d}"
        )
    ax.set_xlabel(f"response length ({args.field}, decode steps)")
    ax.set_ylabel("density")
    ax.set_title("Response length distributions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
