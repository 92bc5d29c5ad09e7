"""A job's files, checked before anything loads and refused when they hold earlier work.

Every file a job creates (output, error file, status, journal, lock) must not be a symbolic
link or a directory, must be in a writable directory, and no two of them (nor the input)
may be the same file. One that already exists is refused unless the job is told
``overwrite`` (start afresh) or ``resume`` (continue it): a job never replaces another's
output, errors or status unasked.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING

from seqsched.data.lock import lock_path
from seqsched.engine.source import check_device, check_hub_model, check_source

if TYPE_CHECKING:
    from seqsched.config import RunConfig

STDIN = Path("-")


@dataclass(frozen=True)
class JobPaths:
    output: Path
    errors: Path
    status: Path
    journal: Path
    mode: int = 0o666  # the files' permissions (less the umask): the input's, so answers are no more readable


def job_paths(output: Path, errors: Path | None = None) -> JobPaths:
    return JobPaths(
        output=output,
        errors=errors if errors is not None else output.with_name(output.name + ".errors.jsonl"),
        status=output.with_name(output.name + ".status.json"),
        journal=journal_path(output),
    )


def journal_path(output_path: Path) -> Path:
    """Where answers are appended as they finish, until the ordered output is written."""
    return output_path.with_name(output_path.name + ".partial")


def check_paths(config: RunConfig) -> JobPaths:
    """Every path the job will read or write, checked before anything loads."""
    paths = job_paths(config.output_path, config.errors_path)
    if config.input_path != STDIN:
        readable_file(config.input_path, "input")
    created = {
        "output": paths.output,
        "error file": paths.errors,
        "status file": paths.status,
        "journal": paths.journal,
        "lock file": lock_path(paths.output),
    }
    for what, path in created.items():
        if path.is_symlink():
            raise ValueError(f"the {what} {path} is a symbolic link: seqsched does not write through links")
        if path.is_dir():
            raise ValueError(f"the {what} path {path} is a directory")
        _writable_dir(path.parent, what, path)
    named = {**({"input": config.input_path} if config.input_path != STDIN else {}), **created}
    seen: dict[Path, str] = {}
    for what, path in named.items():
        same = seen.setdefault(path.resolve(), what)
        if same != what:
            raise ValueError(f"the {what} and the {same} would be the same file ({path}): give them different paths")
    if config.predictor is not None and not Path(config.predictor).is_dir():
        raise ValueError(f"predictor {config.predictor} is not a directory (a saved predictor)")
    if config.oracle_lengths is not None:
        readable_file(config.oracle_lengths, "oracle lengths")
    check_source(str(config.engine.model), "model")
    check_source(config.engine.tokenizer_path, "tokenizer")
    check_hub_model(str(config.engine.model))
    check_device(config.engine.device)
    if config.input_path != STDIN:
        paths = dataclasses.replace(paths, mode=config.input_path.stat().st_mode & 0o666)
    return paths


def refuse_existing(config: RunConfig, paths: JobPaths) -> None:
    """Refuse to replace earlier work unasked; called holding the job's lock, so no other
    job can create a file in between."""
    if config.resume or config.overwrite:
        return
    for what, path in (("output", paths.output), ("journal", paths.journal), ("error file", paths.errors),
                       ("status file", paths.status)):  # fmt: skip
        if path.exists():
            raise ValueError(
                f"the {what} {path} exists: resume that job (--resume, or resume=True in Python), or start afresh "
                "(--overwrite, or overwrite=True), or name other files (-o, --errors)"
            )


def remove_stale_temporaries(paths: JobPaths) -> None:
    """Temporary files an earlier job on this output left when it was killed mid-write
    (``.NAME.tmp-PID``); safe to remove under the lock."""
    for path in (paths.output, paths.errors, paths.status):
        for tmp in path.parent.glob(f".{glob_escape(path.name)}.tmp-*"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)


def readable_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{what} {path} is not readable")


def _writable_dir(directory: Path, what: str, path: Path) -> None:
    directory = directory if str(directory) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"the {what}'s directory {directory} does not exist (for {path})")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"the {what}'s directory {directory} is not writable (for {path})")
