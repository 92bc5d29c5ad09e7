"""How long transformers' continuous batching takes to start, against how long it runs.

``HFContinuousEngine`` starts a fresh ``ContinuousBatchingManager`` for every run, and a
run's clock starts once the manager serves (``engine/continuous.py``). This measures both
parts for plain (fcfs) and shortest-predicted-first (sjf) order, interleaved, on the
built-in model and its 256 prompts, with every request running at once:

- ``start s``: from ``manager.start()`` until its batch processor exists (paged cache and
  input buffers allocated); the same work whatever the order;
- ``run s``: the timed run, from the first request submitted to the last one answered;
- ``start + run``: what a run was timed at before the clock moved.

``--static-between N`` runs static batching (vanilla, HF ``generate``) on the first N prompts
before each continuous run, as a bench that compares the two does.

    python benchmarks/continuous_startup.py --repeat 4 --threads 1
    python benchmarks/continuous_startup.py --repeat 4 --threads 1 --static-between 64
"""

from __future__ import annotations

import argparse
import statistics

import torch

from seqsched.build import DEFAULT_MODEL, DEFAULT_PROXY, build_engine
from seqsched.engine.config import EngineConfig, VLLMConfig
from seqsched.pipeline import Pipeline
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.registry import load_predictor
from seqsched.request import Request
from seqsched.schedule import ScheduleConfig
from seqsched.workload.default_prompts import default_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=4, help="runs of each order, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--static-between", type=int, default=0, metavar="N", help="static run before each")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    hf = build_engine(EngineConfig(model=str(DEFAULT_MODEL)))
    engine = build_engine(hf.config, "continuous", VLLMConfig(max_num_seqs=256), hf=hf)
    prompts = default_prompts()
    orders = {
        "fcfs": (ConstantPredictor(), ScheduleConfig()),
        "sjf": (load_predictor(DEFAULT_PROXY), ScheduleConfig(policy="sjf")),
    }

    def requests(n: int) -> list[Request]:
        limit = args.max_new_tokens
        return [Request(i, f"default-{i}", prompt=p, max_new_tokens=limit) for i, p in enumerate(prompts[:n])]

    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in orders}
    for _ in range(args.repeat + 1):  # the first round warms up and is dropped
        for name, (predictor, schedule) in orders.items():
            if args.static_between:
                Pipeline(hf, ConstantPredictor(), ScheduleConfig()).run(requests(args.static_between))
            report = Pipeline(engine, predictor, schedule).run(requests(len(prompts)))
            seconds[name].append((engine.startup_seconds, report.wall_seconds))
    between = f", static batching on {args.static_between} prompts before each run" if args.static_between else ""
    setup = f"built-in model, {len(prompts)} prompts, {args.threads} thread(s)"
    print(f"transformers continuous batching, {setup}{between}")
    print(f"{'order':<6} {'start s (min-max)':>20} {'run s (min-max)':>20} {'start + run (min-max)':>24}")
    for name, runs in seconds.items():
        runs = runs[1:]
        columns = [[s for s, _ in runs], [r for _, r in runs], [s + r for s, r in runs]]
        cells = [f"{statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f})" for c in columns]
        print(f"{name:<6} {cells[0]:>20} {cells[1]:>20} {cells[2]:>24}")


if __name__ == "__main__":
    main()
