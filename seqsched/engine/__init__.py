"""Engines: execute micro-batches (HF transformers, trace replay, simulator)."""

from seqsched.engine.base import BatchRun, Engine

__all__ = ["BatchRun", "Engine"]
