"""LLM-based length predictors (PiA, LoRA, probe), trace collection and predictor
evaluation, on the tiny random Llama. Nothing here measures quality: the tiny model knows
nothing; these check the plumbing (prompts, labels, adapter state, save/load, fields)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from seqsched.cli import main as cli
from seqsched.data.traces import read_trace
from seqsched.predict._llm import parse_length
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.evaluate import evaluate, length_metrics
from seqsched.predict.margin import MarginPredictor, with_margin
from seqsched.predict.pia import to_lengths
from seqsched.request import Request
from tests.tiny_model import corpus

TEXTS = corpus(8, seed=3)
LENGTHS = [23, 80, 140, 60, 200, 10, 95, 51]


def _load(model_dir: Path) -> tuple[Any, Any]:
    """A private copy of the tiny model: LoRA injects layers into the model it is given."""
    from seqsched.engine.config import EngineConfig
    from seqsched.engine.loading import load_model

    return load_model(EngineConfig(str(model_dir), device="cpu", dtype="float32"))


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("150", 150),
        (" 42\nSure, here is", 42),
        ("about 200 tokens", 200),
        ("100-150", 125),
        ("100 to 151 tokens", 126),
        ("1,200 tokens", 1200),
        ("~80 (maybe 90)", 80),
        ("no idea", None),
        ("", None),
    ],
)
def test_parse_length(text: str, expected: int | None) -> None:
    assert parse_length(text) == expected


def test_to_lengths_falls_back_to_the_limit_and_counts() -> None:
    lengths, fallbacks = to_lengths(["about 200 tokens", "sure!", "0", "9000", "x"], [512, 300, 512, 512, 64], 2)
    assert lengths == [200, 300, 1, 512, 64]
    assert fallbacks == 4


def test_pia_on_the_tiny_model_counts_its_fallbacks(tiny_engine: Any) -> None:
    from seqsched.predict.pia import PIA_PROMPT, PiAPredictor

    pia = PiAPredictor(tiny_engine.model, tiny_engine.tokenizer, limit=77, batch_size=2)
    predicted = pia.predict(TEXTS[:3])
    assert len(predicted) == 3 and all(1 <= p <= 77 for p in predicted)
    assert pia.num_fallbacks == sum(parse_length(c) is None for c in pia.last_completions)
    request = Request(0, "r0", messages=[{"role": "user", "content": TEXTS[0]}], max_new_tokens=40)
    assert all(p <= 40 for p in pia.predict_requests([request]))
    assert PIA_PROMPT.startswith("\nBefore responding")


# --- LoRA -----------------------------------------------------------------------------


def test_lora_instruction_data(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from seqsched.predict.lora import IGNORE, QUERY_PROMPT, instruction_example, round_up

    assert [round_up(n) for n in (0, 1, 50, 51, 123, 150)] == [50, 50, 50, 100, 150, 150]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, labels = instruction_example(tokenizer, TEXTS[0], 123)
    assert len(ids) == len(labels)
    answer_at = next(i for i, label in enumerate(labels) if label != IGNORE)
    assert all(label == IGNORE for label in labels[:answer_at])
    assert labels[answer_at:] == ids[answer_at:]  # loss on the answer tokens only
    prompt = str(tokenizer.decode(ids[:answer_at]))
    assert TEXTS[0] + QUERY_PROMPT in prompt and prompt.endswith("<|assistant|>")
    assert tokenizer.decode(ids[answer_at:], skip_special_tokens=True) == "150"
    assert ids[-1] == tokenizer.eos_token_id


def test_lora_trains_round_trips_and_leaves_serving_untouched(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    from seqsched.predict.lora import LoraPredictor, LoraTrainConfig

    config = LoraTrainConfig(lr=1e-2, batch_size=4, epochs=5, max_steps=6, seed=1)
    model, tokenizer = _load(tiny_model_dir)
    probe = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": TEXTS[0]}])["input_ids"]])
    with torch.no_grad():
        base_logits = model(probe).logits
    lora = LoraPredictor(model, tokenizer, limit=300, config=config)
    lora.fit(TEXTS, LENGTHS)
    assert len(lora.losses) == 6 and lora.losses[-1] < lora.losses[0]
    predicted = lora.predict(TEXTS[:4])
    assert all(1 <= p <= 300 for p in predicted)
    with torch.no_grad():
        assert torch.equal(model(probe).logits, base_logits), "serving must see the base model"
        with lora.adapter_enabled():
            assert not torch.allclose(model(probe).logits, base_logits), "the adapter should change logits"
        assert torch.equal(model(probe).logits, base_logits)

    lora.save(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    model2, tokenizer2 = _load(tiny_model_dir)
    loaded = LoraPredictor.load(tmp_path / "lora", model=model2, tokenizer=tokenizer2)
    assert loaded.predict(TEXTS[:4]) == predicted
    assert loaded.last_completions == lora.last_completions
    assert loaded.config == config

    again = LoraPredictor(*_load(tiny_model_dir), limit=300, config=config)
    again.fit(TEXTS, LENGTHS)
    assert again.losses == lora.losses, "a seeded fit must be reproducible"


# --- probe ----------------------------------------------------------------------------


@pytest.mark.parametrize("regressor", ["ridge", "quantile"])
def test_probe_fit_predict_save_load(tiny_engine: Any, tmp_path: Path, regressor: str) -> None:
    from seqsched.predict.probe import ProbeConfig, ProbePredictor
    from seqsched.predict.registry import load_predictor

    config = ProbeConfig(regressor=regressor, num_layers=2, batch_size=3)  # type: ignore[arg-type]
    probe = ProbePredictor(tiny_engine.model, tiny_engine.tokenizer, limit=150, config=config)
    probe.fit(TEXTS, LENGTHS)
    predicted = probe.predict(TEXTS)
    assert all(1 <= p <= 150 for p in predicted)
    # Left padding must not change a prompt's features.
    assert probe.features([[{"role": "user", "content": TEXTS[0]}]])[0] == pytest.approx(
        probe.features([[{"role": "user", "content": t}] for t in TEXTS])[0], abs=1e-5
    )
    probe.save(tmp_path / "probe")
    loaded = load_predictor(tmp_path / "probe", model=tiny_engine.model, tokenizer=tiny_engine.tokenizer)
    assert loaded.predict(TEXTS) == predicted


def test_a_saved_predictor_moves_with_its_model(tiny_engine: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The manifest records a local model relative to the predictor, as a package ships them."""
    import json
    import shutil

    from seqsched.predict.probe import ProbePredictor
    from seqsched.predict.registry import load_predictor

    probe = ProbePredictor(tiny_engine.model, tiny_engine.tokenizer, limit=150)
    probe.fit(TEXTS, LENGTHS)
    shutil.copytree(tiny_model_dir, tmp_path / "a" / "model")
    original = probe.model.name_or_path  # the shared fixture's model: restore it
    try:
        probe.model.name_or_path = str(tmp_path / "a" / "model")
        probe.save(tmp_path / "a" / "probe")
    finally:
        probe.model.name_or_path = original
    manifest = json.loads((tmp_path / "a" / "probe" / "predictor.json").read_text())
    assert manifest["config"]["model_path"] == "../model"
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert load_predictor(tmp_path / "b" / "probe").predict(TEXTS) == probe.predict(TEXTS)


