"""The server's Prometheus metrics (text format at ``/metrics``), one registry per app.
Lane-labelled gauges are read from the front door when ``/metrics`` is asked for."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250)
_TOKENS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "seqsched_requests", "requests answered, by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.waiting = Gauge("seqsched_queue_length", "requests waiting for an upstream slot", registry=r)
        self.lane_waiting = Gauge("seqsched_lane_waiting", "requests waiting, by lane", ["lane"], registry=r)
        self.lane_running = Gauge("seqsched_lane_running", "requests holding a slot, by lane", ["lane"], registry=r)
        self.inflight = Gauge("seqsched_inflight", "requests forwarded and not yet done", ["upstream"], registry=r)
        self.predicted = Histogram("seqsched_predicted_tokens", "predicted output length", buckets=_TOKENS, registry=r)
        self.actual = Histogram("seqsched_output_tokens", "actual output length (usage)", buckets=_TOKENS, registry=r)
        self.queue_seconds = Histogram("seqsched_queue_seconds", "time waiting for slots", buckets=_SECONDS, registry=r)
        self.ttft = Histogram("seqsched_ttft_seconds", "time to first token (streamed)", buckets=_SECONDS, registry=r)
        self.e2e = Histogram("seqsched_e2e_seconds", "end-to-end latency", buckets=_SECONDS, registry=r)
        fast = (1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.01)
        self.predict_seconds = Histogram("seqsched_predict_seconds", "length prediction time", buckets=fast, registry=r)
        self.trace_errors = Counter("seqsched_trace_errors", "served-trace records that could not be written",
                                    registry=r)  # fmt: skip
        self.stalled = Counter("seqsched_stalled_streams", "streams ended because the client stopped reading",
                               registry=r)  # fmt: skip
        self.preemptions = Gauge("seqsched_batch_preemptions", "batch requests preempted for interactive ones",
                                 registry=r)  # fmt: skip
        self.upstream_preemptions = Gauge("seqsched_upstream_preemptions", "preemptions each vLLM upstream counts "
                                          "(its vllm:num_preemptions_total)", ["upstream"], registry=r)  # fmt: skip
        self.held_for_kv = Gauge("seqsched_held_for_kv", "decisions that kept a request waiting for KV room "
                                 "(--door-kv-blocks)", registry=r)  # fmt: skip
        self.batch_cap = Gauge("seqsched_batch_cap", "batch requests the lane lets run at once", registry=r)
        self.batch_tokens = Counter("seqsched_batch_tokens", "output tokens the batch lane generated", registry=r)
        self.batch_recomputed = Counter(
            "seqsched_batch_recomputed_tokens",
            "tokens prefilled again to continue preempted batch requests",
            registry=r,
        )
        self.batch_retries = Counter("seqsched_batch_retries", "batch calls retried after an upstream fault, by kind",
                                     ["kind"], registry=r)  # fmt: skip
        self.batch_disk_errors = Counter(
            "seqsched_batch_disk_errors", "writes of batch answers or files the disk refused (retried)", registry=r
        )
        self.batch_requests = Counter("seqsched_batch_requests", "batch requests ended, by outcome", ["outcome"],
                                      registry=r)  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
