"""Interactive and batch traffic on one vLLM server, measured: seqsched's batch lane against
the ways a team would otherwise share a server.

One vLLM OpenAI server (the CPU build, ``max_num_seqs`` 16, priority policy, pinned to core 0
with ``--pin``; seqsched and the clients on core 1) serves the paper's workload: Alpaca
prompts with Vicuna-7B's greedy lengths forced through ``ignore_eos`` on a random Llama of at
least 25M parameters. Interactive traffic is vLLM's own benchmark client (Poisson, and gamma
with ``--burstiness``) at shares of capacity, ``--interactive`` requests a point (the val
split). A batch of ``--batch`` requests (the train split) runs at the same time:
- ``alone``: interactive traffic alone, through `seqsched serve` (the reference);
- ``naive``: the batch sent straight to vLLM, every request at once;
- ``vllm-priority``: the same, at a lower vLLM priority than the interactive requests;
- ``lane-constant``: `seqsched serve` with the batch submitted with ``client.batches.create``,
  its lane keeping interactive TPOT under ``--tpot-target`` x alone's, a constant predictor;
- ``lane``: the same with the predictor (``--predictor``), ``--batch-order auto`` (shortest
  predicted first while interactive traffic is about, longest first when quiet);
- ``lane-fcfs``: the same, its batch requests in submission order (the prediction only
  chooses whom to preempt; the server's default);
- ``lane-full``: the lane with no TPOT target (batch work takes every slot it can).
The batch runs from just before the interactive requests to their end; what it made in that
window (the output tokens of batch requests that finished) over the window's length, as a
share of spare capacity (capacity's tokens/s less the interactive tokens/s), says how much
of the idle capacity it used. Arms in interleaved order, medians over ``--rounds``.

    python benchmarks/mixed_traffic.py --model runs/cpu-27m --predictor runs/alpaca_proxy --pin \\
        -o runs/mixed.json --plot docs/mixed_traffic.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serve_latency import figures, serve_process  # noqa: E402
from seqsched.serve.launch import LocalVLLMConfig, free_port, local_vllm  # noqa: E402

ARMS = ("alone", "naive", "vllm-priority", "lane-constant", "lane", "lane-fcfs", "lane-full")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a random Llama of at least 25M parameters (runs/cpu-27m)")
    p.add_argument("--predictor")
    p.add_argument("--vicuna", type=Path, default=ROOT.parent / "shared" / "data" / "alpaca-vicuna-lengths.jsonl")
    p.add_argument("--loads", default="0.2,0.4,0.6,0.8")
    p.add_argument("--burstiness", default="1,0.25")
    p.add_argument("--interactive", type=int, default=300)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--tpot-target", type=float, default=1.1, help="the lane's target: x interactive TPOT alone")
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--pin", action="store_true", help="vLLM on core 0; seqsched and the clients on core 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="no run: tabulate (and --plot) the runs of these -o reports together, each point "
                        "against its own report's capacity and alone arm")  # fmt: skip
    args = p.parse_args()
    if args.merge is not None:
        merge(args.merge, args.plot)
        return
    if args.model is None or args.predictor is None:
        p.error("--model and --predictor are required (unless --merge)")
    work = Path(tempfile.mkdtemp(prefix="seqsched-mixed-"))
    interactive, batch = _workload(args, work)
    constant = _constant_predictor(work, batch)
    if args.pin:
        os.sched_setaffinity(0, {1})
    local = LocalVLLMConfig(model=args.model, dtype="float32", max_num_seqs=args.max_num_seqs, threads=1,
                            scheduling_policy="priority", cpus=(0,) if args.pin else None,
                            log_path=work / "vllm.log")  # fmt: skip
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    with local_vllm(local) as vllm_url:
        report["capacity"] = _capacity(vllm_url, args, interactive, batch)
        print(f"capacity {report['capacity']['req_s']:.2f} req/s, {report['capacity']['tokens_s']:.0f} tokens/s",
              flush=True)  # fmt: skip
        arms = args.arms.split(",")
        for k in range(args.rounds):
            for shape in (float(b) for b in args.burstiness.split(",")):
                for load in (float(x) for x in args.loads.split(",")):
                    rate = load * report["capacity"]["req_s"]
                    alone = _arm("alone", vllm_url, rate, shape, args, interactive, batch, None, work, constant)
                    report["runs"].append({"round": k, "load": load, "burstiness": shape, **alone})
                    print(_line(report["runs"][-1]), flush=True)
                    target = args.tpot_target * alone["interactive"]["tpot_mean"]
                    order = [a for a in arms if a != "alone"]
                    for name in order if k % 2 == 0 else order[::-1]:
                        run = _arm(name, vllm_url, rate, shape, args, interactive, batch, target, work, constant)
                        report["runs"].append({"round": k, "load": load, "burstiness": shape, **run})
                        print(_line(report["runs"][-1]), flush=True)
                        if args.output is not None:
                            args.output.write_text(json.dumps(report, indent=1))
    table = summarise(report)
    report["table"] = table
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=1))
    print(format_table(table, report))
    if args.plot is not None:
        plot(table, args.plot, report)


# -- the workload ---------------------------------------------------------------------------------


def _workload(args: argparse.Namespace, work: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The interactive requests as vLLM's custom dataset (val split), and the batch lines
    (train split), each with its Vicuna-7B length as max_tokens, forced through ignore_eos."""
    rng = random.Random(args.seed)
    records = [json.loads(x) for x in args.vicuna.read_text().splitlines() if x.strip()]

    def text(r: dict[str, Any]) -> str:
        return str(r["instruction"]) + ("\n" + r["input"] if r.get("input") else "")

    val = rng.sample([r for r in records if r.get("split") == "val"], args.interactive)
    dataset = work / "interactive.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": text(r), "output_tokens": max(1, int(r["L_t0.0"]))}) + "\n"
                               for r in val))  # fmt: skip
    train = [rng.choice([r for r in records if r.get("split") == "train"]) for _ in range(args.batch)]
    batch = [{"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": args.model, "messages": [{"role": "user", "content": text(r)}],
                       "max_tokens": max(1, int(r["L_t0.0"])), "ignore_eos": True, "temperature": 0}}
             for i, r in enumerate(train)]  # fmt: skip
    return dataset, batch


