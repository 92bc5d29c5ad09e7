"""Which strategies change greedy answers, pair by pair, at a given dtype.

Scheduling must not change what a request generates. In float32 every strategy returns
the same tokens; in bfloat16 a row's rounding depends on its batch mates, so any change of
batch (sorting, VBS, FCR re-runs, continuous batching) can flip a near-tied argmax. This
counts, for the built-in model on the first N built-in prompts, how many answers differ
between each pair of strategies.

    python benchmarks/greedy_identity.py --dtype bfloat16 --num-prompts 128
"""

from __future__ import annotations

import argparse
import itertools

from seqsched.bench.runner import run_strategies
from seqsched.bench.strategies import StrategyContext, make_strategy
from seqsched.build import DEFAULT_MODEL, DEFAULT_PREDICTOR, build_engine
from seqsched.engine.config import EngineConfig
from seqsched.request import Request
from seqsched.schedule import ScheduleConfig
from seqsched.workload.default_prompts import default_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--num-prompts", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--strategies", default="vanilla,seqsch,seqsch+vbs+resume,continuous")
    args = parser.parse_args()

    engine = build_engine(EngineConfig(model=str(DEFAULT_MODEL), dtype=args.dtype))
    prompts = default_prompts()[: args.num_prompts]
    requests = [Request(i, f"default-{i}", prompt=p, max_new_tokens=args.max_new_tokens) for i, p in enumerate(prompts)]
    ctx = StrategyContext(ScheduleConfig(), engine, predictor_path=DEFAULT_PREDICTOR)
    names = args.strategies.split(",")
    bench = run_strategies(engine, requests, [make_strategy(n, ctx) for n in names], warmup=False)
    tokens = {r.strategy.name: [x.token_ids for x in r.report.results] for r in bench.results}
    print(f"{args.dtype}, {len(requests)} prompts: greedy answers that differ")
    for a, b in itertools.combinations(names, 2):
        differ = sum(x != y for x, y in zip(tokens[a], tokens[b], strict=True))
        print(f"  {a:>20} vs {b:<20} {differ:4d}")


if __name__ == "__main__":
    main()
