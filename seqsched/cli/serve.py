"""`seqsched serve`: an OpenAI-compatible server that schedules by predicted length.

Each request's output length is predicted on arrival (the shipped text proxy, or
--predictor); seqsched keeps its own queue and forwards a request only while an upstream
has a free slot (--max-inflight), shortest predicted first (--policy sjf, with an aging
bound: --max-bypass), and passes the prediction on as vLLM's `priority`.

Two ways to run it:
- `seqsched serve --model M` starts a local vLLM OpenAI server on loopback (priority
  scheduling, --max-num-seqs slots), waits until it is healthy, fronts it, and stops it
  on exit.
- `seqsched serve --upstream URL [--upstream URL ...]` fronts servers you already run
  (vLLM, SGLang, `transformers serve`, ...); requests go to the one with the least
  predicted work outstanding (--routing).

Endpoints: /v1/chat/completions and /v1/completions (streamed or not), /v1/models,
/health, /metrics (Prometheus). SIGTERM stops taking requests and lets those in flight
finish (--drain-timeout)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqsched.cli.help import HelpFormatter
from seqsched.cli.routing import SCORERS, routing_arg
from seqsched.engine.config import DTYPES
from seqsched.schedule.batch_lane import BATCH_ORDERS, BatchLaneConfig
from seqsched.schedule.config import DEFAULT_SLACK_S, ONLINE_POLICIES
from seqsched.serve.config import DEFAULT_MAX_BYPASS, DEFAULT_MAX_INFLIGHT, BatchLimits, ServeConfig


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="an OpenAI-compatible server that schedules by predicted length, in front of vLLM",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="start a local vLLM server for this model (a directory or a hub id)")
    where.add_argument("--upstream", action="append", help="an OpenAI-compatible server's base URL (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="where seqsched listens (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="seqsched's port")
    g = p.add_argument_group("scheduling")
    g.add_argument("--policy", choices=ONLINE_POLICIES, default="sjf",
                   help="order of the waiting queue (deadline: shortest predicted first, bounded in time: --slack)")
    g.add_argument("--door-kv-blocks", type=int, default=None,
                   help="each upstream's KV cache in blocks of 16 (vLLM's log: 'GPU KV cache size'): forward a request "
                   "only while its prompt + predicted output fits, so vLLM need not preempt")  # fmt: skip
    g.add_argument("--slack", type=float, default=DEFAULT_SLACK_S,
                   help="deadline: seconds of waiting one predicted token is worth (a request is overtaken only by "
                   "ones that arrive within slack x its predicted length after it)")  # fmt: skip
    g.add_argument(
        "--max-bypass",
        type=int,
        default=DEFAULT_MAX_BYPASS,
        help="aging bound: no request is overtaken by more than this many later ones (-1: no bound; tighter "
        "than a job's 1024: each served request has someone waiting on it; 128 halved mean latency at 1.5x "
        "load with p99 within 1.25x, docs/serving.md)",
    )
    g.add_argument(
        "--max-inflight",
        type=int,
        default=None,
        help=f"requests forwarded to one upstream at once (default: --max-num-seqs with --model, else "
        f"{DEFAULT_MAX_INFLIGHT}, vLLM's default max_num_seqs)",
    )
    g.add_argument("--routing", type=routing_arg, default="least-work", metavar="SCORER[:W],...",
                   help=f"across upstreams: one scorer or a weighted mix of {', '.join(SCORERS)} "
                   "(e.g. prefix-affinity:2,least-work:1)")  # fmt: skip
    g.add_argument(
        "--priority",
        choices=["auto", "on", "off"],
        default="auto",
        help="send the predicted length as vLLM's priority (auto: to vLLM upstreams)",
    )
    g.add_argument("--predictor", type=Path, help="a saved predictor directory (default: the shipped text proxy)")
    g.add_argument("--trace", type=Path, help="append prompt, predicted and actual length of each request (JSONL)")
    g.add_argument("--trace-mode", type=_octal, default=0o600, help="the trace's permissions when created (octal)")
    b = p.add_argument_group("batches: the OpenAI Files and Batches API, and the batch lane")
    b.add_argument("--batch-dir", type=Path, help="serve /v1/files and /v1/batches, keeping them here (default: off)")
    b.add_argument("--batch-headroom", type=int, default=0,
                   help="free slots per upstream that batch work leaves for interactive arrivals")  # fmt: skip
    b.add_argument("--batch-tpot-target", type=float, default=None,
                   help="seconds per output token the interactive requests should stay under: the lane runs "
                   "fewer batch requests while they are over it (default: no target)")  # fmt: skip
    b.add_argument("--batch-order", choices=BATCH_ORDERS, default=BatchLaneConfig.order,
                   help="order of batch requests: fcfs (submission order; the prediction still picks whom to "
                   "preempt), sjf, ljf, or auto (shortest first while interactive traffic is about, longest first "
                   "when quiet; measured not to pay, docs/serving.md)")  # fmt: skip
    b.add_argument("--no-batch-preempt", action="store_true",
                   help="never stop a batch request for an interactive one (default: the one with the most predicted "
                   "work left is stopped and continued later)")  # fmt: skip
    b.add_argument("--max-batch-file-bytes", type=int, default=200 << 20, help="larger uploads get a 413")
    b.add_argument("--max-batch-lines", type=int, default=50_000, help="a batch with more lines is refused (400)")
    b.add_argument("--max-active-batches", type=int, default=16, help="batches not yet ended at once (more: 429)")
    lim = p.add_argument_group("limits and timeouts")
    lim.add_argument("--max-request-bytes", type=int, default=1 << 20, help="larger bodies get a 413")
    lim.add_argument("--max-tokens-limit", type=int, default=None, help="a larger max_tokens gets a 400")
    lim.add_argument("--header-timeout", type=float, default=30.0, help="seconds a client may take to send headers")
    lim.add_argument("--body-timeout", type=float, default=60.0, help="seconds a client may take to send a body")
    lim.add_argument("--stall-timeout", type=float, default=60.0,
                     help="seconds a stream may go unread before its upstream call is closed")  # fmt: skip
    lim.add_argument("--max-connections", type=int, default=8192, help="open client connections at once (more: 503)")
    lim.add_argument(
        "--api-key",
        default=os.environ.get("SEQSCHED_API_KEY"),
        help="clients must send 'Authorization: Bearer KEY' to /v1 (default: $SEQSCHED_API_KEY, or none)",
    )
    lim.add_argument("--upstream-api-key", default=os.environ.get("SEQSCHED_UPSTREAM_API_KEY"),
                     help="the key seqsched sends upstream (default: $SEQSCHED_UPSTREAM_API_KEY, else the client's "
                     "own Authorization header is passed on)")  # fmt: skip
    lim.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to reach an upstream")
    lim.add_argument("--upstream-timeout", type=float, default=600.0, help="seconds between an upstream's bytes")
    lim.add_argument("--queue-timeout", type=float, default=600.0, help="seconds a request may wait for a slot")
    lim.add_argument("--drain-timeout", type=float, default=30.0, help="on SIGTERM, seconds for requests in flight")
    v = p.add_argument_group("the local vLLM (--model)")
    v.add_argument("--max-num-seqs", type=int, default=256, help="vLLM's requests running at once")
    v.add_argument("--dtype", default="auto", choices=DTYPES, help="vLLM's --dtype (auto: float32 on a CPU)")
    v.add_argument("--max-model-len", type=int, default=None, help="vLLM's --max-model-len")
    v.add_argument("--kv-cache-gib", type=float, default=None, help="KV-cache memory (default on a CPU: 1 GiB)")
    v.add_argument("--num-gpu-blocks", type=int, default=None, help="vLLM's --num-gpu-blocks-override")
    v.add_argument("--served-model-name", default=None, help="the model name clients use")
    v.add_argument("--threads", type=int, default=1, help="vLLM's OpenMP threads on a CPU")
    v.add_argument("--vllm-log", type=Path, default=None, help="vLLM's output (default: a file in the temp folder)")
    v.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for vLLM to be healthy")
    r = p.add_argument_group("replicas on Ray (--model; docs/serving.md, Beyond one machine)")
    r.add_argument("--replicas", type=int, default=1,
                   help="vLLM replicas that Ray places and restarts, each its own upstream (over 1, or with "
                   "--ray-address: on Ray)")  # fmt: skip
    r.add_argument("--ray-address", default=None,
                   help="the Ray cluster to join ('auto': the one `ray start` made here; none: a local Ray, "
                   "started and stopped with the server)")  # fmt: skip
    r.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves for each replica")
    r.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs Ray reserves for each replica")
    p.set_defaults(func=main)


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not octal permissions such as 600") from None


def serve_config(args: argparse.Namespace, upstreams: list[str]) -> ServeConfig:
    inflight = args.max_inflight
    if inflight is None:
        inflight = args.max_num_seqs if args.model is not None else DEFAULT_MAX_INFLIGHT
    return ServeConfig(
        upstreams=tuple(upstreams),
        host=args.host,
        port=args.port,
        policy=args.policy,
        slack_s=args.slack,
        door_kv_blocks=args.door_kv_blocks,
        max_bypass=None if args.max_bypass is not None and args.max_bypass < 0 else args.max_bypass,
        max_inflight=inflight,
        routing=args.routing,
        priority={"auto": None, "on": True, "off": False}[args.priority],
        predictor=args.predictor,
        max_request_bytes=args.max_request_bytes,
        max_tokens_limit=args.max_tokens_limit,
        connect_timeout_s=args.connect_timeout,
        upstream_timeout_s=args.upstream_timeout,
        queue_timeout_s=args.queue_timeout,
        drain_timeout_s=args.drain_timeout,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        stall_timeout_s=args.stall_timeout,
        max_connections=args.max_connections,
        api_key=args.api_key,
        upstream_api_key=args.upstream_api_key,
        trace_path=args.trace,
        trace_mode=args.trace_mode,
        batch_dir=args.batch_dir,
        batch_limits=BatchLimits(args.max_batch_file_bytes, args.max_batch_lines, args.max_active_batches),
        batch_lane=BatchLaneConfig(
            headroom=args.batch_headroom,
            tpot_target_s=args.batch_tpot_target,
            preempt=not args.no_batch_preempt,
            order=args.batch_order,
        ),
    )


def main(args: argparse.Namespace) -> int:
    from seqsched.cli import UsageError

    if args.predictor is not None and not args.predictor.is_dir():
        raise UsageError(f"--predictor {args.predictor} is not a directory (a saved predictor)")
    # Everything is checked before vLLM starts (minutes): the config with a stand-in URL.
    serve_config(args, args.upstream or ["http://127.0.0.1:1"])
    from seqsched.serve.predictor import load_predict

    predict = load_predict(args.predictor)
    from seqsched.serve.run import run_server

    if args.model is None and (args.replicas != 1 or args.ray_address is not None):
        raise UsageError("--replicas and --ray-address start vLLM replicas on Ray: they go with --model, "
                         "not --upstream")  # fmt: skip
    if args.replicas < 1:
        raise UsageError(f"--replicas must be at least 1, got {args.replicas}")
    if args.model is not None and (args.replicas > 1 or args.ray_address is not None):
        from seqsched.ray_replicas import RayReplicas, ReplicaSettings

        settings = ReplicaSettings(args.replicas, args.ray_address, args.replica_cpus, args.replica_gpus)
        with RayReplicas(settings, _vllm_config(args), args.startup_timeout) as replicas:
            run_server(serve_config(args, replicas.urls), predict, background=replicas.watch)
        return 0
    with _upstreams(args) as upstreams:
        run_server(serve_config(args, upstreams), predict)
    return 0


@contextlib.contextmanager
def _upstreams(args: argparse.Namespace) -> Iterator[list[str]]:
    if args.model is None:
        yield [url.rstrip("/") for url in args.upstream]
        return
    from seqsched.serve.launch import local_vllm

    with local_vllm(_vllm_config(args)) as url:
        yield [url]


def _vllm_config(args: argparse.Namespace) -> Any:
    from seqsched.serve.launch import LocalVLLMConfig

    return LocalVLLMConfig(
        model=args.model,
        served_model_name=args.served_model_name,
        dtype=args.dtype,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib,
        num_gpu_blocks=args.num_gpu_blocks,
        threads=args.threads,
        startup_timeout_s=args.startup_timeout,
        log_path=args.vllm_log,
    )