def _constant_predictor(work: Path, batch: list[dict[str, Any]]) -> Path:
    """A saved constant predictor: the batch's mean length (the length-blind baseline)."""
    from seqsched.predict.constant import ConstantPredictor

    mean = statistics.fmean(line["body"]["max_tokens"] for line in batch)
    path = work / "constant_predictor"
    ConstantPredictor(round(mean)).save(path)
    return path


def _capacity(url: str, args: argparse.Namespace, interactive: Path, batch: list[dict[str, Any]]) -> dict[str, float]:
    """Requests a second (the interactive requests, all at once) and tokens a second (the
    first 600 batch requests at once: the engine kept full)."""
    result = _client(url, args.model, interactive, float("inf"), 1.0, args.seed)
    sent = _Sender(url, batch[:600], priority=None)
    sent.start()
    sent.wait()
    window = max(t for t, _ in sent.done) - sent.started
    return {"req_s": result["request_throughput"], "tokens_s": sum(n for _, n in sent.done) / window}


# -- one arm ---------------------------------------------------------------------------------------


def _arm(name: str, vllm_url: str, rate: float, shape: float, args: argparse.Namespace, interactive: Path,
         batch: list[dict[str, Any]], target: float | None, work: Path, constant: Path) -> dict[str, Any]:  # fmt: skip
    if name in ("naive", "vllm-priority"):
        sender = _Sender(vllm_url, batch, priority=1 if name == "vllm-priority" else None)
        sender.start()
        time.sleep(3.0)  # the batch fills vLLM's slots
        start = time.monotonic()
        result = _client(vllm_url, args.model, interactive, rate, shape, args.seed)
        end = time.monotonic()
        sender.stop()
        made = sum(n for t, n in sender.done if start <= t <= end)
        return {"arm": name, "interactive": figures(result), "batch_tokens_s": made / (end - start),
                "preemptions": 0, "recomputed": 0}  # fmt: skip
    predictor = str(constant) if name == "lane-constant" else args.predictor
    extra = (
        ["--batch-tpot-target", f"{target:.6f}"] if name in ("lane", "lane-constant", "lane-fcfs") and target else []
    )
    if name.startswith("lane"):  # the order each arm was measured with, whatever the default
        extra += ["--batch-order", "fcfs" if name == "lane-fcfs" else "auto"]
    with _seqsched(vllm_url, args, predictor, work / f"batches-{name}-{time.time_ns()}", extra) as url:
        batch_id = None
        if name != "alone":
            batch_id = _submit(url, batch, work)
            _wait_metric(url, 'seqsched_lane_running{lane="batch"}', 1)
        before = _metrics(url)
        start = time.monotonic()
        result = _client(url, args.model, interactive, rate, shape, args.seed)
        end = time.monotonic()
        after = _metrics(url)
        if batch_id is not None:
            httpx.post(f"{url}/v1/batches/{batch_id}/cancel", timeout=30)
    made = after.get("seqsched_batch_tokens_total", 0.0) - before.get("seqsched_batch_tokens_total", 0.0)
    return {"arm": name, "interactive": figures(result), "batch_tokens_s": made / (end - start),
            "preemptions": after.get("seqsched_batch_preemptions", 0.0) - before.get("seqsched_batch_preemptions", 0.0),
            "recomputed": after.get("seqsched_batch_recomputed_tokens_total", 0.0)
            - before.get("seqsched_batch_recomputed_tokens_total", 0.0)}  # fmt: skip


