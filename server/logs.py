"""Logging: one JSON object per line (or plain text), for us, uvicorn and vLLM alike."""

import json
import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter

from .settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}


def _vllm_json_logging(settings: Settings) -> None:
    # vLLM configures its own loggers, in every process it spawns, from this file if named:
    # one JSON line format for the server, the engine core and the workers alike.
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": RENAME,
            }
        },
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "vllm": {"handlers": ["json"], "level": settings.log_level.upper(), "propagate": False}
        },
    }
    path = settings.cache_dir / "vllm-logging.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    os.environ.setdefault("VLLM_LOGGING_CONFIG_PATH", str(path))


def configure(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        _vllm_json_logging(settings)
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields=RENAME,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # uvicorn's access log duplicates ours (which carries the request id); keep its errors.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
