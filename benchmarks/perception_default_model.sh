#!/usr/bin/env bash
# Every predictor kind on the built-in model's own lengths, one protocol:
# train on the first 512 prompts of data/default_model_lengths.jsonl, evaluate on the last 128,
# target = max over the four temperatures, limit 256. Then schedule with the LoRA module and PiA.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SEQSCHED:-.venv/bin/seqsched}
out=${OUT:-runs/perception}
mkdir -p "$out"
head -512 data/default_model_lengths.jsonl > "$out/train.jsonl"
tail -128 data/default_model_lengths.jsonl > "$out/eval.jsonl"
$S predictor train --kind constant --trace "$out/train.jsonl" --limit 256 -o "$out/constant"
$S predictor train --kind lora --trace "$out/train.jsonl" --limit 256 --epochs 4 --lr 2e-3 --lora-r 16 \
    --lora-alpha 32 -o "$out/lora"
$S predictor train --kind probe --regressor quantile --quantile 0.5 --trace "$out/train.jsonl" --limit 256 \
    -o "$out/probe"
$S predictor train --kind proxy --trace "$out/train.jsonl" --limit 256 -o "$out/proxy"
for kind in constant lora probe proxy; do
    $S predictor eval "$out/$kind" --trace "$out/eval.jsonl" --limit 256 -o "$out/eval-$kind.json"
done
$S predictor eval --kind pia --trace "$out/eval.jsonl" --limit 256 -o "$out/eval-pia.json"
# End to end: schedule the built-in workload with the LoRA module and with PiA.
$S bench --sample 64 --max-new-tokens 256 --strategies vanilla,seqsch,pia --predictor "$out/lora"
