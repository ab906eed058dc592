"""Logging: one JSON object per line (or plain text), for us, uvicorn and vLLM alike.

One logging config (a dictConfig) is applied here and written to a file that vLLM applies in
every process it spawns (VLLM_LOGGING_CONFIG_PATH): the engine core's and the workers' lines,
and their Python warnings, come out in the same format as the server's. What reaches stderr
without a logger — native code's warnings (torch's `[W ... utils.cpp]`), progress bars, a child
process's dying words — is relayed as JSON too (`relay_stderr`). This process's own lines are
JSON already and skip the relay: written to the real stderr, they cost one write each.
"""

import atexit
import copy
import datetime
import hashlib
import json
import logging
import logging.config
import os
import sys
import threading
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from .settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}

# The id of the request being served (set by middleware.RequestContext): every line logged while
# serving it, an error's included, carries it as `request_id`.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None and (rid := REQUEST_ID.get()) is not None:
            record.request_id = rid
        return True


def json_formatter() -> JsonFormatter:
    """The JSON formatter; building it also routes `warnings.warn` through logging, so in each
    process the config reaches (vLLM's included) a warning is a JSON line too."""
    logging.captureWarnings(True)
    return JsonFormatter(FORMAT, rename_fields=RENAME)


def text_formatter() -> logging.Formatter:
    logging.captureWarnings(True)
    return logging.Formatter(TEXT_FORMAT)


def config(settings: Settings) -> dict:
    """The dictConfig for this process and vLLM's: everything to stderr through one handler."""
    level = settings.log_level.upper()
    kind = "json" if settings.log_format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": {"()": f"server.logs.{kind}_formatter"}},
        "filters": {"request_id": {"()": "server.logs.RequestIdFilter"}},
        "handlers": {
            "main": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        # vLLM's loggers keep their own handlers unless told otherwise: send them to the root's
        "loggers": {
            "vllm": {"handlers": [], "level": level, "propagate": True},
            # uvicorn's access log duplicates ours (which carries the request id); keep its errors
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
        "root": {"handlers": ["main"], "level": level},
    }


def _as_json(line: bytes) -> bytes:
    """A line as it should reach the log: JSON lines as they are, anything else wrapped."""
    if line.startswith(b"{"):
        try:
            json.loads(line)
            return line + b"\n"
        except ValueError:
            pass
    record = {
        "time": datetime.datetime.now().isoformat(sep=" ", timespec="milliseconds"),
        "level": "WARNING",
        "logger": "stderr",  # written straight to stderr, not through a logger
        "message": line.decode(errors="replace"),
    }
    return json.dumps(record).encode() + b"\n"


def _pump(source: int, sink: int) -> None:
    pending = b""
    while chunk := os.read(source, 65536):
        # progress bars redraw with "\r": each state is a line of its own
        lines = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
        pending = lines.pop()
        os.write(sink, b"".join(_as_json(ln) for ln in lines if ln.strip()))
    if pending.strip():
        os.write(sink, _as_json(pending))


def relay_stderr() -> TextIO:
    """Route this process's stderr (file descriptor 2, which vLLM's processes inherit) through
    a pipe that a thread copies to the real stderr, wrapping every line that is not JSON.
    Returns a stream on the real stderr, for lines that are JSON already."""
    real = os.dup(2)
    source, sink = os.pipe()
    os.dup2(sink, 2)
    os.close(sink)
    thread = threading.Thread(target=_pump, args=(source, real), daemon=True, name="stderr")
    thread.start()

    def drain() -> None:  # at exit: what is in the pipe (a last traceback) still gets out
        sys.stderr.flush()
        os.dup2(real, 2)  # our end of the pipe closes; children may still hold theirs
        thread.join(timeout=2)

    atexit.register(drain)
    return os.fdopen(os.dup(real), "w", buffering=1, errors="backslashreplace")


def configure(settings: Settings) -> None:
    cfg = config(settings)
    if settings.log_format == "json":
        # Our own lines go straight to the real stderr: through the relay each one cost a pipe
        # write and a parse on the relay's thread, whose hold on the GIL the event loop then
        # waited for (~0.5 ms a request under load, the front end's largest cost with the access
        # log on; bench/frontend.py). A line may so overtake a vLLM line still in the pipe.
        own = copy.deepcopy(cfg)
        own["handlers"]["main"]["stream"] = relay_stderr()
        logging.config.dictConfig(own)
    else:
        logging.config.dictConfig(cfg)
    # vLLM's processes read their logging config from a file. Servers of other versions or
    # settings may share the cache directory, so the file is named by its content (one server
    # never reads another's) and written whole before it is named (never read half-written).
    text = json.dumps(cfg, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = settings.cache_dir / f"vllm-logging-{digest}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)
    os.environ.setdefault("VLLM_LOGGING_CONFIG_PATH", str(path))
