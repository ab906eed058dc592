"""nanoserve: serve nanoGPT checkpoints with vLLM behind an OpenAI-compatible API."""

__version__ = "0.1.0"
