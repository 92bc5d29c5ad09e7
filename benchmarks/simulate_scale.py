"""How long the simulator takes on a large workload: N requests drawn (with replacement,
seeded) from a length trace, vanilla and oracle side by side, timed end to end.

    python benchmarks/simulate_scale.py --trace ../shared/data/alpaca-vicuna-lengths.jsonl --n 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from seqsched.data.traces import read_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    trace = read_trace(args.trace)
    picks = np.random.default_rng(args.seed).integers(0, len(trace), args.n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        with path.open("w") as f:
            for i, k in enumerate(picks):
                record = trace[int(k)]
                f.write(json.dumps({"id": f"r{i}", **record.lengths}) + "\n")
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "seqsched", "simulate", "--trace", str(path), "--strategies", "vanilla,oracle"],
            check=True,
        )
        print(f"{args.n} requests x 2 strategies simulated in {time.perf_counter() - start:.1f} s (process included)")


if __name__ == "__main__":
    main()
