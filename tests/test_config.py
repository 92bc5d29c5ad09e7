"""One job, two entrances: `seqsched.run(...)` and `seqsched run` build the same config."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqsched.api import run_config
from seqsched.cli import build_parser
from seqsched.cli.run import _config
from seqsched.config import RayConfig, RunConfig, job_schedule
from seqsched.engine.config import EngineConfig, VLLMConfig

PREDICTOR = Path(__file__).parent.parent / "seqsched" / "assets" / "default_proxy"


def _cli(tmp_path: Path, *options: str) -> RunConfig:
    argv = ["run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--threads", "1", *options]
    return _config(build_parser().parse_args(argv))


def _lib(tmp_path: Path, **options: object) -> RunConfig:
    return run_config(tmp_path / "in.jsonl", tmp_path / "out.jsonl", num_threads=1, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cli", "lib"),
    [
        ([], {}),
        (["--predictor", str(PREDICTOR)], {"predictor": PREDICTOR}),
        (["--predictor", str(PREDICTOR), "--engine", "vllm"], {"predictor": PREDICTOR, "engine": "vllm"}),
        (["--predictor", str(PREDICTOR), "--engine", "continuous"], {"predictor": PREDICTOR, "engine": "continuous"}),
        (["--predictor", str(PREDICTOR), "--vbs", "off", "--fcr"], {"predictor": PREDICTOR, "vbs": "off", "fcr": True}),
        (["--predictor", str(PREDICTOR), "--fcr-mode", "off"], {"predictor": PREDICTOR, "fcr_mode": "off"}),
        (["--predictor", str(PREDICTOR), "--policy", "ljf"], {"predictor": PREDICTOR, "policy": "ljf"}),
        (["--oracle-lengths", "lengths.jsonl"], {"oracle_lengths": "lengths.jsonl"}),
        (["--fcr"], {"fcr": True}),
        (
            ["--batch-size", "8", "--group-size", "64", "--max-new-tokens", "99", "--resume", "--margin-scale", "1.5"],
            {"batch_size": 8, "group_size": 64, "max_new_tokens": 99, "resume": True, "margin_scale": 1.5},
        ),
        (["--max-num-seqs", "16"], {"vllm": VLLMConfig(max_num_seqs=16)}),
        (["--workers", "2"], {"ray": RayConfig(2)}),
    ],
)
def test_library_and_cli_build_the_same_job(tmp_path: Path, cli: list[str], lib: dict[str, object]) -> None:
    assert _lib(tmp_path, **lib) == _cli(tmp_path, *cli)


def test_a_predictor_implies_vbs_resuming_fcr_and_sjf(tmp_path: Path) -> None:
    """The bug this fixes: the library ran such a job without VBS or FCR, in fcfs order."""
    schedule = _lib(tmp_path, predictor=PREDICTOR).schedule
    assert (schedule.vbs, schedule.fcr, schedule.fcr_mode, schedule.policy) == ("paper", True, "resume", "sjf")
    plain = _lib(tmp_path).schedule
    assert (plain.vbs, plain.fcr, plain.policy) == ("off", False, "fcfs")


def test_job_schedule_choices() -> None:
    assert job_schedule(True, fcr=True).fcr_mode == "restart"
    assert not job_schedule(True, fcr=False).fcr
    assert job_schedule(False, fcr_mode="resume").fcr_mode == "resume"
    with pytest.raises(ValueError, match="fcr=False contradicts fcr_mode 'resume'"):
        job_schedule(True, fcr=False, fcr_mode="resume")
    with pytest.raises(ValueError, match="fcr_mode \\('sometimes'\\)"):
        job_schedule(True, fcr_mode="sometimes")  # type: ignore[arg-type]


def test_an_unknown_library_option_is_named(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown option\\(s\\): predicter"):
        _lib(tmp_path, predicter=PREDICTOR)


@pytest.mark.parametrize("kind", ["continuous", "vllm"])
def test_ray_with_a_continuous_engine_is_refused(tmp_path: Path, kind: str) -> None:
    """Ray plans each group on its own replica; a continuous plan is one order for the job."""
    with pytest.raises(ValueError, match=f"Ray replicas run static batching only .*not '{kind}'"):
        RunConfig(tmp_path / "in", tmp_path / "out", EngineConfig("m"), engine_kind=kind, ray=RayConfig(2))  # type: ignore[arg-type]
    code = _main(tmp_path, "--workers", "2", "--engine", kind)
    assert code == 2


def _main(tmp_path: Path, *options: str) -> int:
    from seqsched.cli import main

    (tmp_path / "in.jsonl").write_text('{"custom_id": "a", "prompt": "hi"}\n')
    return main(["run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--threads", "1", *options])
