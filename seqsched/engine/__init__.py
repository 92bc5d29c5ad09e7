"""Engines: running work on a real model. Static batching (HF ``generate``, trace replay),
continuous batching (transformers' ``generate_batch``, vLLM), and loading models and
prompts. Simulated engines, step costs and calibration live in ``seqsched.simulate``."""

from seqsched.engine.base import BatchRun, Engine

__all__ = ["BatchRun", "Engine"]
