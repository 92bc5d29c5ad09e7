"""Response length perception by instruction tuning (the paper's section 3.2): a LoRA
adapter on the serving model answers "how many tokens will your response take?".

NOTE on sharing weights with serving. ``peft`` injects the LoRA layers *into* the model
it is given, in place. The predictor therefore wraps the serving engine's own model:
its adapter layers stay disabled at all times except inside ``predict``, which enables
them for one short greedy generation and disables them again (in a ``finally``). An
engine that runs that same model object outside ``predict`` serves the base model's
exact outputs. Wire it as ``LoraPredictor.load(path, model=engine.model,
tokenizer=engine.tokenizer)``; the pipeline calls ``predict`` and ``engine.run`` in
turn, never at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqsched.predict import _llm
from seqsched.predict.base import LengthPredictor, read_manifest, write_manifest
from seqsched.predict.pia import to_lengths
from seqsched.request import Request

QUERY_PROMPT = (
    "\nDon't output the response for the above instruction. Instead, you need to predict "
    "the number of tokens in your response. Output one number only."
)
IGNORE = -100  # label of tokens that carry no loss


@dataclass(frozen=True)
class LoraTrainConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 3e-4
    epochs: int = 1
    batch_size: int = 8
    seed: int = 0
    bin_size: int = 50  # answers are max lengths rounded up to a multiple of this
    max_steps: int | None = None  # stop early (smoke tests); None: all epochs

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "epochs", "batch_size", "bin_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout ({self.dropout}) must be in [0, 1)")
        if not self.lr > 0:
            raise ValueError(f"lr ({self.lr}) must be > 0")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= 1")


def round_up(length: int, bin_size: int = 50) -> int:
    """The training answer: 123 -> 150, 150 -> 150, 0 -> 50."""
    return max(1, -(-int(length) // bin_size)) * bin_size


def instruction_example(tokenizer: Any, text: str, length: int, bin_size: int = 50) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one prompt: the user turn with the query appended, then the
    rounded answer and EOS. Only the answer tokens carry a loss."""
    prompt = _llm.encode(tokenizer, _llm.user_turn(text + QUERY_PROMPT))
    answer = list(tokenizer(str(round_up(length, bin_size)), add_special_tokens=False).input_ids)
    answer.append(tokenizer.eos_token_id)
    return prompt + answer, [IGNORE] * len(prompt) + answer


class LoraPredictor(LengthPredictor):
    kind = "lora"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        limit: int = 512,
        config: LoraTrainConfig | None = None,
        batch_size: int = 16,
        max_new_tokens: int = 8,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit ({limit}) must be >= 1")
        self.model = model  # the serving model; LoRA layers are injected into it
        self.tokenizer = tokenizer
        self.limit = limit
        self.config = config or LoraTrainConfig()
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.peft_model: Any = None
        self.num_fallbacks = 0
        self.losses: list[float] = []
        self.last_completions: list[str] = []

    def fit(self, texts: Sequence[str], lengths: Sequence[int]) -> None:
        if len(texts) != len(lengths) or not texts:
            raise ValueError(f"need as many texts as lengths, and some ({len(texts)} vs {len(lengths)})")
        if self.peft_model is not None:
            raise ValueError("this predictor already holds an adapter: build a new one on a fresh model")
        from peft import LoraConfig, get_peft_model

        cfg = self.config
        examples = [
            instruction_example(self.tokenizer, t, n, cfg.bin_size) for t, n in zip(texts, lengths, strict=True)
        ]
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)  # LoRA init and dropout
            peft_config = LoraConfig(
                r=cfg.r,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.dropout,
                target_modules=list(cfg.target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            )
            with _quiet_peft():
                self.peft_model = get_peft_model(self.model, peft_config)
            try:
                self._train(examples)
            finally:
                self.peft_model.base_model.disable_adapter_layers()
                self.model.eval()

    def _train(self, examples: list[tuple[list[int], list[int]]]) -> None:
        cfg = self.config
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        order = list(range(len(examples)))
        rng = random.Random(cfg.seed)
        self.model.train()
        self.losses = []
        for _ in range(cfg.epochs):
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                if cfg.max_steps is not None and len(self.losses) >= cfg.max_steps:
                    return
                batch = [examples[i] for i in order[start : start + cfg.batch_size]]
                loss = self.model(**self._collate(batch)).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                self.losses.append(loss.item())

    def _collate(self, batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Right padding: no generation happens here, and positions start at 0."""
        width = max(len(ids) for ids, _ in batch)
        pad = _llm.pad_id(self.tokenizer)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (row, row_labels) in enumerate(batch):
            ids[i, : len(row)] = torch.tensor(row)
            labels[i, : len(row)] = torch.tensor(row_labels)
            mask[i, : len(row)] = 1
        device = _llm.device_of(self.model)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}

    @contextlib.contextmanager
    def adapter_enabled(self) -> Iterator[None]:
        """The adapter is on inside this block only; serving sees the base model."""
        if self.peft_model is None:
            raise ValueError("the lora predictor has no adapter: fit or load it first")
        self.peft_model.base_model.enable_adapter_layers()
        try:
            yield
        finally:
            self.peft_model.base_model.disable_adapter_layers()

    def predict(self, texts: Sequence[str]) -> list[int]:
        return self._predict([_llm.user_turn(t + QUERY_PROMPT) for t in texts], [self.limit] * len(texts))

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        limits = [min(self.limit, r.max_new_tokens) for r in requests]
        return self._predict([_llm.with_suffix(r, QUERY_PROMPT) for r in requests], limits)

    def _predict(self, conversations: Sequence[_llm.Messages], limits: Sequence[int]) -> list[int]:
        prompts = [_llm.encode(self.tokenizer, c) for c in conversations]
        with self.adapter_enabled():
            self.last_completions = _llm.greedy_completions(
                self.model, self.tokenizer, prompts, self.max_new_tokens, self.batch_size
            )
        predicted, self.num_fallbacks = to_lengths(self.last_completions, limits, self.num_fallbacks)
        return predicted

    def save(self, path: str | Path) -> None:
        if self.peft_model is None:
            raise ValueError("the lora predictor has no adapter to save: fit it first")
        directory = Path(path)
        self.peft_model.save_pretrained(directory)
        config = {
            "model_path": _llm.model_path(self.model, path),
            "limit": self.limit,
            "batch_size": self.batch_size,
            "max_new_tokens": self.max_new_tokens,
            "train": dataclasses.asdict(self.config),
        }
        write_manifest(directory, self.kind, config)

    @classmethod
    def load(cls, path: str | Path, model: Any = None, tokenizer: Any = None) -> LoraPredictor:
        """Attach the saved adapter to ``model`` (the serving model; default: the base
        model from the manifest), disabled outside ``predict``."""
        from peft import PeftModel

        config = dict(read_manifest(path, cls.kind)["config"])
        model, tokenizer = _llm.load_base(_llm.resolve_model_path(config.pop("model_path"), path), model, tokenizer)
        train = config.pop("train")
        train["target_modules"] = tuple(train["target_modules"])
        predictor = cls(model, tokenizer, config=LoraTrainConfig(**train), **config)
        with _quiet_peft():
            predictor.peft_model = PeftModel.from_pretrained(model, str(path))
        predictor.peft_model.base_model.disable_adapter_layers()
        model.eval()
        return predictor


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft calls a transformers API that v5 deprecates; the warning is not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        yield
