"""Online latency: plain vLLM's OpenAI server against `seqsched serve` in front of the same
server settings, loaded by vLLM's own benchmark client (``vllm.benchmarks.serve``, called
as a module: the CPU build's ``vllm bench serve`` cannot start).

Both vLLM servers start once (same model, dtype, threads, max_num_seqs; the plain one
with ``--scheduling-policy fcfs``, the one behind seqsched with ``priority``). Capacity is
plain vLLM's throughput with every request sent at once. Then, in interleaved rounds, each
point (Poisson arrivals at a multiple of capacity, or the burst) runs on both, with the
same seeded requests and arrival times. Prints one table of medians over rounds, with each
seqsched figure as a ratio to plain vLLM's, and writes the JSON (every round, the load
average) and a plot.

    python benchmarks/serve_latency.py --workload builtin -o runs/serve_builtin.json
    python benchmarks/serve_latency.py --workload alpaca --model runs/cpu-27m \\
        --predictor runs/alpaca_proxy --vicuna ../shared/data/alpaca-vicuna-lengths.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seqsched.serve.launch import LocalVLLMConfig, free_port, local_vllm  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=["builtin", "alpaca"], required=True)
    p.add_argument("--model", default=str(ROOT / "seqsched" / "assets" / "default_model"))
    p.add_argument("--predictor", default=None, help="seqsched serve's predictor (default: the shipped proxy)")
    p.add_argument("--vicuna", type=Path, default=ROOT.parent / "shared" / "data" / "alpaca-vicuna-lengths.jsonl")
    p.add_argument("--num-prompts", type=int, default=300)
    p.add_argument("--loads", default="0.5,0.8,1.0,1.2,2.0,burst", help="multiples of capacity, and 'burst'")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument(
        "--arms",
        default="sjf/16/32",
        help="seqsched arms, comma-separated POLICY/MAX_INFLIGHT/MAX_BYPASS[/ROUTING][/oracle] (-1: no bound); "
        "several for the aging knob; /oracle: true lengths instead of the predictor (the ceiling; alpaca only, "
        "whose lengths are forced)",
    )
    p.add_argument("--behind", type=int, default=1, help="vLLM servers behind seqsched (routing across them)")
    p.add_argument("--no-plain", action="store_true", help="no plain-vLLM arm: ratios are to the first seqsched arm")
    p.add_argument("--max-tokens", type=int, default=256, help="builtin: each request's limit (natural EOS)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pin",
        action="store_true",
        help="vLLM on core 0, the client and seqsched on the other cores: the engine's compute is the same in "
        "every arm, as on a GPU, and the proxy's CPU cost lands on its own latency only",
    )
    p.add_argument(
        "--pin-each",
        action="store_true",
        help="each vLLM server on a core of its own (server i on core i), the client and seqsched on any: for "
        "--behind N, N servers as N machines",
    )
    p.add_argument("-o", "--output", type=Path, default=ROOT / "runs" / "serve_latency.json")
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    work = Path(tempfile.mkdtemp(prefix="serve-latency-"))
    dataset, ignore_eos = _dataset(args, work / "requests.jsonl")
    specs = [a.strip() for a in args.arms.split(",") if a.strip()]
    loads = [x.strip() for x in args.loads.split(",")]
    common: dict[str, Any] = {"model": args.model, "dtype": args.dtype, "max_num_seqs": args.max_num_seqs, "threads": 1}
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        assert len(cores) >= 2, "--pin needs two cores"
        common["cpus"] = (cores[0],)
        os.sched_setaffinity(0, set(cores[1:]))  # this process, its client and the seqsched servers it starts
    report: dict[str, Any] = {"settings": {**vars(args), "output": str(args.output), "plot": str(args.plot),
                                           "vicuna": str(args.vicuna)}, "runs": []}  # fmt: skip
    with contextlib.ExitStack() as servers:
        arms: dict[str, str] = {}
        if not args.no_plain:
            plain_cfg = LocalVLLMConfig(**common, scheduling_policy="fcfs", log_path=work / "plain.log")
            arms["vllm"] = servers.enter_context(local_vllm(plain_cfg))
        cores = sorted(os.sched_getaffinity(0))
        own = [{"cpus": (cores[i % len(cores)],)} if args.pin_each else {} for i in range(args.behind)]
        behind = [
            servers.enter_context(local_vllm(LocalVLLMConfig(**{**common, **own[i]}, log_path=work / f"behind{i}.log")))
            for i in range(args.behind)
        ]
        with contextlib.ExitStack() as stack:
            for spec in specs:
                arms[spec] = stack.enter_context(_seqsched(behind, args, spec, work))
            plain = arms["vllm" if not args.no_plain else specs[0]]
            load = lambda url, rate, seed, n=None: _load(url, args, dataset, ignore_eos, rate, seed, n)  # noqa: E731
            for url in arms.values():
                load(url, float("inf"), args.seed + 999, 32)  # warm-up, untimed
            capacity = load(plain, float("inf"), args.seed + 998)["throughput"]
            report["capacity_req_s"] = capacity
            print(f"capacity ({'plain vLLM' if not args.no_plain else specs[0]}, {args.num_prompts} at once): "
                  f"{capacity:.2f} req/s", file=sys.stderr)  # fmt: skip
            for rnd in range(args.rounds):
                for point in loads:
                    rate = float("inf") if point == "burst" else float(point) * capacity
                    names = list(arms) if rnd % 2 == 0 else list(reversed(arms))
                    for name in names:
                        before = os.getloadavg()[0]
                        figures = load(arms[name], rate, args.seed + rnd)
                        run = {"round": rnd, "point": point, "rate": rate, "arm": name, **figures,
                               "load_before": before, "load_after": os.getloadavg()[0]}  # fmt: skip
                        report["runs"].append(run)
                        print(_line(run), file=sys.stderr, flush=True)
                        args.output.parent.mkdir(parents=True, exist_ok=True)
                        args.output.write_text(json.dumps(report, indent=1))
    table = summarise(report, loads, list(arms), base="vllm" if not args.no_plain else specs[0])
    report["table"] = table
    args.output.write_text(json.dumps(report, indent=1))
    print(format_table(table, report, args))
    if args.plot is not None:
        plot(table, args.plot, report, args)


KEYS = ("throughput", "e2e_mean", "e2e_median", "e2e_p99", "ttft_mean", "tpot_mean", "per_token_mean")


def _load(
    url: str, args: argparse.Namespace, dataset: Path, ignore_eos: bool, rate: float, seed: int, n: int | None = None
) -> dict[str, Any]:
    """One run of vLLM's benchmark client; the figures a server reports."""
    return figures(bench_client(url, args.model, dataset, ignore_eos, rate, seed, n or args.num_prompts))


