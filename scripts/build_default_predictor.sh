#!/usr/bin/env bash
# Rebuild the shipped length predictor of the built-in model (seqsched/assets/default_predictor):
# 1. prompts from the same task templates as the default workload, but disjoint from it;
# 2. the built-in model's lengths on them at the paper's four temperatures (about 11 minutes on 2 cores);
# 3. a probe (quantile 0.6 regressor on the model's last-token hidden state) fit to the greedy lengths,
#    which is what the default benchmark serves.
# Also records the greedy lengths of the default workload, for evaluation and the length plot.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
seqsched=${SEQSCHED:-.venv/bin/seqsched}
mkdir -p runs data
$py - <<'PY'
import json
from seqsched.workload.default_prompts import default_prompts, predictor_training_prompts
for path, prompts, prefix in [
    ("runs/predictor_prompts.jsonl", predictor_training_prompts(640, seed=1), "train"),
    ("runs/default_workload.jsonl", default_prompts(), "default"),
]:
    with open(path, "w") as f:
        for i, p in enumerate(prompts):
            f.write(json.dumps({"custom_id": f"{prefix}-{i}", "prompt": p}) + "\n")
PY
$seqsched lengths collect runs/predictor_prompts.jsonl -o data/default_model_lengths.jsonl \
    --max-new-tokens 256 --batch-size 16 --threads 1 --overwrite
$seqsched lengths collect runs/default_workload.jsonl -o data/default_workload_lengths.jsonl \
    --max-new-tokens 256 --temperatures 0 --threads 1 --overwrite
rm -f data/*.collect.json  # the traces are shipped; their collection settings need not be
$seqsched predictor train --kind probe --regressor quantile --quantile 0.6 --target L_t0.0 --limit 256 \
    --trace data/default_model_lengths.jsonl -o seqsched/assets/default_predictor --threads 1
$seqsched predictor eval seqsched/assets/default_predictor --trace data/default_workload_lengths.jsonl \
    --target L_t0.0 --limit 256
# 4. a text proxy on the same lengths: the default for continuous engines (vLLM), where a probe
#    would need a second copy of the model and its cost lands on every request's completion time.
$seqsched predictor train --kind proxy --target L_t0.0 --limit 256 \
    --trace data/default_model_lengths.jsonl -o seqsched/assets/default_proxy
$seqsched predictor eval seqsched/assets/default_proxy --trace data/default_workload_lengths.jsonl \
    --target L_t0.0 --limit 256