# --- collection -----------------------------------------------------------------------


def test_collect_records_greedy_lengths(tiny_engine: Any, tmp_path: Path) -> None:
    import torch

    from seqsched.collect import CollectConfig, collect_lengths
    from seqsched.data.prompts import read_prompts
    from seqsched.data.trace_writer import TraceWriter

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(TEXTS[:5]) + "\n")
    requests = read_prompts(prompts, max_new_tokens=24)
    config = CollectConfig(temperatures=(0.0, 0.7), max_new_tokens=24, batch_size=2)
    writer = TraceWriter(tmp_path / "trace.jsonl", {"t": [0, 0.7]}, "m")
    chunks: list[int] = []

    def save(records: list[dict[str, Any]], errors: list[str]) -> None:
        writer.append(records)
        chunks.append(len(records))

    records, errors = collect_lengths(tiny_engine, requests, config, on_chunk=save, chunk_size=2)
    writer.close()
    assert not errors and chunks == [2, 2, 1] and len(records) == 5
    trace = read_trace(tmp_path / "trace.jsonl")
    assert [r.id for r in trace] == [f"prompt-{i}" for i in range(1, 6)]
    assert [r.text for r in trace] == TEXTS[:5]
    assert all(set(r.lengths) == {"L_t0.0", "L_t0.7"} for r in trace)
    tok, model = tiny_engine.tokenizer, tiny_engine.model
    lengths: set[int] = set()
    for record, text in zip(trace, TEXTS[:5], strict=True):
        chat = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        ids = torch.tensor([chat["input_ids"]])
        out = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0, ids.shape[1] :].tolist()
        expected = new.index(tok.eos_token_id) + 1 if tok.eos_token_id in new else len(new)
        assert record.lengths["L_t0.0"] == expected
        lengths.add(expected)
        assert 1 <= record.lengths["L_t0.7"] <= 24
    assert len(lengths) > 1, "prompts should end after different numbers of steps"


# --- evaluation, margin and the CLI ---------------------------------------------------


def test_length_metrics_on_a_hand_made_case() -> None:
    m = length_metrics([100, 200, 50, 400], [120, 100, 50, 300], seconds=0.002)
    assert m.error == 55.0
    assert (m.acc_50, m.acc_100, m.under_share) == (0.5, 1.0, 0.25)
    assert m.kendall_tau == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant
    assert m.ms_per_prompt == pytest.approx(0.5)
    assert length_metrics([7, 7], [1, 2]).kendall_tau is None


