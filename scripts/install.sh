#!/usr/bin/env bash
# Create .venv and install seqsched with its test tools.
# torch is installed first and pinned, so that nothing pulls a multi-GB CUDA build on CPU machines;
# set SEQSCHED_TORCH to choose another torch requirement (e.g. "torch" on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${SEQSCHED_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
