"""vLLM's offline engine, driven by seqsched's stream plans through public API only.

NOTE on how a plan reaches vLLM:
- The engine is built once, with ``scheduling_policy="priority"``. Each request is
  added with ``LLMEngine.add_request(..., priority=rank)``, the rank in the plan's
  order, so vLLM's waiting heap pops exactly that order, and when the KV cache is full
  vLLM preempts the running request ranked last. A plain ``fcfs`` plan ranks requests
  in input order, which is vLLM's ``fcfs`` order; the same engine instance therefore
  runs plain vLLM and every seqsched policy.
- ``kv`` admission holds requests back: they are added only while the plan's admission
  rule says the running ones fit the cache. Requests then report their tokens every
  step (``RequestOutputKind.DELTA``) so one that outgrows its reservation is charged
  for it; plans without admission ask for final outputs only, as ``LLM.generate`` does.
- vLLM's prefix cache is on (its default) but emptied at the start of every run, so a
  strategy never reuses the prompt blocks of the one before it.
- ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (set here unless the user set it) keeps the
  engine core in this process: requests added before a ``step()`` are all in the
  scheduler when it runs, so priorities are exact, and start-up takes seconds.
- Prompts are tokenized by seqsched (``engine/prompts.py``: the same chat template and
  checks as the HF engine) and passed as token ids. vLLM's ``token_ids`` include the
  EOS token, as seqsched counts. A replayed request (``target_len``) runs with
  ``ignore_eos`` and ``max_tokens`` set to its trace length.
- Sampling uses vLLM's own sampler with a per-request seed (``EngineConfig.seed`` +
  index unless the request has one): reproducible run to run, but not the HF engine's
  draws. Greedy tokens match the HF engine in float32.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from seqsched.engine.config import EngineConfig, VLLMConfig
from seqsched.engine.prompts import cut, eos_token_ids, stop_at, tokenize_all
from seqsched.engine.source import ModelLoadError, check_source
from seqsched.engine.stream import StepOutput, StreamEngine, StreamRun
from seqsched.request import Request
from seqsched.schedule import StreamPlan

# vLLM logs to stdout by default, between the rows of seqsched's tables: send it to stderr
# (read when vLLM is first imported; a user's own setting wins).
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

CPU_MEMORY_SHARE = 0.1
CPU_KV_CACHE_GIB = 1.0


class VLLMEngine(StreamEngine):
    name = "vllm"

    def __init__(self, config: EngineConfig, vllm_config: VLLMConfig | None = None) -> None:
        self.config = config
        self.vllm_config = vllm_config or VLLMConfig()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # per-step INFO lines would bury the progress bar
        check_source(config.model, "model")
        check_source(config.tokenizer_path, "tokenizer")
        self.llm = _build(config, self.vllm_config)
        self.engine: Any = self.llm.llm_engine
        self.tokenizer: Any = self.llm.get_tokenizer()
        cache = self.engine.vllm_config.cache_config
        self.block_size = int(cache.block_size)
        self._num_blocks = int(cache.num_gpu_blocks)
        self.max_context = int(self.engine.vllm_config.model_config.max_model_len)
        generation_config = getattr(self.engine.vllm_config.model_config, "hf_config", None)
        self.eos_token_ids = eos_token_ids(generation_config, self.tokenizer)
        self._track = False

    @property
    def kv_capacity(self) -> int:
        """Tokens the cache holds: vLLM keeps one block as its null block."""
        return (self._num_blocks - 1) * self.block_size

    def prepare(self, requests: Sequence[Request]) -> None:
        tokenize_all(self.tokenizer, requests, self.config.chat_template, self.max_context)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def start(self, plan: StreamPlan, requests: Sequence[Request]) -> None:
        if self.engine.has_unfinished_requests():
            raise RuntimeError("the vLLM engine still has requests from an earlier run")
        self.llm.reset_prefix_cache()
        # Only an admission rule needs to hear how many tokens running requests hold.
        self._track = plan.reserve is not None
        self._start = time.perf_counter()
        self._preemptions_before = self._preemptions()
        self._tokens: dict[str, list[int]] = {}
        self._requests: dict[str, Request] = {}

    def submit(self, request: Request, priority: int) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kept = len(request.output_prefix)
        replay = request.target_len is not None
        params = SamplingParams(
            n=1,
            temperature=request.sampling.temperature,
            top_p=request.sampling.top_p,
            seed=None if request.sampling.greedy else _seed(request, self.config.seed),
            max_tokens=(request.target_len - kept) if replay else request.remaining_tokens,  # type: ignore[operator]
            ignore_eos=replay,
            stop=list(request.stop) or None,
            include_stop_str_in_output=True,  # seqsched trims the text itself, as for every engine
            skip_special_tokens=True,
            detokenize=bool(request.stop),  # vLLM matches stop strings on its detokenized text
            output_kind=RequestOutputKind.DELTA if self._track else RequestOutputKind.FINAL_ONLY,
        )
        prompt = {"prompt_token_ids": [*(request.prompt_token_ids or []), *request.output_prefix]}
        key = str(request.index)
        self._tokens[key] = []
        self._requests[key] = request
        self.engine.add_request(key, prompt, params, priority=priority)

    def step(self) -> StepOutput:
        result = StepOutput()
        for output in self.engine.step():
            key = output.request_id
            completion = output.outputs[0]
            self._tokens[key].extend(int(t) for t in completion.token_ids)
            request = self._requests[key]
            if output.finished:
                tokens = self._tokens.pop(key)
                del self._requests[key]
                if request.target_len is not None:
                    result.finished.append((request.index, tokens, True))
                else:
                    own, ended = cut(tokens, request.remaining_tokens, self.eos_token_ids)
                    end = stop_at(own, request.stop, self.decode)
                    own = own[:end] if end is not None else own
                    result.finished.append((request.index, own, ended or completion.finish_reason == "stop"))
            else:
                held = request.num_prompt_tokens + len(request.output_prefix) + len(self._tokens[key])
                result.held_tokens[request.index] = held
        return result

    def has_unfinished(self) -> bool:
        return bool(self.engine.has_unfinished_requests())

    def now(self) -> float:
        return time.perf_counter() - self._start

    def finish(self) -> StreamRun:
        seconds = self.now()
        if self.engine.has_unfinished_requests():  # an error mid-run: leave the engine clean
            self.engine.abort_request(list(self._requests))
        return StreamRun(seconds, self._preemptions() - self._preemptions_before)

    def _preemptions(self) -> int:
        for metric in self.llm.get_metrics():
            if metric.name == "vllm:num_preemptions":
                return int(getattr(metric, "value", 0))
        return 0


def _gib(value: float | None) -> int | None:
    return None if value is None else int(value * (1 << 30))


def _seed(request: Request, default: int) -> int:
    return request.sampling.seed if request.sampling.seed is not None else default + request.index


def _build(config: EngineConfig, vllm_config: VLLMConfig) -> Any:
    """The ``vllm.LLM``, or a ModelLoadError that says what is missing."""
    try:
        import torch
        from vllm import LLM
    except ImportError as e:
        raise ModelLoadError(
            f"the vLLM engine needs the vllm package ({e}); install it with `bash scripts/install.sh vllm`"
        ) from None
    cuda = torch.cuda.is_available()
    if config.num_threads is not None:
        # vLLM's CPU worker binds OpenMP threads to cores and then ignores set_num_threads:
        # take the thread count now, and leave binding off so it is kept.
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        torch.set_num_threads(config.num_threads)
    dtype = config.dtype if config.dtype != "auto" else ("auto" if cuda else "float32")
    kwargs: dict[str, Any] = {
        "model": config.model,
        "kv_cache_memory_bytes": _gib(vllm_config.kv_cache_gib or (None if cuda else CPU_KV_CACHE_GIB)),
        "tokenizer": config.tokenizer_path,
        "dtype": dtype,
        "seed": config.seed,
        "trust_remote_code": config.trust_remote_code,
        "scheduling_policy": "priority",
        "max_num_seqs": vllm_config.max_num_seqs,
        "enforce_eager": not cuda,
        "disable_log_stats": False,  # the preemption counter
        "gpu_memory_utilization": vllm_config.gpu_memory_utilization or (0.9 if cuda else CPU_MEMORY_SHARE),
    }
    optional = {
        "num_gpu_blocks_override": vllm_config.num_gpu_blocks,
        "block_size": vllm_config.block_size,
        "max_model_len": vllm_config.max_model_len,
        "max_num_batched_tokens": vllm_config.max_num_batched_tokens,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return LLM(**kwargs)
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"vLLM cannot load model {config.model!r}: {first_line}") from None
