"""Fit the continuous step cost (``simulate/step_cost.py``) to vLLM's own steps. Uses vLLM.

NOTE on what is timed. The engine core runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so each ``LLMEngine.step()`` call is exactly one
scheduler step: schedule, forward pass, sampling and output processing. A wrapper
around the scheduler's ``schedule()`` reads what that step scheduled from vLLM's own
``SchedulerOutput`` (tokens per request, and the tokens each had computed before), so a
step's shape is vLLM's, not a guess from our model of its scheduler. The wall time of
the ``step()`` call is the step's cost. Each grid point adds ``batch`` requests of
``prompt`` random tokens (EOS ignored, ``num_steps`` output tokens), and half as many
again halfway through, so steps that mix prefill chunks and decodes are timed too.
The fit is least squares on seconds over every timed step; its errors are reported on
steps pooled by shape (the median of each).
"""

from __future__ import annotations

import datetime
import platform
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from seqsched.simulate.step_cost import ContinuousCost, StepShape, TimedStep


class StepRecorder:
    """Reads each step's shape from the in-process scheduler of a ``vllm.LLMEngine``."""

    def __init__(self, llm_engine: Any) -> None:
        core = getattr(getattr(llm_engine, "engine_core", None), "engine_core", None)
        scheduler = getattr(core, "scheduler", None)
        if scheduler is None or not hasattr(scheduler, "schedule"):
            raise RuntimeError(
                "calibrating vLLM needs its engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) "
                "and a v1 scheduler"
            )
        self.scheduler = scheduler
        self.shapes: list[StepShape] = []
        inner = scheduler.schedule

        def schedule(*args: Any, **kwargs: Any) -> Any:
            output = inner(*args, **kwargs)
            self.shapes.append(shape_of(output))
            return output

        scheduler.schedule = schedule

    @property
    def config(self) -> dict[str, Any]:
        sc = self.scheduler.scheduler_config
        cache = self.scheduler.cache_config
        return {
            "max_num_seqs": int(sc.max_num_seqs),
            "max_num_batched_tokens": int(sc.max_num_batched_tokens),
            "block_size": int(cache.block_size),
            "num_gpu_blocks": int(cache.num_gpu_blocks),
            "enable_prefix_caching": bool(cache.enable_prefix_caching),
            "chunked_prefill": bool(sc.enable_chunked_prefill),
        }


def shape_of(output: Any) -> StepShape:
    """A step's shape from vLLM's ``SchedulerOutput``: one scheduled token after the
    request's computed ones is a decode; more is a prefill chunk."""
    computed = {r.req_id: int(r.num_computed_tokens) for r in output.scheduled_new_reqs}
    cached = output.scheduled_cached_reqs
    computed.update(zip(cached.req_ids, (int(n) for n in cached.num_computed_tokens), strict=True))
    decode_context = prefill_attention = 0
    for req_id, n in output.num_scheduled_tokens.items():
        done = computed.get(req_id, 0)
        if n == 1 and done > 0:
            decode_context += done + 1
        else:
            prefill_attention += n * (done + n)
    return StepShape(
        seqs=len(output.num_scheduled_tokens),
        tokens=int(output.total_num_scheduled_tokens),
        decode_context=decode_context,
        prefill_attention=prefill_attention,
    )


def run_one(llm_engine: Any, recorder: StepRecorder) -> list[TimedStep]:
    """One ``step()``, timed, with its shape (nothing if it scheduled no work)."""
    return _step(llm_engine, recorder)[0]


def _step(llm_engine: Any, recorder: StepRecorder) -> tuple[list[TimedStep], int]:
    """One timed ``step()`` and how many requests it finished."""
    before = len(recorder.shapes)
    start = time.perf_counter()
    outputs = llm_engine.step()
    seconds = time.perf_counter() - start
    finished = sum(1 for o in outputs if o.finished)
    if len(recorder.shapes) == before + 1 and recorder.shapes[-1].tokens > 0:
        return [TimedStep(recorder.shapes[-1], seconds)], finished
    return [], finished


def run_timed(llm_engine: Any, recorder: StepRecorder) -> list[TimedStep]:
    """Step the engine until it is idle."""
    steps = []
    while llm_engine.has_unfinished_requests():
        steps.extend(run_one(llm_engine, recorder))
    return steps


