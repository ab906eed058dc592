"""`python -m bench.profiled OUT.prof SCRIPT [ARGS...]`: run SCRIPT under cProfile and write
OUT.prof when it ends, a SIGTERM included.

`python -m cProfile -o` writes nothing when the process dies of its signal, and nanoserve's
runner re-raises SIGTERM after a graceful shutdown (so a supervisor sees why it ended): uvicorn
restores the handler installed here before re-raising, so the profile is written then.
"""

import cProfile
import os
import runpy
import signal
import sys


def main() -> None:
    out, script, *args = sys.argv[1:]
    profiler = cProfile.Profile()

    def dump(*_) -> None:
        profiler.disable()
        profiler.dump_stats(out)
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    profiler.enable()
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        dump()


if __name__ == "__main__":
    main()
