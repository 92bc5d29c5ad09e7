"""CPU per streamed token: `seqsched serve` against vLLM's own API server, on the same load.

One vLLM OpenAI server (the built-in model, float32, one OpenMP thread, ``max_num_seqs``
64) and one `seqsched serve` in front of it. vLLM's own benchmark client sends the same
seeded requests (streamed chat, 128 output tokens each through ``ignore_eos``, 64 at once)
straight to vLLM, then through seqsched, in interleaved rounds. psutil reads the CPU time
(user + system) of vLLM's API server process (its engine core is a process of its own,
not counted) and of seqsched's process over each run; both are divided by the tokens the
client received. The table gives medians over rounds and each round's figures.

    python benchmarks/relay_cpu.py [--rounds 3] [--num-prompts 256] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serve_latency import bench_client, write_dataset  # noqa: E402
from seqsched.serve.launch import LocalVLLMConfig, free_port, local_vllm  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "seqsched" / "assets" / "default_model"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, default=None, help="write every run as JSON")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seqsched-relay-"))
    dataset, _ = write_dataset("builtin", args.num_prompts, args.seed, args.output_tokens, Path(), work / "d.jsonl")
    local = LocalVLLMConfig(model=args.model, dtype="float32", max_num_seqs=args.max_num_seqs, threads=1,
                            log_path=work / "vllm.log")  # fmt: skip
    runs: list[dict[str, Any]] = []
    with local_vllm(local) as vllm_url:
        api = _api_server(vllm_url)
        port = free_port()
        seqsched = subprocess.Popen(
            [sys.executable, "-m", "seqsched", "serve", "--upstream", vllm_url, "--port", str(port),
             "--max-inflight", str(args.max_num_seqs)],
            stderr=(work / "seqsched.log").open("wb"),
        )  # fmt: skip
        proxy_url = f"http://127.0.0.1:{port}"
        try:
            _wait(proxy_url)
            for url in (vllm_url, proxy_url):  # warm both paths
                bench_client(url, args.model, dataset, True, float("inf"), args.seed, 64, args.concurrency)
            for k in range(args.rounds):
                arms = [("vllm", vllm_url), ("seqsched", proxy_url)]
                for arm, url in arms if k % 2 == 0 else arms[::-1]:
                    runs.append({"round": k, "arm": arm, **_run(url, api, seqsched.pid, dataset, args)})
                    print(_line(runs[-1]), flush=True)
        finally:
            seqsched.terminate()
            seqsched.wait(30)
    if args.output is not None:
        args.output.write_text(json.dumps({"args": vars(args) | {"output": str(args.output)}, "runs": runs}, indent=1))
    print(_table(runs, args))


def _api_server(url: str) -> psutil.Process:
    """The process that listens on vLLM's port: its API server (the engine core is its child)."""
    port = int(url.rsplit(":", 1)[1])
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "--port" in cmdline and cmdline[cmdline.index("--port") + 1 : cmdline.index("--port") + 2] == [str(port)]:
            return proc
    raise RuntimeError(f"no process runs vLLM's server on port {port}")


def _run(url: str, api: psutil.Process, seqsched_pid: int, dataset: Path, args: argparse.Namespace) -> dict[str, Any]:
    proxy = psutil.Process(seqsched_pid)
    before = (_cpu(api), _cpu(proxy))
    start = time.perf_counter()
    result = bench_client(url, args.model, dataset, True, float("inf"), args.seed, args.num_prompts, args.concurrency)
    seconds = time.perf_counter() - start
    tokens = sum(result["output_lens"])
    return {
        "tokens": tokens,
        "seconds": seconds,
        "vllm_api_us_per_token": 1e6 * (_cpu(api) - before[0]) / tokens,
        "seqsched_us_per_token": 1e6 * (_cpu(proxy) - before[1]) / tokens,
        "completed": result["completed"],
    }


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _line(run: dict[str, Any]) -> str:
    return (
        f"round {run['round']} {run['arm']:>8}: {run['tokens']} tokens in {run['seconds']:.1f} s; CPU per token: "
        f"vLLM API server {run['vllm_api_us_per_token']:.1f} us, seqsched {run['seqsched_us_per_token']:.1f} us"
    )


def _table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def med(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["arm"] == arm)

    vllm_api = med("vllm", "vllm_api_us_per_token")
    relay = med("seqsched", "seqsched_us_per_token")
    lines = [
        f"CPU per streamed token, {args.num_prompts} chat requests x {args.output_tokens} tokens, {args.concurrency} "
        f"at once, max_num_seqs {args.max_num_seqs}; medians of {args.rounds} rounds",
        "",
        "| process | arm | CPU us per token | tokens/s |",
        "|---|---|---|---|",
        f"| vLLM's API server | direct | {vllm_api:.1f} | {med('vllm', 'tokens') / med('vllm', 'seconds'):.0f} |",
        f"| vLLM's API server | through seqsched | {med('seqsched', 'vllm_api_us_per_token'):.1f} | "
        f"{med('seqsched', 'tokens') / med('seqsched', 'seconds'):.0f} |",
        f"| seqsched serve | through seqsched | {relay:.1f} | |",
        "",
        f"seqsched's CPU per token / vLLM's API server's: {relay / vllm_api:.2f}x",
    ]
    return "\n".join(lines)


def _wait(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"seqsched serve did not start at {url}")


if __name__ == "__main__":
    main()
