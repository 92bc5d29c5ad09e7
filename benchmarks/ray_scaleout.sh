#!/usr/bin/env bash
# One job, three ways: one process with 1 torch thread, one process with N threads, and N Ray
# replicas with 1 thread each. The built-in model on the built-in workload, the shipped
# predictor, VBS + resuming FCR, groups of 64 (so there are groups to deal out). Outputs must match.
# Usage: benchmarks/ray_scaleout.sh [N]   (N defaults to the number of cores)
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SEQSCHED:-.venv/bin/seqsched}
py=${PYTHON:-.venv/bin/python}
n=${1:-$(nproc)}
out=${OUT:-runs/scaleout}
mkdir -p "$out"
$py - "$out/requests.jsonl" <<'PY'
import json, sys
from seqsched.workload.default_prompts import default_prompts
with open(sys.argv[1], "w") as f:
    for i, p in enumerate(default_prompts()):
        f.write(json.dumps({"custom_id": f"default-{i}", "prompt": p, "max_tokens": 256}) + "\n")
PY
job=("$out/requests.jsonl" --predictor seqsched/assets/default_predictor --vbs paper --fcr-mode resume --group-size 64)
$S run "${job[@]}" -o "$out/local-1.jsonl" --threads 1 2>&1 | tail -1
$S run "${job[@]}" -o "$out/local-$n.jsonl" --threads "$n" 2>&1 | tail -1
$S run "${job[@]}" -o "$out/ray-$n.jsonl" --threads 1 --workers "$n" 2>&1 | tail -1
$py - "$out/local-1.jsonl" "$out/local-$n.jsonl" "$out/ray-$n.jsonl" <<'PY'
import json, sys
texts = [[json.loads(line)["response"]["body"]["choices"] for line in open(path)] for path in sys.argv[1:]]
print("outputs identical across the three runs:", "yes" if texts[0] == texts[1] == texts[2] else "NO")
PY
