"""The server: a model in vLLM's async engine behind an OpenAI-compatible HTTP API.

A request goes down these layers, and imports only go down them too:

    transport/      the HTTP/1.1 connection (bounded: heads, bodies, pipelining, connections)
                    and the per-request context (id, client address, body cap, access record)
    security/       who is calling and what they may use: auth, lockout, rate limits, usage
    api/            the routes, one module per family, wire models beside them:
                    openai (/v1/completions, /v1/chat/completions, /v1/models, /v1/usage),
                    generate (legacy /generate), tokenize, sagemaker, probes (/health,
                    /ready, /metrics...), playground (the browser page in static/)
    models/         the model served and its versions: version, live (reloads that fail no
                    request), watch (--watch), converter (conversions in a warm process)
    serving/        a request's life: prepare (validate -> engine work), job (its results,
                    shaped the OpenAI way), service (admission to settlement), deadline,
                    sliding_window (nanoGPT's generation past the context), disconnect, chat
    engine/         the boundary (interface), the one module that imports vLLM
                    (vllm_adapter), model_source (MODEL -> a converted directory), cpu
    observability/  metrics, logs, access_log, harmless (known CPU warnings, at their level)

At the top: settings (the one Settings object), cli (`nanoserve serve`), app (wires the
FastAPI app), runtime (loads the model, watches the engine's pulse and the checkpoint), errors
(the one error shape), doctor.
"""
