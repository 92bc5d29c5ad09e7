#!/usr/bin/env bash
# Threads on a busy CPU: the built-in bench (vanilla and seqsch, 48 prompts) with 1 thread, one
# per core, and seqsched's default (auto), first on a quiet machine, then with BUSY busy loops
# (default: one per core) competing for the cores. Prints one line per run: req/s of each
# strategy and seqsch's ratio over vanilla.
#   bash benchmarks/threads_under_load.sh [BUSY]
set -euo pipefail
cd "$(dirname "$0")/.."
CORES=$(nproc)
BUSY=${1:-$CORES}
OUT=${OUT:-out/threads}
mkdir -p "$OUT"
run() {  # label, thread option...
  local label=$1; shift
  local start=$(date +%s.%N)
  .venv/bin/seqsched bench --sample 48 --strategies vanilla,seqsch --repeat 1 "$@" -o "$OUT/$label.json" \
    > "$OUT/$label.log" 2>&1
  python3 - "$OUT/$label.json" "$label" "$start" <<'PY'
import json, sys, time
data = json.load(open(sys.argv[1]))
rates = {s["name"]: s["metrics"]["requests_per_second"] for s in data["strategies"]}
threads = data["config"]["threads"]
print(f"{sys.argv[2]:14} threads {threads['threads']} ({threads['chosen_by']}, load {threads['load_average']:.2f}) "
      f"vanilla {rates['vanilla']:.2f} req/s, seqsch {rates['seqsch']:.2f} ({rates['seqsch'] / rates['vanilla']:.2f}x) "
      f"{time.time() - float(sys.argv[3]):.0f} s")
PY
}
echo "$CORES cores; quiet:"
run quiet-1 --threads 1
run quiet-all --threads "$CORES"
run quiet-auto
echo "with $BUSY busy loops:"
pids=()
for _ in $(seq "$BUSY"); do python3 -c "while True: pass" & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
sleep 60  # let the 1-minute load average see them, as a machine that has been busy would
run busy-1 --threads 1
run busy-all --threads "$CORES"
run busy-auto
