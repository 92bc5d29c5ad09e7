#!/usr/bin/env bash
# The built-in model, stage by stage, as it was trained (seeded; each stage warm-starts from the
# last with --init-from and keeps its log inside its own). Stages 0 to 2 ran on this 2-core CPU
# with one thread; each is resumable (run it again with --resume after a stop).
#   bash scripts/train_default_model.sh /path/to/alpaca-52k.jsonl
# stage 0 (27 min): a 4.2M Llama and its byte-level BPE tokenizer, 1300 steps on Alpaca.
#   Greedy: 31% of the default workload's answers loop to the 256-token limit.
# stage 1 (19 min): 1000 more steps of the same loss (a 3000-step schedule, stopped at 1000:
#   the share at the limit only fell from 25% to 22% on held-out Alpaca).
# stage 2 (12 min): token-level unlikelihood (weight 1) on the answer tokens seen before each
#   position, 400 steps of a 1200-step schedule: 16% at the limit on the default workload.
# stage 3 (20 min): unlikelihood weight 3, 600 steps: the shipped model (4.7% at the limit on the
#   default workload, Spearman 0.61 with the Alpaca reference length; benchmarks/default_model_quality.py).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?the Alpaca jsonl (id, instruction, input, output)}
T="${PYTHON:-.venv/bin/python} scripts/train_default_model.py $DATA --threads 1"
$T --out runs/stage0 --ckpt runs/stage0.ckpt.pt --steps 1300 --lr 2e-3 --warmup 40
$T --init-from runs/stage0 --out runs/stage1 --ckpt runs/stage1.ckpt.pt --steps 3000 --lr 1e-3 --warmup 40 \
    --stop-at 1000 --ckpt-every 250 --gen-every 500
$T --init-from runs/stage1 --out runs/stage2 --ckpt runs/stage2.ckpt.pt --steps 1200 --lr 1e-3 --warmup 20 \
    --unlikelihood 1.0 --stop-at 400 --ckpt-every 200 --gen-every 400
$T --init-from runs/stage2 --out seqsched/assets/default_model --ckpt runs/stage3.ckpt.pt --steps 600 --lr 7e-4 \
    --warmup 10 --unlikelihood 3.0 --ckpt-every 150 --gen-every 300
