"""vLLM replicas that Ray places and restarts, behind seqsched's front door
(`seqsched serve --model M --replicas N [--ray-address ADDR]`).

Ray does what Ray does: it places each replica on a node with the resources asked for
(``--replica-cpus``, ``--replica-gpus``) and restarts one that dies. seqsched decides:
order, lanes, routing and batches, as it does for upstreams it is given.

NOTE on a replica. A replica is a Ray actor (``max_restarts=-1``) that starts vLLM's
OpenAI server as the `seqsched serve --model` path does (``serve/launch.py``), on a free
port of its node: loopback when it runs on the door's own node, its node's address
otherwise. A thread watches that server; if it exits (killed, out of memory), the actor
exits too, and Ray starts it again, with a new server on a new port. Plain actors rather
than a Ray Serve deployment: the door routes to each replica itself (it owns the slots,
the lanes and continuation), and Ray Serve's router would hide which replica a request
reaches.

NOTE on the door's view (:meth:`RayReplicas.watch`). Every second it asks each replica
where it is. One that does not answer (dead, or restarting) is taken out of routing (its
slots set to 0): requests it held fail over as any upstream failure does (an interactive
request that has sent nothing goes elsewhere, a batch line continues from its token ids
elsewhere, a stream under way ends with an OpenAI error event). When Ray brings it back,
its new address replaces the old one and it takes work again.

NOTE on Ray's token authentication (on by default in Ray 2.60 for ``ray start --head``).
seqsched connects with ``ray.init``, which finds the token as every Ray client does:
``$RAY_AUTH_TOKEN``, the file at ``$RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` (which
``ray start --head`` writes). ``RAY_AUTH_MODE=disabled`` turns it off, on the cluster and
for seqsched alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from seqsched.serve.launch import LocalVLLMConfig, start_vllm, stop

if TYPE_CHECKING:
    from seqsched.serve.server import Server

log = logging.getLogger("seqsched.serve")
_PROBE_S = 1.0


@dataclass(frozen=True)
class ReplicaSettings:
    """How many replicas, where (``ray_address``: None starts a local Ray for the server's
    life; ``auto`` joins the cluster of ``ray start``), and each one's resources."""

    replicas: int
    ray_address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas ({self.replicas}) must be >= 1")
        if self.cpus < 0 or self.gpus < 0:
            raise ValueError(f"a replica's resources must be >= 0 (cpus {self.cpus}, gpus {self.gpus})")


class VLLMReplica:
    """One replica (a Ray actor): a vLLM server on this node, and a watch on it."""

    def __init__(self, config: LocalVLLMConfig, door_node: str) -> None:
        here = ray.get_runtime_context().get_node_id()
        host = "127.0.0.1" if here == door_node else ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.process, self.url, _ = start_vllm(dataclasses.replace(config, host=host))
        self.started = time.time()
        threading.Thread(target=self._watch, daemon=True).start()

    def where(self) -> tuple[str, float]:
        """Its server's URL, and when it started (a restarted replica has a new one)."""
        return self.url, self.started

    def shutdown(self) -> None:
        stop(self.process)

    def _watch(self) -> None:
        self.process.wait()
        log.warning("seqsched: the vLLM server of replica %s exited (%s): the replica exits, Ray restarts it",
                    self.url, self.process.returncode)  # fmt: skip
        os._exit(1)


class RayReplicas:
    """The replicas, started on entering and stopped on leaving (with the local Ray, if
    this started one)."""

    def __init__(self, settings: ReplicaSettings, vllm: LocalVLLMConfig, startup_timeout_s: float = 900.0) -> None:
        self.settings, self.vllm, self.startup_timeout_s = settings, vllm, startup_timeout_s
        self.actors: list[Any] = []
        self.urls: list[str] = []
        self.started: list[float] = []
        self._own_ray = False

    def __enter__(self) -> RayReplicas:
        s = self.settings
        if not ray.is_initialized():
            if s.ray_address is None:  # a local Ray of this machine's size (at least what the replicas ask)
                cpus = max(os.cpu_count() or 1, math.ceil(s.replicas * s.cpus))
                ray.init(num_cpus=cpus, log_to_driver=False, include_dashboard=False)
            else:
                ray.init(address=s.ray_address, log_to_driver=False)
            self._own_ray = True
        try:
            self._check_resources()
            door = ray.get_runtime_context().get_node_id()
            remote = ray.remote(VLLMReplica).options(
                num_cpus=s.cpus, num_gpus=s.gpus, max_restarts=-1, max_task_retries=0
            )
            self.actors = [remote.remote(self.vllm, door) for _ in range(s.replicas)]
            where = ray.get([a.where.remote() for a in self.actors], timeout=self.startup_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.__exit__(None, None, None)
            raise TimeoutError(f"the {s.replicas} replicas were not all up after {self.startup_timeout_s:.0f} s "
                               "(another job may hold the cluster's resources)") from None  # fmt: skip
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.urls = [url for url, _ in where]
        self.started = [started for _, started in where]
        return self

    def __exit__(self, *exc: object) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.get(actor.shutdown.remote(), timeout=30)
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self.actors = []
        if self._own_ray:
            ray.shutdown()
            self._own_ray = False

    def _check_resources(self) -> None:
        """A cluster without the resources gets an error naming what is missing, not a hang."""
        s = self.settings
        total = ray.cluster_resources()  # type: ignore[no-untyped-call]
        need = {"CPU": s.replicas * s.cpus, "GPU": s.replicas * s.gpus}
        short = [f"{need[k]:g} {k}s (the cluster has {total.get(k, 0):g})" for k in need
                 if need[k] > total.get(k, 0) + 1e-9]  # fmt: skip
        if short:
            raise ValueError(f"{s.replicas} replicas of --replica-cpus {s.cpus:g} and --replica-gpus {s.gpus:g} "
                             f"need {' and '.join(short)}")  # fmt: skip

    async def watch(self, server: Server) -> None:
        """Keep the door's upstreams where the replicas are (runs beside the app)."""
        slots = server.config.max_inflight
        ledger = server.door.ledger

        def unreachable(i: int) -> None:  # out of routing now; the next look brings it back if it answers
            if ledger.slots[i]:
                log.warning("seqsched serve: replica %d (%s) cannot be reached: out of routing", i, self.urls[i])
                ledger.set_slots(i, 0)

        server.upstreams.on_unreachable = unreachable
        while True:
            await asyncio.sleep(_PROBE_S)
            for i, actor in enumerate(self.actors):
                try:
                    url, started = await asyncio.wait_for(_awaitable(actor.where.remote()), timeout=2 * _PROBE_S)
                except Exception:  # dead, or being restarted by Ray
                    if ledger.slots[i]:
                        log.warning("seqsched serve: replica %d (%s) is down: out of routing", i, self.urls[i])
                        ledger.set_slots(i, 0)
                    continue
                if started != self.started[i]:
                    upstream = server.upstreams.upstreams[i]
                    log.warning("seqsched serve: replica %d is back at %s (was %s)", i, url, self.urls[i])
                    self.urls[i], self.started[i] = url, started
                    upstream.url, upstream.models, upstream.priority = url, [], None
                    server.upstreams.probe(upstream, force=True)
                if not ledger.slots[i]:
                    ledger.set_slots(i, slots)
                    server.dispatcher.pump()


async def _awaitable(ref: Any) -> Any:
    return await ref

