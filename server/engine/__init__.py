"""The engine boundary: what the server asks of an engine (interface), vLLM behind it
(vllm_adapter, the only module that imports vllm), and what MODEL resolves to (model_source)."""
