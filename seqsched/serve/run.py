"""Running the app: upstreams found, uvicorn started, SIGTERM drained, exit 0."""

from __future__ import annotations

import asyncio
import sys
from types import FrameType

import uvicorn

from seqsched.serve.app import Predict, build_app, discover
from seqsched.serve.config import ServeConfig


class _DrainingServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM once it has drained, which would end the process before
    seqsched stops the vLLM it started; a drained server here returns, and the caller
    exits 0 after its own cleanup."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run_server(config: ServeConfig, predict: Predict) -> None:
    """Serve until SIGINT or SIGTERM; requests in flight get ``drain_timeout_s`` to finish."""
    upstreams = asyncio.run(discover(config))
    app = build_app(config, predict, upstreams)
    shown = ", ".join(f"{u.url}{' (vLLM: priority)' if u.priority else ''}" for u in upstreams)
    print(
        f"seqsched serve: http://{config.host}:{config.port}/v1 -> {shown}; policy {config.policy}, "
        f"max_inflight {config.max_inflight} per upstream, max_bypass {config.max_bypass}",
        file=sys.stderr,
        flush=True,
    )
    drain = int(config.drain_timeout_s)
    server_config = uvicorn.Config(
        app, config.host, config.port, log_level="warning", timeout_graceful_shutdown=drain, access_log=False,
        loop="uvloop" if _has("uvloop") else "auto", http="httptools" if _has("httptools") else "auto",
    )  # fmt: skip
    _DrainingServer(server_config).run()
