"""The log format (server/observability/logs.py) and the level of the known-harmless warnings
(harmless.py), without vLLM: a text record is one line whatever its fields hold, vLLM's
warnings that are harmless on CPU come out at their true level, and what the relay wraps looks
like our own lines. The whole life of a real server, every line JSON and none a warning:
tests/e2e/test_observability.py."""

import json
import logging
import re
import socket
import subprocess
import sys

import pytest
from nanoserve.server.observability.harmless import Harmless
from nanoserve.server.observability.logs import CONTINUED, OneLineFormatter

FORGED = "2026-12-04 15:00:00,000 INFO nanoserve.access: GET /v1/usage 200"
TEXT = "%(levelname)s %(name)s: %(message)s"


def record(name: str, msg: str, level=logging.WARNING, args=(), exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_a_forged_line_in_a_field_stays_one_line_escaped():
    path = f"/x\n{FORGED}\r\x1b[2K\x00\x7f\x85\u2028\t."
    text = OneLineFormatter(TEXT).format(
        record("nanoserve.access", "GET %s 404", logging.INFO, (path,))
    )
    assert text == (
        "INFO nanoserve.access: GET /x\\n2026-12-04 15:00:00,000 INFO nanoserve.access: "
        "GET /v1/usage 200\\r\\x1b[2K\\x00\\x7f\\x85\\u2028\\t. 404"
    )
    assert len(text.splitlines()) == 1


def test_a_logger_name_is_escaped_too():
    text = OneLineFormatter(TEXT).format(record(f"evil\n{FORGED}", "hi"))
    assert text == f"WARNING evil\\n{FORGED}: hi"


def test_a_traceback_follows_on_continued_lines_that_cannot_pass_for_records():
    try:
        raise ValueError(f"bad input\n{FORGED}")
    except ValueError:
        exc_info = sys.exc_info()
    text = OneLineFormatter(TEXT).format(
        record("nanoserve.app", "request failed", logging.ERROR, exc_info=exc_info)
    )
    first, *rest = text.split("\n")
    assert first == "ERROR nanoserve.app: request failed"
    assert rest[0] == CONTINUED + "Traceback (most recent call last):"
    assert rest[-2:] == [CONTINUED + "ValueError: bad input", CONTINUED + FORGED]
    assert all(line.startswith(CONTINUED) for line in rest)


def lowered(name: str, msg: str, *args) -> str:
    """The level name `name`'s warning `msg % args` is logged at (the filter at DEBUG)."""
    r = record(name, msg, logging.WARNING, args)
    assert Harmless("DEBUG").filter(r)
    return r.levelname


MAX_LEN = (
    "User-specified max_model_len ({}) is greater than the derived max_model_len "
    "(max_position_embeddings=128.0 or model_max_length=None in model's config.json)."
)
REDUCE_OP = (
    "{}:138: FutureWarning: `torch.distributed.reduce_op` is deprecated, please use "
    '`torch.distributed.ReduceOp` instead\n  if hasattr(value, "__dict__"):\n'
)
NUMA = (
    "[W1204 18:00:02.465982026 utils.cpp:68] Warning: NUMA binding: Using MEMBIND policy for "
    "memory allocation on the NUMA nodes (0). Memory allocations will be strictly bound to "
    "these NUMA nodes. (function init_cpu_memory_env)"
)
NO_CPU_TRITON = "Triton is installed, but doesn't include CPU backend. Disabling Triton."
LD_PRELOAD = "%s is not found in LD_PRELOAD. For best performance, please follow the section ..."
# one of each, as vLLM 0.32, torch and Triton word them on CPU
HARMLESS = [
    ("vllm.config.model", "%s %s", MAX_LEN.format(129), "VLLM_ALLOW_LONG_MAX_MODEL_LEN...", "INFO"),
    ("vllm.triton_utils.importing", NO_CPU_TRITON, "INFO"),
    ("vllm.platforms.cpu", "Triton is not installed. triton-cpu is expected on x86 CPUs.", "INFO"),
    ("vllm.platforms.cpu", "Reset SSM cache type to float32 for ... '%s'.", "none", "DEBUG"),
    ("vllm.config.vllm", "Model Runner V2 requires Triton; using the V1 model runner ...", "INFO"),
    ("vllm.config.vllm", "Inductor compilation was disabled by user settings, ...", "INFO"),
    ("vllm.v1.worker.cpu_worker", LD_PRELOAD, "libtcmalloc", "INFO"),
    ("vllm.v1.worker.cpu_worker", LD_PRELOAD, "libiomp", "INFO"),
    ("py.warnings", "%s", REDUCE_OP.format("/venv/vllm/triton_utils/dispatcher.py"), "DEBUG"),
    ("vllm.model_executor.model_loader.reload.layerwise", "%s: Failed to load weights",
     "ParallelLMHead", "INFO"),  # a weight swap's tied output layer
    ("stderr", NUMA, "INFO"),
    ("stderr", NO_CPU_TRITON, "INFO"),  # logging's last resort in vLLM's processes
]  # fmt: skip


@pytest.mark.parametrize("case", HARMLESS, ids=lambda c: f"{c[0]}:{c[1][:30]}")
def test_a_known_harmless_warning_gets_its_true_level(case):
    name, msg, *args, level = case
    assert lowered(name, msg, *args) == level


@pytest.mark.parametrize(
    "name, msg",
    [
        # more than nanoserve's one extra position: not ours, a real warning
        ("vllm.config.model", MAX_LEN.format(300)),
        # the same words under another logger, or other words under the same logger
        ("vllm.config.vllm", "Triton is not installed. triton-cpu is expected on x86 CPUs."),
        ("vllm.platforms.cpu", "CPU backend prefers block_size is multiples of 32, otherwise ..."),
        ("py.warnings", REDUCE_OP.format("/app/server/x.py")),
        ("stderr", "[W1204 18:00:02 utils.cpp:68] Warning: something else"),
        ("stderr", NO_CPU_TRITON + " And more"),
        (
            "vllm.model_executor.model_loader.reload.layerwise",
            "QKVParallelLinear: Failed to load weights",
        ),
    ],
)
def test_other_warnings_stay_warnings(name, msg):
    assert lowered(name, msg) == "WARNING"


def test_only_warnings_are_lowered():
    r = record("vllm.platforms.cpu", "Reset SSM cache type to float32 for x", logging.ERROR)
    assert Harmless("INFO").filter(r) and r.levelname == "ERROR"


def test_other_records_pass_as_their_logger_decided():
    # a logger set to DEBUG under an INFO root still gets its DEBUG lines out
    assert Harmless("INFO").filter(record("nanoserve.service", "details", logging.DEBUG))


def test_what_falls_below_the_configured_level_is_dropped():
    ssm = "Reset SSM cache type to float32 for accelerated GDN mamba backend 'none'."
    assert not Harmless("INFO").filter(record("vllm.platforms.cpu", ssm))
    assert Harmless("DEBUG").filter(record("vllm.platforms.cpu", ssm))
    triton = "Triton is not installed. triton-cpu is expected on x86 CPUs."
    assert not Harmless("WARNING").filter(record("vllm.platforms.cpu", triton))


def test_every_process_lowers_them_and_the_relay_formats_like_our_own_lines(tmp_path):
    # this process (logs.configure), then the file applied as vLLM applies it in its processes
    # and again in this one as the engine starts: harmless warnings lowered or dropped at INFO,
    # lines that reach stderr without a logger too, one time format, our own lines still
    # straight to the real stderr (not through the relay)
    code = f"""
import json, logging, logging.config, os
from nanoserve.server.observability import logs
from nanoserve.server.settings import Settings
logs.configure(Settings(cache_dir={str(tmp_path)!r}))
cpu = logging.getLogger("vllm.platforms.cpu")
cpu.warning("Triton is not installed. triton-cpu is expected on x86 CPUs.")
logging.config.dictConfig(json.load(open(os.environ["VLLM_LOGGING_CONFIG_PATH"])))
cpu.warning("Reset SSM cache type to float32 for accelerated GDN mamba backend 'none'.")
cpu.warning("a real warning")
os.write(2, b"[W1204 18:00:02.4 utils.cpp:68] Warning: NUMA binding: Using MEMBIND policy ...\\n")
os.write(2, b"Triton is installed, but doesn't include CPU backend. Disabling Triton.\\n")
os.write(2, b"native code says\\n")
print(logging.getLogger().handlers[0].stream.fileno() != 2)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True\n"
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["logger"], r["level"], r["message"][:20]) for r in records] == [
        ("vllm.platforms.cpu", "INFO", "Triton is not instal"),
        ("vllm.platforms.cpu", "WARNING", "a real warning"),
        ("stderr", "INFO", "[W1204 18:00:02.4 ut"),
        ("stderr", "INFO", "Triton is installed,"),
        ("stderr", "WARNING", "native code says"),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", r["time"]) for r in records)


def test_a_forged_request_path_writes_one_line_in_text_format(fake_server):
    # the real process: logs.configure with --log-format text, uvicorn, the access line
    server = fake_server("--no-auth", "--log-format", "text")
    target = "/x%0a" + FORGED.replace(" ", "%20")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 404")
    server.stop(grace=20)
    lines = server.log().splitlines()
    [access] = [line for line in lines if "nanoserve.access: GET /x" in line]
    assert access.endswith(f"GET /x\\n{FORGED} 404")
    assert not any(line.startswith(FORGED) for line in lines)
