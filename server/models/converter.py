"""Conversions for reloads, in a process that has done its imports before the checkpoint changes.

`nanoserve convert` on the demo checkpoint takes ~7 s here, 5-6 s of it importing torch and
transformers (the verification runs Hugging Face's GPT-2). A reload can't wait that long on every
new checkpoint, so a spawned process imports them ahead and then waits for one conversion. Each
process converts once and exits: a failed or large conversion leaves nothing behind in memory,
and the next process starts warming at once. The server itself still never unpickles anything.
"""

import io
import logging
import multiprocessing
import os
import threading
from contextlib import redirect_stderr, redirect_stdout
from multiprocessing.connection import Connection

progress = logging.getLogger("nanoserve.convert")  # the converter's lines, as it prints them


def _convert_once(conn: Connection) -> None:
    """The process: import, wait for (argv, working directory), convert, answer, exit."""
    # the imports a conversion needs: torch (pipeline) and transformers (the verification)
    import nanoserve.convert.pipeline
    import nanoserve.convert.verify  # noqa: F401
    from nanoserve.convert.cli import main
    from transformers import GPT2LMHeadModel  # noqa: F401

    try:
        argv, cwd = conn.recv()
    except EOFError:  # the server stopped before a checkpoint changed
        return
    os.chdir(cwd)  # the converter finds data/<dataset>/meta.pkl from here, as nanoGPT does
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException as e:  # a bug in the converter: said, not raised
            code = 1
            print(f"error: {type(e).__name__}: {e}", file=err)
    conn.send((code, out.getvalue(), err.getvalue()))


class WarmConverter:
    """`nanoserve convert ARGV` as a call: (exit code, its stderr). Thread-safe, one at a time."""

    def __init__(self):
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process holding vLLM
        self._next: tuple[multiprocessing.Process, Connection] | None = None
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Start the next process, if none is waiting."""
        if self._next is None:
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=_convert_once, args=(child,), name="nanoserve-convert", daemon=True
            )
            proc.start()
            child.close()
            self._next = (proc, parent)

    def __call__(self, argv: list[str]) -> tuple[int, str]:
        with self._lock:
            self.warm()
            assert self._next is not None
            (proc, conn), self._next = self._next, None
            try:
                conn.send((argv, os.getcwd()))
                code, out, err = conn.recv()
            except (EOFError, OSError):  # it died: out of memory, killed
                proc.join(5)
                code, out, err = 1, "", f"error: the converter process ended ({proc.exitcode})"
            finally:
                conn.close()
            proc.join(30)
            self.warm()
        for line in out.splitlines():
            if line.strip():
                progress.info("%s", line.rstrip())
        return code, err

    def close(self) -> None:
        """Stop the process waiting for a conversion."""
        with self._lock:
            if self._next is not None:
                proc, conn = self._next
                conn.close()  # it reads EOF and exits
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                self._next = None
