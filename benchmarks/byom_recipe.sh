#!/usr/bin/env bash
# The README's bring-your-own-model recipe, exactly as written there, on the built-in model
# directory, each step timed. Run from a fresh clone after `bash scripts/install.sh`:
#   bash benchmarks/byom_recipe.sh [WORKDIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$ROOT/out/byom}
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export PATH="$ROOT/.venv/bin:$PATH"
M=$ROOT/seqsched/assets/default_model
step() {  # name, command...
  local name=$1; shift
  local start=$(date +%s%N)
  "$@" > "$name.log" 2>&1 || { echo "step $name failed:"; tail -5 "$name.log"; exit 1; }
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%-10s %4d.%01d s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100))
}
# 0. prompts like yours: 400 for lengths (disjoint from the 256 requests served in step 4)
python -m seqsched.workload.default_prompts --training -n 400 --jsonl > my_prompts.jsonl
python -m seqsched.workload.default_prompts -n 256 --jsonl > my_requests.jsonl
# 1. the model's own greedy lengths, a fifth of the prompts held out
step collect seqsched lengths collect my_prompts.jsonl -o my_lengths.jsonl --model "$M" \
    --temperatures 0 --max-new-tokens 256 --holdout 0.2 --threads 1
# 2. a predictor on the train split (it reports itself against the best constant)
step train seqsched predictor train --kind proxy --trace my_lengths.jsonl --split train \
    --target L_t0.0 --limit 256 -o my_predictor
# 3. scored on the held-out split
step eval seqsched predictor eval my_predictor --trace my_lengths.jsonl --split val --target L_t0.0 --limit 256
# 4. serve: the plan first, then the job, then the same requests without a predictor
step dry-run seqsched run my_requests.jsonl --model "$M" --predictor my_predictor --max-new-tokens 256 --dry-run
step run seqsched run my_requests.jsonl -o answers.jsonl --model "$M" --predictor my_predictor \
    --max-new-tokens 256 --threads 1
step vanilla seqsched run my_requests.jsonl -o vanilla.jsonl --model "$M" --max-new-tokens 256 --threads 1
echo
sed -n '/held out/,$p' train.log
tail -9 eval.log
tail -1 run.log
tail -1 vanilla.log
python - <<'PY'
import json
a = [json.loads(l) for l in open("answers.jsonl")]
v = [json.loads(l) for l in open("vanilla.jsonl")]
same = sum(x["response"]["body"]["choices"][0] == y["response"]["body"]["choices"][0] for x, y in zip(a, v))
print(f"answers identical to vanilla's: {same}/{len(v)}")
PY
