"""Logging: one JSON object per line (or plain text), for us, uvicorn and vLLM alike.

One logging config (a dictConfig) is applied here and written to a file that vLLM applies in
every process it spawns (VLLM_LOGGING_CONFIG_PATH), and again in this one when the engine
starts: the engine core's and the workers' lines, and their Python warnings, come out in the
same format as the server's, and the warnings known to be harmless on CPU at their true level
(harmless.py). What reaches stderr without a logger — native code's warnings (torch's
`[W ... utils.cpp]`), progress bars, a child process's dying words — is relayed as JSON too
(`relay_stderr`). This process's own lines are JSON already and skip the relay: written to the
real stderr, they cost one write each. In text format every record is one line: control
characters are escaped, so no value (a client's path) can end a line and forge the next.
"""

import atexit
import functools
import hashlib
import json
import logging
import logging.config
import os
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TextIO

from nanoserve.server.observability.harmless import Harmless
from nanoserve.server.settings import Settings
from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}
# C0 and C1 control characters, DEL, and Unicode's line and paragraph separators: in a text line
# each could end it (a forged record could follow) or, as "\x1b", rewrite it on a terminal
ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
CONTINUED = "  | "  # begins each line of a traceback in text format: no record's line begins so
DRAINED = b"\0nanoserve: stderr relayed up to here\0"  # written by the relay's drain at exit

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


class OneLineFormatter(logging.Formatter):
    """Text, one line per record: control characters in every field are escaped. A traceback
    follows on lines of its own, each beginning with CONTINUED (and escaped too)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        lines = [self.formatMessage(record).translate(ESCAPES)]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for more in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)):
            if more:
                lines += [CONTINUED + line.translate(ESCAPES) for line in more.split("\n")]
        return "\n".join(lines)


def text_formatter() -> logging.Formatter:
    logging.captureWarnings(True)
    return OneLineFormatter(TEXT_FORMAT)


# The real stderr, in the process that relays its own (relay_stderr); None elsewhere.
_real_stderr: TextIO | None = None


def stderr_handler() -> logging.StreamHandler:
    """The handler of every process: to the real stderr in the process that relays stderr (the
    config is applied there twice: by configure, and by vLLM as its engine starts), and to
    stderr, the relay's pipe, in vLLM's processes."""
    return logging.StreamHandler(_real_stderr or sys.stderr)


def config(settings: Settings) -> dict:
    """The dictConfig for this process and vLLM's: everything to stderr through one handler."""
    level = settings.log_level.upper()
    kind = "json" if settings.log_format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": {"()": f"nanoserve.server.observability.logs.{kind}_formatter"}},
        "filters": {
            "request_id": {"()": "nanoserve.server.observability.logs.RequestIdFilter"},
            "harmless": {"()": "nanoserve.server.observability.harmless.Harmless", "level": level},
        },
        "handlers": {
            "main": {
                "()": "nanoserve.server.observability.logs.stderr_handler",
                "formatter": "main",
                "filters": ["request_id", "harmless"],
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


def _as_json(line: bytes, formatter: logging.Formatter, harmless: Harmless) -> bytes:
    """A line as it should reach the log: JSON lines as they are, anything else as a record of
    the logger "stderr" (written straight to stderr, not through a logger): a warning, unless
    known to be harmless (then below the configured level, maybe dropped)."""
    if line.startswith(b"{"):
        try:
            json.loads(line)
            return line + b"\n"
        except ValueError:
            pass
    # not through the record factory, where vLLM names this process as the line's writer
    record = logging.LogRecord(
        "stderr", logging.WARNING, "", 0, line.decode(errors="replace"), (), None
    )
    if not harmless.filter(record):
        return b""
    return formatter.format(record).encode() + b"\n"


def _pump(source: int, sink: int, wrap: Callable[[bytes], bytes], drained: threading.Event) -> None:
    pending = b""
    while chunk := os.read(source, 65536):
        # progress bars redraw with "\r": each state is a line of its own
        lines = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
        pending = lines.pop()
        os.write(sink, b"".join(wrap(ln) for ln in lines if ln.strip() and ln != DRAINED))
        if DRAINED in lines:
            drained.set()
    if pending.strip():
        os.write(sink, wrap(pending))


def relay_stderr(formatter: logging.Formatter, harmless: Harmless) -> None:
    """Route this process's stderr (file descriptor 2, which vLLM's processes inherit) through
    a pipe that a thread copies to the real stderr, wrapping every line that is not JSON. This
    process's handler (stderr_handler) writes to the real stderr: its lines are JSON already."""
    global _real_stderr
    real = os.dup(2)
    source, sink = os.pipe()
    os.dup2(sink, 2)
    os.close(sink)
    wrap = functools.partial(_as_json, formatter=formatter, harmless=harmless)
    drained = threading.Event()
    args = (source, real, wrap, drained)
    thread = threading.Thread(target=_pump, args=args, daemon=True, name="stderr")
    thread.start()

    def drain() -> None:
        # At exit, what is in the pipe (a last traceback) still gets out: up to a mark, not to
        # the pipe's end, which never comes while multiprocessing's resource tracker lives (it
        # holds the pipe too, and outlives this process): waiting for it cost 2 s at each exit.
        sys.stderr.flush()
        if thread.is_alive():
            os.write(2, DRAINED + b"\n")
            drained.wait(timeout=2)
        os.dup2(real, 2)  # the interpreter's last words, if any, go to the real stderr

    atexit.register(drain)
    _real_stderr = os.fdopen(os.dup(real), "w", buffering=1, errors="backslashreplace")


def configure(settings: Settings) -> None:
    cfg = config(settings)
    if settings.log_format == "json":
        # Our own lines go straight to the real stderr (stderr_handler): through the relay each
        # one cost a pipe write and a parse on the relay's thread, whose hold on the GIL the
        # event loop then waited for (~0.5 ms a request under load, the front end's largest cost
        # with the access log on; bench/frontend.py). A line may so overtake a vLLM line still
        # in the pipe. The relay formats what it wraps as our lines are: one time format.
        relay_stderr(json_formatter(), Harmless(cfg["root"]["level"]))
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