def test_margin() -> None:
    constant = ConstantPredictor(100)
    assert MarginPredictor(constant, scale=1.2, add=5).predict(["a"]) == [125]
    assert MarginPredictor(constant, scale=0.001).predict(["a"]) == [1]
    assert with_margin(constant) is constant
    with pytest.raises(ValueError, match="scale"):
        MarginPredictor(constant, scale=0)


def _write_trace(path: Path) -> Path:
    rows = [
        {"id": f"q{i}", "instruction": t, "L_t0.0": n, "L_t0.7": n + 10, "split": "train" if i < 6 else "val"}
        for i, (t, n) in enumerate(zip(TEXTS, LENGTHS, strict=True))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_an_oracle_is_perfect(tmp_path: Path) -> None:
    from seqsched.predict.oracle import OraclePredictor

    trace = read_trace(_write_trace(tmp_path / "t.jsonl"))
    metrics, predicted = evaluate(OraclePredictor(trace.oracle()), trace)
    assert predicted == [n + 10 for n in LENGTHS]
    assert (metrics.error, metrics.acc_50, metrics.under_share) == (0.0, 1.0, 0.0)
    assert metrics.kendall_tau == pytest.approx(1.0)


def test_cli_train_and_eval(tiny_model_dir: Path, tmp_path: Path) -> None:
    trace = _write_trace(tmp_path / "t.jsonl")
    out = tmp_path / "const"
    assert cli(["predictor", "train", "--kind", "constant", "--trace", str(trace), "--split", "train",
                "--out", str(out)]) == 0  # fmt: skip
    assert cli(["predictor", "eval", str(out), "--trace", str(trace), "--split", "val",
                "--margin-add", "5", "--json", str(tmp_path / "m.json")]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "m.json").read_text())
    # median of the train targets (33, 90, 150, 70, 210, 20) is 90; +5 -> 95 vs val targets 105, 61
    assert metrics["num_prompts"] == 2
    assert metrics["error"] == pytest.approx((10 + 34) / 2)
    model = ["--model", str(tiny_model_dir), "--device", "cpu"]
    train = ["predictor", "train", "--kind", "probe", "--trace", str(trace), "--out", str(tmp_path / "p")]
    assert cli([*train, *model]) == 0
    assert cli(["predictor", "eval", str(tmp_path / "p"), "--trace", str(trace), "--first", "3"]) == 0
    lora = ["predictor", "train", "--kind", "lora", "--trace", str(trace), "--out", str(tmp_path / "l")]
    assert cli([*lora, *model, "--max-steps", "2", "--train-batch-size", "4"]) == 0
    assert cli(["predictor", "eval", str(tmp_path / "l"), "--trace", str(trace), "--first", "2", *model]) == 0
    assert cli(["predictor", "eval", "--kind", "pia", "--trace", str(trace), "--first", "2", *model]) == 0


def test_cli_lengths_collect(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"custom_id": f"c{i}", "prompt": t}) + "\n" for i, t in enumerate(TEXTS[:3])))
    out = tmp_path / "trace.jsonl"
    io = ["--model", str(tiny_model_dir), "--device", "cpu", "--prompts", str(prompts), "--out", str(out)]
    assert cli(["lengths", "collect", *io, "--temperatures", "0,0.5", "--max-new-tokens", "8"]) == 0
    trace = read_trace(out)
    assert [r.id for r in trace] == ["c0", "c1", "c2"]
    assert all(1 <= r.length("max") <= 8 for r in trace)


def test_cli_collect_continues_a_stopped_trace_and_refuses_stale_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(TEXTS[:4]) + "\n")
    out = tmp_path / "trace.jsonl"
    base = ["lengths", "collect", str(prompts), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu"]
    args = [*base, "--temperatures", "0", "--max-new-tokens", "8", "--holdout", "0.5"]
    assert cli([*args, "--first", "2"]) == 0  # as if stopped after two prompts
    first = out.read_text()
    with out.open("a") as f:
        f.write('{"id": "prompt-3", "L_t')  # a torn last line from a kill
    assert cli(args) == 0
    text = out.read_text()
    assert text.startswith(first) and "\n\n" not in text and text.endswith("}\n")
    trace = read_trace(out)
    assert [r.id for r in trace] == [f"prompt-{i}" for i in range(1, 5)]
    assert {r.split for r in trace} <= {"train", "val"}
    # other settings: the old lengths are not reused, nor silently replaced
    assert cli([*base, "--temperatures", "0", "--max-new-tokens", "4"]) == 2
    assert out.read_text() == text
    assert cli([*base, "--temperatures", "0", "--max-new-tokens", "4", "--overwrite"]) == 0
    assert all(r.length("L_t0.0") <= 4 for r in read_trace(out))