@contextlib.contextmanager
def _seqsched(upstream: str, args: argparse.Namespace, predictor: str, batch_dir: Path,
              extra: list[str]) -> Iterator[str]:  # fmt: skip
    port = free_port()
    command = [sys.executable, "-m", "seqsched", "serve", "--upstream", upstream, "--port", str(port),
               "--max-inflight", str(args.max_num_seqs), "--predictor", predictor, "--batch-dir", str(batch_dir),
               *extra]  # fmt: skip
    with serve_process(command, batch_dir.with_suffix(".log"), port) as url:
        yield url


def _submit(url: str, batch: list[dict[str, Any]], work: Path) -> str:
    from openai import OpenAI

    path = work / "batch.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in batch))
    client = OpenAI(base_url=f"{url}/v1", api_key="none")
    file_id = client.files.create(file=path.open("rb"), purpose="batch").id
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id


def _metrics(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _wait_metric(url: str, name: str, at_least: float, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _metrics(url).get(name, 0.0) < at_least:
        assert time.monotonic() < deadline, f"{name} stayed under {at_least}"
        time.sleep(0.2)


def _client(url: str, model: str, dataset: Path, rate: float, burstiness: float, seed: int) -> dict[str, Any]:
    """One run of vLLM's benchmark client (``vllm.benchmarks.serve``)."""
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = [
        "--backend", "openai-chat", "--base-url", url, "--endpoint", "/v1/chat/completions",
        "--model", model, "--tokenizer", model, "--dataset-name", "custom", "--dataset-path", str(dataset),
        "--custom-output-len", "-1", "--skip-chat-template", "--num-prompts",
        str(sum(1 for _ in dataset.open())), "--request-rate", str(rate), "--burstiness", str(burstiness),
        "--seed", str(seed), "--disable-tqdm", "--percentile-metrics", "ttft,tpot,e2el", "--metric-percentiles",
        "50,99", "--save-detailed", "--ignore-eos",
    ]  # fmt: skip
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        result: dict[str, Any] = bench(parser.parse_args(argv))
    return result


class _Sender:
    """The batch sent straight to vLLM, every request at once, in a thread of its own:
    each answer's (finish time, output tokens); ``stop`` closes the rest (vLLM aborts them)."""

    def __init__(self, url: str, batch: list[dict[str, Any]], priority: int | None) -> None:
        self.url, self.batch, self.priority = url, batch, priority
        self.done: list[tuple[float, int]] = []
        self.started = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._task: Any = None

    def start(self) -> None:
        self._thread.start()
        self.started = time.monotonic()
        self._task = asyncio.run_coroutine_threadsafe(self._send(), self._loop)

    def wait(self) -> None:
        self._task.result()
        self._close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._cancel)
        with contextlib.suppress(Exception):
            self._task.result(60)
        self._close()

    def _cancel(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()

    def _close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    async def _send(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=None)) as session:  # fmt: skip
            await asyncio.gather(*(self._one(session, line["body"]) for line in self.batch), return_exceptions=True)

    async def _one(self, session: Any, body: dict[str, Any]) -> None:
        payload = {**body, **({"priority": self.priority} if self.priority is not None else {})}
        async with session.post(f"{self.url}/v1/chat/completions", json=payload) as answer:
            data = await answer.json()
        self.done.append((time.monotonic(), int(data["usage"]["completion_tokens"])))


# -- the table ----------------------------------------------------------------------------------


def summarise(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per point and arm: medians over rounds, as ratios to ``alone``."""
    capacity = report["capacity"]["tokens_s"]
    rows = []
    points = sorted({(r["burstiness"], r["load"]) for r in report["runs"]}, key=lambda p: (-p[0], p[1]))
    for shape, load in points:
        runs = [r for r in report["runs"] if r["load"] == load and r["burstiness"] == shape]
        alone = [r for r in runs if r["arm"] == "alone"]
        spare = capacity - statistics.median(
            a["interactive"]["output_tokens_mean"] * a["interactive"]["throughput"] for a in alone
        )
        for arm in ARMS:
            mine = [r for r in runs if r["arm"] == arm]
            if not mine:
                continue
            row: dict[str, Any] = {"load": load, "burstiness": shape, "arm": arm, "spare_tokens_s": spare}
            for key in ("e2e_mean", "e2e_p99", "ttft_mean", "tpot_mean"):
                ratios = [m["interactive"][key] / a["interactive"][key] for m, a in zip(mine, alone, strict=False)]
                row[key] = statistics.median(ratios)
            row["batch_share"] = statistics.median(m["batch_tokens_s"] for m in mine) / spare
            row["batch_tokens_s"] = statistics.median(m["batch_tokens_s"] for m in mine)
            row["preemptions"] = statistics.median(m["preemptions"] for m in mine)
            row["recomputed"] = statistics.median(m["recomputed"] for m in mine)
            rows.append(row)
    return rows


def merge(paths: list[Path], plot_path: Path | None) -> None:
    """The table (and plot) of several reports' runs: points later reports hold replace earlier ones'."""
    reports = [json.loads(path.read_text()) for path in paths]
    table: list[dict[str, Any]] = []
    for report in reports:
        mine = [r for r in summarise(report) if r["arm"] != "alone"]
        points = {(r["load"], r["burstiness"]) for r in mine}
        table = [r for r in table if (r["load"], r["burstiness"]) not in points] + mine
    table.sort(key=lambda r: (-r["burstiness"], r["load"], ARMS.index(r["arm"])))
    print(format_table(table, *reports))
    if plot_path is not None:
        plot(table, plot_path, *reports)


def format_table(table: list[dict[str, Any]], *reports: dict[str, Any]) -> str:
    capacities = ", ".join(f"{r['capacity']['req_s']:.2f} req/s ({r['capacity']['tokens_s']:.0f} tokens/s)"
                           for r in reports)  # fmt: skip
    lines = [
        f"Mixed traffic on one vLLM (CPU, max_num_seqs {reports[0]['args']['max_num_seqs']}): capacity "
        f"{capacities}; interactive figures as ratios to interactive traffic alone",
        "",
        "| load | arrivals | arm | mean x | p99 x | TTFT x | TPOT x | batch tokens/s | of spare | preemptions | "
        "recomputed |",
        "|---" * 11 + "|",
    ]
    for r in table:
        if r["arm"] == "alone":
            continue
        arrivals = "Poisson" if r["burstiness"] == 1 else f"gamma {r['burstiness']:g}"
        lines.append(f"| {r['load']:g}x | {arrivals} | {r['arm']} | {r['e2e_mean']:.2f} | {r['e2e_p99']:.2f} | "
                     f"{r['ttft_mean']:.2f} | {r['tpot_mean']:.2f} | {r['batch_tokens_s']:.0f} | "
                     f"{r['batch_share']:.0%} | {r['preemptions']:.0f} | {r['recomputed']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def _line(run: dict[str, Any]) -> str:
    i = run["interactive"]
    return (f"round {run['round']} {run['load']:g}x shape {run['burstiness']:g} {run['arm']:>13}: mean "
            f"{i['e2e_mean']:.2f} s p99 {i['e2e_p99']:.2f} s TPOT {1000 * i['tpot_mean']:.1f} ms; batch "
            f"{run['batch_tokens_s']:.0f} tokens/s; preemptions {run['preemptions']:.0f}")  # fmt: skip


def plot(table: list[dict[str, Any]], path: Path, *reports: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm in ARMS[1:]:
        mine = [r for r in table if r["arm"] == arm and r["burstiness"] == 1]
        if not mine:
            continue
        loads = [r["load"] for r in mine]
        line = axes[0].plot(loads, [r["e2e_mean"] for r in mine], marker="o", label=arm)[0]
        axes[0].plot(loads, [r["e2e_p99"] for r in mine], marker="x", linestyle="--", color=line.get_color())
        axes[1].plot(loads, [100 * r["batch_share"] for r in mine], marker="o", label=arm, color=line.get_color())
    axes[0].set_yscale("log")
    axes[0].set_xlabel("interactive load (x capacity), Poisson")
    axes[0].set_ylabel("interactive latency x alone (mean o, p99 x)")
    axes[0].axhline(1.0, color="grey", linewidth=0.8)
    axes[1].set_xlabel("interactive load (x capacity), Poisson")
    axes[1].set_ylabel("batch tokens/s, % of spare capacity")
    axes[1].legend(fontsize=7)
    capacity = " and ".join(f"{r['capacity']['req_s']:.1f}" for r in reports)
    fig.suptitle(f"Mixed traffic on one vLLM (CPU), capacity {capacity} req/s (one round a point)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
