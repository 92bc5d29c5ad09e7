"""Proxy length predictor vs the paper (Zheng et al. 2023, Table 1), on its protocol:
train on split "train", test on the first 1000 "val" records in id order, target = max
over the L_t* samples. The paper's LoRA-tuned Vicuna-7B: Error 62, Acc-50 59%, Acc-100 81%.

    python benchmarks/proxy_accuracy.py --data alpaca-vicuna-lengths.jsonl [--quantile 0.8]
"""

from __future__ import annotations

import argparse
import time

from seqsched.data.traces import DEFAULT_KNOWLEDGE, Trace, read_trace
from seqsched.predict.evaluate import evaluate, trace_texts
from seqsched.predict.proxy import ProxyConfig, ProxyPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="JSONL with instruction, input, L_t* and split fields")
    parser.add_argument("--num-test", type=int, default=1000, help="first N val records, in id order")
    parser.add_argument("--quantile", type=float, default=None, help="predict this quantile, not the median")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    trace = read_trace(args.data)
    train = trace.split("train")
    val = trace.split("val")
    test = Trace(sorted(val, key=lambda r: int(r.id))[: args.num_test], "val")
    predictor = ProxyPredictor(ProxyConfig(seed=args.seed, quantile=args.quantile))
    start = time.perf_counter()
    predictor.fit(trace_texts(train), [r.length(DEFAULT_KNOWLEDGE) for r in train])
    train_seconds = time.perf_counter() - start
    metrics, _ = evaluate(predictor, test)  # times one batch predict of all test prompts
    print(f"proxy (quantile={args.quantile}), trained on {len(train)}, tested on {len(test)} val prompts")
    print(metrics.table())
    print(f"train seconds            {train_seconds:.1f}")
    print("paper (LoRA Vicuna-7B)   Error 62, Acc-50 59%, Acc-100 81%")


if __name__ == "__main__":
    main()
