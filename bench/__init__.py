"""Benchmarks: nanoserve against vLLM's own server and the naive baselines, its front end, start-up,
conversion and quantization. Each script runs from the repo root as `python -m bench.NAME`."""
