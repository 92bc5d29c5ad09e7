"""Length traces: both formats, the paper's sampling, oracle knowledge, length maps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seqsched.data.traces import read_length_map, read_trace, sample, trace_requests

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

RECORDS: list[dict[str, Any]] = [
    {"id": "1", "L_gt": 54, "L_t0.0": 115, "L_t0.3": 126, "L_t0.5": 53, "L_t0.7": 61},
    {"id": "2", "L_gt": 13, "L_t0.0": 62, "L_t0.3": 43, "L_t0.5": 14, "L_t0.7": 56},
    {"id": "12", "L_gt": 8, "L_t0.0": 0, "L_t0.3": 9, "L_t0.5": 9, "L_t0.7": 9},
]


def _paper(tmp_path: Path, records: Sequence[object]) -> Path:
    path = tmp_path / "lengths.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def _jsonl(tmp_path: Path, records: Sequence[object], name: str = "lengths.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_both_formats_read_the_same(tmp_path: Path) -> None:
    extra = [{"instruction": "Add.", "input": "2+2", "split": "val"}, {"instruction": "Hi.", "input": ""}, {}]
    paper = read_trace(_paper(tmp_path, RECORDS))
    ours = read_trace(_jsonl(tmp_path, [r | e for r, e in zip(RECORDS, extra, strict=True)]))
    assert [r.id for r in paper] == [r.id for r in ours] == ["1", "2", "12"]
    assert [r.lengths for r in paper] == [r.lengths for r in ours]
    assert [r.text for r in paper] == [None, None, None]
    assert [r.text for r in ours] == ["Add.\n2+2", "Hi.", None]
    assert [r.id for r in ours.split("val")] == ["1"]


def test_actual_and_oracle_knowledge(tmp_path: Path) -> None:
    trace = read_trace(_paper(tmp_path, RECORDS))
    assert trace.actual() == [115, 62, 0]
    assert trace.actual("L_t0.5") == [53, 14, 9]
    assert trace.oracle() == {"1": 126, "2": 62, "12": 9}  # max over L_t*, never L_gt
    assert trace.oracle("L_gt") == {"1": 54, "2": 13, "12": 8}
    with pytest.raises(ValueError, match=r"lengths\.json: record 1: no field 'L_t0\.9'"):
        trace.actual("L_t0.9")


def test_sample_matches_numpy_permutation(tmp_path: Path) -> None:
    records = [{"id": str(i), "L_t0.0": i} for i in range(100)]
    trace = read_trace(_jsonl(tmp_path, records))
    np.random.seed(42)
    expected = np.random.permutation(100)[:16]
    after_paper = np.random.random()
    np.random.seed(42)
    np.random.permutation(100)
    drawn = sample(trace, 16, seed=42)
    assert [r.id for r in drawn] == [str(i) for i in expected]  # in the order drawn
    assert np.random.random() == after_paper  # numpy's global state is left alone
    with pytest.raises(ValueError, match="sample size"):
        sample(trace, 101)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            {"id": "9", "L_t0.0": -1},
            r"lengths\.jsonl:2: field 'L_t0\.0': must be a non-negative integer, got -1",
        ),
        ({"id": "9", "L_t0.0": 3.5}, r"lengths\.jsonl:2: field 'L_t0\.0'.*got 3\.5"),
        ({"L_t0.0": 3}, r"lengths\.jsonl:2: field 'id'.*got null"),
        ({"id": "9"}, r"lengths\.jsonl:2: no L_\* length fields"),
        ({"id": "1", "L_t0.0": 3}, r"lengths\.jsonl:2: field 'id': duplicate of lengths\.jsonl:1"),
        ({"id": "9", "L_t0.0": 3, "input": 4}, r"lengths\.jsonl:2: field 'input'"),
        ("{oops", r"lengths\.jsonl:2: invalid JSON"),
    ],
)
def test_bad_records_name_file_line_field(tmp_path: Path, line: object, message: str) -> None:
    path = tmp_path / "lengths.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    with pytest.raises(ValueError, match=message):
        read_trace(path)


def test_bad_paper_record_names_its_position(tmp_path: Path) -> None:
    path = _paper(tmp_path, [RECORDS[0], {"id": "5", "L_t0.0": "long"}])
    with pytest.raises(ValueError, match=r"lengths\.json: record 2: field 'L_t0\.0'.*got \"long\""):
        read_trace(path)


def test_trace_requests(tmp_path: Path) -> None:
    trace = read_trace(_jsonl(tmp_path, [RECORDS[0] | {"instruction": "Add.", "input": "2+2"}, RECORDS[2]]))
    first, second = trace_requests(trace, max_new_tokens=100)
    assert (first.index, first.request_id, first.prompt, first.target_len) == (0, "1", "Add.\n2+2", 115)
    assert (second.prompt, second.target_len, second.max_new_tokens) == ("12", 1, 100)  # L=0 -> 1 step


def test_length_maps_from_every_source(tmp_path: Path) -> None:
    assert read_length_map(_paper(tmp_path, RECORDS)) == {"1": 126, "2": 62, "12": 9}
    assert read_length_map(_jsonl(tmp_path, RECORDS), "L_t0.0") == {"1": 115, "2": 62, "12": 0}
    plain = [{"custom_id": "a", "length": 5}, {"id": 7, "length": 9}]
    assert read_length_map(_jsonl(tmp_path, plain, "plain.jsonl")) == {"a": 5, "7": 9}
    usage = {"prompt_tokens": 3, "completion_tokens": 12, "total_tokens": 15}
    output = [
        {
            "id": "x",
            "custom_id": "a",
            "response": {"status_code": 200, "body": {"usage": usage}},
            "error": None,
        },
        {"id": "y", "custom_id": "b", "response": None, "error": {"code": "invalid_request", "message": "m"}},
    ]
    assert read_length_map(_jsonl(tmp_path, output, "out.jsonl")) == {"a": 12}
    with pytest.raises(ValueError, match=r"plain\.jsonl:2: field 'length'"):
        read_length_map(_jsonl(tmp_path, [{"id": 1, "length": 2}, {"id": 2, "length": -2}], "plain.jsonl"))
    with pytest.raises(ValueError, match=r"odd\.jsonl:1: not a length file"):
        read_length_map(_jsonl(tmp_path, [{"id": 1}], "odd.jsonl"))


def test_shared_data_reads_and_samples_like_the_paper() -> None:
    val = SHARED / "alpaca-val-8k-length.json"
    ours = SHARED / "alpaca-vicuna-lengths.jsonl"
    if not (val.is_file() and ours.is_file()):
        pytest.skip(f"reference data not found under {SHARED}")
    trace = read_trace(val)
    raw = json.loads(val.read_text())
    np.random.seed(42)
    expected = [raw[i]["id"] for i in np.random.permutation(len(raw))[:1024]]
    assert [r.id for r in sample(trace, 1024, seed=42)] == expected
    lengths = read_trace(ours)
    assert len(lengths) == 18000 and {r.split for r in lengths} == {"train", "val"}
    assert all(r.text for r in lengths)
    assert (
        lengths.oracle()["5"] == 277 and lengths[0].text == "Describe a time when you had to make a difficult decision."
    )


def test_read_trace_keeps_a_split_then_samples(tmp_path: Path) -> None:
    from seqsched.data.traces import read_trace, sample

    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": str(i), "L_t0.0": i + 1, "split": "val" if i % 2 else "train"}) + "\n" for i in range(20)
        )
    )
    val = read_trace(path, split="val")
    assert [r.id for r in val] == [str(i) for i in range(1, 20, 2)]
    assert [r.id for r in read_trace(path, split="val", sample_size=4, seed=1)] == [r.id for r in sample(val, 4, 1)]
    with pytest.raises(ValueError, match="no records of split 'test'"):
        read_trace(path, split="test")