def bench_client(
    url: str,
    model: str,
    dataset: Path,
    ignore_eos: bool,
    rate: float,
    seed: int,
    num_prompts: int,
    max_concurrency: int | None = None,
) -> dict[str, Any]:
    """One run of vLLM's benchmark client (``vllm.benchmarks.serve``), its raw result:
    per request (in the order sent) ``latencies``, ``ttfts``, ``input_lens``, ``output_lens``.
    ``max_concurrency``: at most that many requests in flight (the client's own limit)."""
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = [
        "--backend", "openai-chat", "--base-url", url, "--endpoint", "/v1/chat/completions",
        "--model", model, "--tokenizer", model, "--dataset-name", "custom",
        "--dataset-path", str(dataset), "--custom-output-len", "-1", "--skip-chat-template",
        "--num-prompts", str(num_prompts), "--request-rate", str(rate), "--burstiness", "1.0",
        "--seed", str(seed), "--disable-tqdm", "--percentile-metrics", "ttft,tpot,e2el",
        "--metric-percentiles", "50,99", "--save-detailed",
    ]  # fmt: skip
    if ignore_eos:
        argv.append("--ignore-eos")
    if max_concurrency is not None:
        argv += ["--max-concurrency", str(max_concurrency)]
    with _quiet():
        result: dict[str, Any] = bench(parser.parse_args(argv))
    return result


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one client run, over the requests that succeeded."""
    ok = [i for i, e in enumerate(result["errors"]) if not e]
    latencies = [result["latencies"][i] for i in ok]
    outputs = [result["output_lens"][i] for i in ok]
    return {
        "completed": len(ok),
        "failed": len(result["errors"]) - len(ok),
        "throughput": result["request_throughput"],
        "e2e_mean": statistics.fmean(latencies),
        "e2e_median": statistics.median(latencies),
        "e2e_p99": _quantile(latencies, 0.99),
        "ttft_mean": statistics.fmean(result["ttfts"][i] for i in ok),
        "tpot_mean": result["mean_tpot_ms"] / 1000,
        "per_token_mean": statistics.fmean(t / max(1, n) for t, n in zip(latencies, outputs, strict=True)),
        "output_tokens_mean": statistics.fmean(outputs),
    }


@contextlib.contextmanager
def _seqsched(upstreams: list[str], args: argparse.Namespace, spec: str, work: Path) -> Iterator[str]:
    policy, inflight, bypass, *routing = spec.split("/")
    oracle = routing[-1:] == ["oracle"]
    routing = routing[:-1] if oracle else routing
    port = free_port()
    command = [sys.executable, "-m", "seqsched", "serve", "--port", str(port), "--policy", policy,
               "--max-bypass", bypass, "--max-inflight", inflight,
               "--routing", *(routing or ["least-work"])]  # fmt: skip
    for url in upstreams:
        command += ["--upstream", url]
    if oracle:
        command += ["--predictor", str(_oracle(work))]
    elif args.predictor:
        command += ["--predictor", args.predictor]
    with serve_process(command, work / f"seqsched-{spec.replace('/', '-')}.log", port) as url:
        yield url


@contextlib.contextmanager
def serve_process(command: list[str], log_path: Path, port: int) -> Iterator[str]:
    """`seqsched serve` started by ``command`` (listening on ``port``), its output to
    ``log_path``; yield its URL once healthy, stop it after."""
    import httpx

    log = log_path.open("w")
    process = subprocess.Popen(command, stderr=log, stdout=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, f"seqsched serve did not start: {log.name}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def _oracle(work: Path) -> Path:
    """True lengths, by prompt text: each request's forced length (the alpaca workload's)."""
    from seqsched.predict.oracle import OraclePredictor

    rows = [json.loads(line) for line in (work / "requests.jsonl").read_text().splitlines() if line.strip()]
    path = work / "oracle_predictor"
    OraclePredictor({OraclePredictor.key(r["prompt"]): int(r["output_tokens"]) for r in rows}, by="text").save(path)
    return path


def _dataset(args: argparse.Namespace, path: Path) -> tuple[Path, bool]:
    return write_dataset(args.workload, args.num_prompts, args.seed, args.max_tokens, args.vicuna, path)


def write_dataset(
    workload: str, num_prompts: int, seed: int, max_tokens: int, vicuna: Path, path: Path, held_out: bool = True
) -> tuple[Path, bool]:
    """The requests as vLLM's custom dataset: prompt and output_tokens per line.
    ``held_out=False``: other requests of the same kind, for calibrating (the built-in
    model's training prompts, disjoint from its workload; Alpaca's train split)."""
    rng = random.Random(seed)
    if workload == "builtin":
        from seqsched.workload.default_prompts import default_prompts, predictor_training_prompts

        prompts = default_prompts(num_prompts, seed=seed) if held_out else predictor_training_prompts(num_prompts, seed)
        rows = [{"prompt": text, "output_tokens": max_tokens} for text in prompts]
        ignore_eos = False
    else:
        records = [json.loads(line) for line in vicuna.read_text().splitlines() if line.strip()]
        split = [r for r in records if r.get("split") == ("val" if held_out else "train")]
        rows = []
        for r in rng.sample(split, num_prompts):
            text = r["instruction"] + ("\n" + r["input"] if r.get("input") else "")
            rows.append({"prompt": text, "output_tokens": max(1, int(r["L_t0.0"]))})
        ignore_eos = True
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, ignore_eos


def summarise(report: dict[str, Any], loads: list[str], arms: list[str], base: str = "vllm") -> list[dict[str, Any]]:
    """Medians over rounds per (point, arm), and each arm's ratios to the base arm's."""
    table = []
    for point in loads:
        base_figures = _medians([r for r in report["runs"] if r["point"] == point and r["arm"] == base])
        for arm in arms:
            figures = _medians([r for r in report["runs"] if r["point"] == point and r["arm"] == arm])
            ratios = {k: figures[k] / base_figures[k] if base_figures[k] else None for k in KEYS}
            table.append({"point": point, "arm": arm, **figures, "ratio": ratios})
    return table


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in (*KEYS, "rate")}


def format_table(table: list[dict[str, Any]], report: dict[str, Any], args: argparse.Namespace) -> str:
    head = (f"{args.workload}: {args.num_prompts} requests a point, {args.rounds} interleaved rounds (medians), "
            f"max_num_seqs {args.max_num_seqs}, {args.dtype}, 1 thread; capacity {report['capacity_req_s']:.2f} "
            f"req/s ({'plain vLLM' if not args.no_plain else args.arms.split(',')[0]}, all at once)")  # fmt: skip
    lines = [head, "", "| load | arm | req/s | mean s | median s | p99 s | TTFT s | TPOT ms | s/token | "
             "x base: mean | p99 | per-token | req/s |", "|---" * 13 + "|"]  # fmt: skip
    for row in table:
        load = "burst" if row["point"] == "burst" else f"{float(row['point']):.1f}x ({row['rate']:.1f}/s)"
        r = row["ratio"]
        lines.append(
            f"| {load} | {row['arm']} | {row['throughput']:.2f} | {row['e2e_mean']:.2f} | {row['e2e_median']:.2f} | "
            f"{row['e2e_p99']:.2f} | {row['ttft_mean']:.3f} | {1000 * row['tpot_mean']:.1f} | "
            f"{row['per_token_mean']:.4f} | {r['e2e_mean']:.2f} | {r['e2e_p99']:.2f} | {r['per_token_mean']:.2f} | "
            f"{r['throughput']:.2f} |"
        )
    return "\n".join(lines)


def plot(table: list[dict[str, Any]], path: Path, report: dict[str, Any], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(row["arm"] for row in table))
    sjf = [a for a in arms if a.startswith("sjf/")]
    knob = sjf if len({a.split("/")[2] for a in sjf}) > 1 else []  # arms that differ in --max-bypass
    fig, axes = plt.subplots(1, 3 if len(knob) > 1 else 2, figsize=(16 if len(knob) > 1 else 11, 4.2))
    bursts = []
    for arm in arms:
        rows = [r for r in table if r["arm"] == arm and r["point"] != "burst"]
        x = [float(r["point"]) for r in rows]
        line = axes[0].plot(x, [r["e2e_mean"] for r in rows], marker="o", label=f"{arm} mean")[0]
        axes[0].plot(x, [r["e2e_p99"] for r in rows], marker="x", linestyle="--", color=line.get_color(),
                     label=f"{arm} p99")  # fmt: skip
        bursts.extend(r for r in table if r["arm"] == arm and r["point"] == "burst")
    if bursts:
        xs = range(len(bursts))
        axes[1].bar([i - 0.2 for i in xs], [r["e2e_mean"] for r in bursts], 0.4, label="mean")
        axes[1].bar([i + 0.2 for i in xs], [r["e2e_p99"] for r in bursts], 0.4, label="p99")
        axes[1].set_xticks(list(xs), [r["arm"] for r in bursts])
        axes[1].legend(fontsize=8)
    if len(knob) > 1:  # the aging bound's trade-off, at each load
        for point in dict.fromkeys(r["point"] for r in table):
            rows = [r for r in table if r["point"] == point and r["arm"] in knob]
            axes[2].plot([r["e2e_mean"] for r in rows], [r["e2e_p99"] for r in rows], marker="o", label=str(point))
            for r in rows:
                axes[2].annotate(r["arm"].split("/")[2], (r["e2e_mean"], r["e2e_p99"]), fontsize=7)
        axes[2].set_xlabel("mean end-to-end latency (s)")
        axes[2].set_ylabel("p99 (s); labels: --max-bypass")
        axes[2].legend(title="load", fontsize=7)
    axes[0].set_xlabel("arrival rate (x capacity, Poisson)")
    axes[0].set_ylabel("end-to-end latency (s)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("burst: end-to-end latency (s)")
    what = (f"seqsched serve on {args.behind} vLLM server(s)" if args.no_plain
            else "plain vLLM (fcfs) against seqsched serve (sjf)")  # fmt: skip
    fig.suptitle(f"{args.workload}: {what}; capacity {report['capacity_req_s']:.1f} req/s, max_num_seqs "
                 f"{args.max_num_seqs}", fontsize=9)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _line(run: dict[str, Any]) -> str:
    return (f"round {run['round']} {run['point']:>5} {run['arm']:>8}: {run['throughput']:.2f} req/s, mean "
            f"{run['e2e_mean']:.2f} s, p99 {run['e2e_p99']:.2f} s, per-token {run['per_token_mean']:.4f} s, "
            f"failed {run['failed']}, load {run['load_before']:.2f}")  # fmt: skip


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """vLLM's client prints its own report per run; keep this script's table readable."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


if __name__ == "__main__":
    main()
