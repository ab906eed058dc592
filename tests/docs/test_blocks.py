"""The docs are executable: every bash/sh/python block in README.md, docs/*.md and the examples'
READMEs runs here, in document order, as a new user would type it (tests/support/docs_blocks.py
says how blocks are marked). Each document gets its own scratch directory and its own servers,
as if read in a fresh terminal. That directory looks like a nanoGPT checkout with this
repository inside it (out/ckpt.pt, data/shakespeare_char/meta.pkl, and a link to each top-level
entry of the repo), so files a block writes (keys.txt, models/) never land in the repository.
Placeholders are replaced by real values: keys `sk-NAME-REPLACE-ME` by fresh keys, `sha256:<64
hex chars>` by a real digest, `YOUR_KEY` and `$KEY` by a key the server accepts, `~/nanoGPT`
(the reader's checkout) and `/path/to/nanoserve` (this clone) by the scratch directory.
"""

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from harness.processes import ServerProcess
from tests.support.docs_blocks import REPO, all_blocks

pytestmark = pytest.mark.engine
DEMO = REPO / "examples" / "shakespeare_char"
BLOCK_TIMEOUT = 300  # s; a block's own command (a convert, a curl)
READY_TIMEOUT = 420  # s; an engine start on 2 busy cores, compile included
# server commands (exact text) already seen to start and get ready in this run -> where
PROVEN: dict[str, str] = {}


class DocSession:
    """One reader working through one document: the scratch directory, the placeholders' values,
    and the servers their blocks started (one at a time on a port, like one terminal)."""

    def __init__(self, root):
        self.root = root
        self.key = "sk-" + secrets.token_urlsafe(24)
        self.values: dict[str, str] = {}
        self.server: ServerProcess | None = None
        self.server_name: str | None = None
        self.server_blocks: dict[str, object] = {}  # name -> the block that starts it
        self.env = {
            **os.environ,
            "KEY": self.key,
            "VLLM_NO_USAGE_STATS": "1",
            "NANOSERVE_CPU_KVCACHE_SPACE": "1",
            # conversions and vLLM's logging config in the scratch directory, not ~/.cache
            "NANOSERVE_CACHE_DIR": str(root / "cache"),
            "PYTHONPATH": str(REPO),
        }

    def substitute(self, code: str) -> str:
        for name in sorted(set(re.findall(r"sk-([a-z]+)-REPLACE-ME", code))):
            value = self.values.setdefault(name, f"sk-{name}-" + secrets.token_urlsafe(16))
            code = code.replace(f"sk-{name}-REPLACE-ME", value)
        if "sha256:<64 hex chars>" in code:
            digest = hashlib.sha256(b"sk-batch-" + self.key.encode()).hexdigest()
            code = code.replace("sha256:<64 hex chars>", f"sha256:{digest}")
        code = code.replace("YOUR_KEY", self.key)
        code = code.replace("~/nanoGPT", str(self.root))
        code = code.replace("/path/to/nanoserve", str(self.root))
        return code

    def command(self, block) -> list[str]:
        code = self.substitute(block.code)
        if block.syntax == "python":
            return [sys.executable, "-c", code]
        return ["bash", "-euo", "pipefail", "-c", code]

    def start(self, block) -> None:
        opts = block.marks["server"]
        name, port = opts.get("name", "demo"), opts.get("port", 8000)
        self.stop()
        _assert_port_free(port)
        log = self.root / f"server-{block.line}.log"
        self.server = ServerProcess(self.command(block), port, log, env=self.env, cwd=self.root)
        self.server_name = name
        self.server_blocks[name] = block
        self.server.wait_ready(READY_TIMEOUT)
        PROVEN.setdefault(block.code, block.where)

    def note(self, block) -> None:
        """Remember a server block without starting it: a later `uses` block starts it."""
        self.stop()
        self.server_blocks[block.marks["server"].get("name", "demo")] = block

    def ensure(self, name: str) -> None:
        if self.server_name != name:
            assert name in self.server_blocks, f"no block above starts the server {name!r}"
            self.start(self.server_blocks[name])

    def stop(self) -> None:
        if self.server is not None:
            # the block's shell and the server it started share one process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.proc.pid, signal.SIGTERM)
            self.server.stop(grace=60)
            self.server, self.server_name = None, None


def _assert_port_free(port: int) -> None:
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, (
            f"port {port} is taken: the docs' examples use it; stop what listens there"
        )


def _scratch(root):
    """A nanoGPT checkout after training, with this repository's entries linked in."""
    (root / "out").mkdir()
    shutil.copy(DEMO / "ckpt.pt", root / "out" / "ckpt.pt")
    (root / "data" / "shakespeare_char").mkdir(parents=True)
    shutil.copy(DEMO / "meta.pkl", root / "data" / "shakespeare_char" / "meta.pkl")
    for entry in REPO.iterdir():
        if not (root / entry.name).exists() and entry.name != ".git":
            (root / entry.name).symlink_to(entry)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    made: dict = {}

    def session(path):
        if path not in made:
            for other in made.values():  # one document at a time holds the ports
                other.stop()
            root = tmp_path_factory.mktemp(path.stem)
            _scratch(root)
            made[path] = DocSession(root)
        return made[path]

    yield session
    for s in made.values():
        s.stop()


RUN = [b for b in all_blocks() if "not_run" not in b.marks]


def _followed_by_another_server(block) -> bool:
    """Is the next block that runs in `block`'s document another server (or none at all)?"""
    later = [b for b in RUN[RUN.index(block) + 1 :] if b.path == block.path]
    return not later or "server" in later[0].marks


@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_block_runs(block, sessions):
    session = sessions(block.path)
    if "server" in block.marks:
        if block.code in PROVEN and _followed_by_another_server(block):
            # The very same command already started and got ready above (docs/DEPLOY.md's
            # laptop step repeats the README's first command), and nothing here talks to it:
            # a second engine start (~90 s in CI) would prove nothing new.
            session.note(block)
            return
        session.start(block)
        return
    if "uses" in block.marks:
        session.ensure(block.marks["uses"].get("name", "demo"))
    out = subprocess.run(
        session.command(block),
        cwd=session.root,
        env=session.env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    assert out.returncode == 0, f"{block.where} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    if block.expected is not None:
        assert out.stdout == session.substitute(block.expected), block.where
