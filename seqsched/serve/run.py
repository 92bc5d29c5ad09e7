"""Running the app: uvicorn started with the client limits, SIGTERM drained on time, exit 0."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import uvicorn

from seqsched.serve.app import build_app
from seqsched.serve.config import ServeConfig
from seqsched.serve.limits import guarded_protocol, raise_open_files_limit
from seqsched.serve.predictor import PredictFn
from seqsched.serve.server import Server


class _DrainingServer(uvicorn.Server):
    """On SIGTERM or SIGINT, the app starts its drain (``Server.begin_drain``: requests in
    flight get ``drain_timeout_s``, then end with a 503); uvicorn's own grace is a little
    longer, so the app's deadline is the one that acts. uvicorn re-raises the signal once
    it has drained, which would end the process before seqsched stops the vLLM it
    started; a drained server here returns, and the caller exits 0 after its own cleanup."""

    def __init__(self, config: uvicorn.Config, app_server: Server) -> None:
        super().__init__(config)
        self.app_server = app_server

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self.app_server.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.app_server.begin_drain)
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def warnings(config: ServeConfig) -> list[str]:
    """What a user should hear before serving beyond this machine."""
    out = []
    if not config.is_loopback:
        out.append(f"seqsched serve: listening on {config.host}, beyond this machine")
        if config.api_key is None:
            out.append("seqsched serve: no --api-key: anyone who can reach this port can use the upstreams")
    return out


def run_server(
    config: ServeConfig, predict: PredictFn, background: Callable[[Server], Coroutine[Any, Any, None]] | None = None
) -> None:
    """Serve until SIGINT or SIGTERM (``background``: a task beside the app's, ``build_app``)."""
    for line in warnings(config):
        print(f"WARNING: {line}", file=sys.stderr, flush=True)
    raise_open_files_limit()
    app = build_app(config, predict, background=background)
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    server_config = uvicorn.Config(
        app, config.host, config.port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=math.ceil(config.drain_timeout_s) + 5, timeout_keep_alive=5, backlog=2048,
        loop="uvloop" if has_uvloop else "asyncio",
        http=guarded_protocol(config.header_timeout_s, config.max_connections),
    )  # fmt: skip
    _DrainingServer(server_config, app.state.server).run()
