#!/usr/bin/env bash
# Plain vLLM (fcfs) against seqsched's stream plans, side by side on one engine instance,
# float32, one torch/OpenMP thread, 3 interleaved repeats (medians):
#   1. the built-in workload, live, at max_num_seqs 16 and 32 (shipped predictor);
#   2. a KV-bound engine: the built-in workload at max_num_seqs 256 with a KV cache of 96
#      blocks of 32 tokens (--num-gpu-blocks, vLLM's num_gpu_blocks_override): running
#      requests outgrow it, as a 7B model's do on a GPU at high load;
#   3. the paper's workload replayed (Alpaca prompts, Vicuna-7B's lengths, 1,024 requests,
#      seed 42) on a random 27M-parameter Llama, with a proxy predictor trained on the
#      train split, at max_num_seqs 32 and 16 (one repeat: ~20 minutes each).
# Usage: bash benchmarks/vllm_policies.sh [OUT_DIR] [DATA_DIR]   (needs: bash scripts/install.sh vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/vllm}
data=${2:-../shared/data}
mkdir -p "$out" runs
run() { .venv/bin/seqsched bench --engine vllm --threads 1 --dtype float32 --repeat 3 "$@"; }

for n in 16 32; do
    run --max-num-seqs "$n" --json "$out/builtin_$n.json" --plot "$out/builtin_$n.png" | tee "$out/builtin_$n.txt"
done
run --max-num-seqs 256 --num-gpu-blocks 96 --block-size 32 --strategies vllm,vllm+kv,vllm+sjf,vllm+sjf+kv,vllm+kv+oracle \
    --json "$out/builtin_kv.json" | tee "$out/builtin_kv.txt"

[ -d runs/cpu-27m ] || .venv/bin/python scripts/make_random_model.py --shape cpu-27m \
    --tokenizer seqsched/assets/default_model --out runs/cpu-27m
[ -d runs/proxy-alpaca ] || .venv/bin/seqsched predictor train --kind proxy \
    --trace "$data/alpaca-vicuna-lengths.jsonl" --split train --out runs/proxy-alpaca
for n in 32 16; do  # one repeat: about 20 minutes each on a 2-core CPU
    run --repeat 1 --model runs/cpu-27m --trace "$data/alpaca-vicuna-lengths.jsonl" --split val --sample 1024 --seed 42 \
        --max-num-seqs "$n" --predictor runs/proxy-alpaca --strategies vllm,vllm+sjf,vllm+ljf,vllm+kv,vllm+sjf+oracle \
        --json "$out/replay_$n.json" --plot "$out/replay_$n.png" | tee "$out/replay_$n.txt"
done