def measure(
    llm: Any,
    batch_sizes: Sequence[int],
    prompt_lens: Sequence[int],
    num_steps: int = 32,
    repeats: int = 2,
    seed: int = 0,
    progress: Callable[[int, int, list[TimedStep]], None] | None = None,
) -> tuple[list[TimedStep], dict[str, Any]]:
    """Timed steps over the grid (after an untimed warm-up), and the engine's settings."""
    from vllm import SamplingParams

    engine = llm.llm_engine
    recorder = StepRecorder(engine)
    vocab = int(engine.vllm_config.model_config.get_vocab_size())
    rng = random.Random(seed)
    params = SamplingParams(max_tokens=num_steps, ignore_eos=True, temperature=0.0, detokenize=False)
    counter = iter(range(1 << 62))

    def add(batch: int, prompt: int) -> None:
        for _ in range(batch):
            tokens = [rng.randrange(min(100, vocab - 1), vocab) for _ in range(prompt)]
            engine.add_request(f"calibrate-{next(counter)}", {"prompt_token_ids": tokens}, params)

    def wave(batch: int, prompt: int) -> list[TimedStep]:
        add(batch, prompt)
        steps = []
        for _ in range(num_steps // 2):  # then a second, smaller wave joins the running one
            steps.extend(run_one(engine, recorder))
        add(max(1, batch // 2), prompt)
        steps.extend(run_timed(engine, recorder))
        return steps

    wave(min(batch_sizes), min(prompt_lens))  # warm-up, untimed
    timed: list[TimedStep] = []
    for batch in batch_sizes:
        for prompt in prompt_lens:
            point: list[TimedStep] = []
            for _ in range(repeats):
                llm.reset_prefix_cache()
                point.extend(wave(batch, prompt))
            timed.extend(point)
            if progress is not None:
                progress(batch, prompt, point)
    return timed, recorder.config


def measure_workload(
    llm: Any,
    prompts: Sequence[Sequence[int]],
    outputs: Sequence[int],
    concurrency: Sequence[int],
    progress: Callable[[int, int, list[TimedStep]], None] | None = None,
) -> tuple[list[TimedStep], dict[str, Any]]:
    """Timed steps of a real workload (token ids, forced output lengths), run once at each
    concurrency: at most that many requests at vLLM, a new one added as one finishes, so
    the steps have the workload's own mix of prompt chunks, decodes and contexts."""
    from vllm import SamplingParams

    if len(prompts) != len(outputs) or not prompts:
        raise ValueError(f"need as many output lengths ({len(outputs)}) as prompts ({len(prompts)}), at least one")
    engine = llm.llm_engine
    recorder = StepRecorder(engine)
    counter = iter(range(1 << 62))

    def run(limit: int, count: int) -> list[TimedStep]:
        pending = list(range(count))[::-1]
        inflight, steps = 0, []
        while pending or engine.has_unfinished_requests():
            while pending and inflight < limit:
                i = pending.pop()
                params = SamplingParams(max_tokens=outputs[i], ignore_eos=True, temperature=0.0, detokenize=False)
                engine.add_request(f"calibrate-{next(counter)}", {"prompt_token_ids": list(prompts[i])}, params)
                inflight += 1
            timed, finished = _step(engine, recorder)
            steps.extend(timed)
            inflight -= finished
        return steps

    run(min(concurrency), min(len(prompts), 2 * min(concurrency)))  # warm-up, untimed
    timed: list[TimedStep] = []
    for limit in concurrency:
        llm.reset_prefix_cache()
        point = run(limit, len(prompts))
        timed.extend(point)
        if progress is not None:
            progress(limit, len(prompts), point)
    return timed, recorder.config


def pooled(steps: Sequence[TimedStep]) -> list[TimedStep]:
    """One step per distinct shape, at the median of its times."""
    groups: dict[StepShape, list[float]] = defaultdict(list)
    for s in steps:
        groups[s.shape].append(s.seconds)
    return [TimedStep(shape, statistics.median(times)) for shape, times in groups.items()]


def fit(steps: Sequence[TimedStep], provenance: dict[str, Any]) -> ContinuousCost:
    """The step cost fitted to every timed step (least squares on seconds, so the total
    is unbiased), with its errors on the pooled shapes and its inputs in the provenance."""
    points = pooled(steps)
    cost = ContinuousCost.fit(steps, provenance)
    errors = [abs(e) for e in cost.relative_errors(points)]
    total_measured = sum(s.seconds for s in steps)
    total_model = sum(cost.of(s.shape) for s in steps)
    cost.provenance.update(
        fit_median_rel_error=statistics.median(errors),
        fit_max_rel_error=max(errors),
        fit_total_rel_error=total_model / total_measured - 1,
        num_steps_timed=len(steps),
        num_shapes=len(points),
        samples=[
            [p.shape.seqs, p.shape.tokens, p.shape.decode_context, p.shape.prefill_attention, p.seconds] for p in points
        ],
    )
    return cost


def provenance(model: str, dtype: str, threads: int | None, engine_settings: dict[str, Any]) -> dict[str, Any]:
    import torch
    import vllm

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {
        "device": f"{name} ({threads or 'default'} thread{'' if threads == 1 else 's'})",
        "model": model,
        "dtype": dtype,
        "engine": f"vllm {vllm.__version__} (offline LLMEngine, in-process core)",
        "date": datetime.date.today().isoformat(),
        "source": "seqsched calibrate --engine vllm",
        **engine_settings,
    }
