"""The docs are executable: every bash/sh/python block in README.md, docs/*.md and the examples'
READMEs runs here, as a new user would type it (tests/support/docs_blocks.py says how blocks are
marked). Each document gets its own scratch directory, as if read in a fresh terminal. That
directory looks like a nanoGPT checkout with this repository inside it (out/ckpt.pt,
data/shakespeare_char/meta.pkl, and a link to each top-level entry of the repo), so files a
block writes (keys.txt, models/) never land in the repository. Placeholders are replaced by real
values: keys `sk-NAME-REPLACE-ME` by fresh keys, `sha256:<64 hex chars>` by a real digest,
`YOUR_KEY` and `$KEY` by a key the server accepts, `~/nanoGPT` (the reader's checkout) and
`/path/to/nanoserve` (this clone) by the scratch directory.

Blocks run in document order, with two savings of an engine start each (~60 s in CI): a server
block no block of its page talks to only has to get ready, so it runs after every page; and a
server block whose command is the very one already running (the demo, `nanoserve serve
--no-auth`, with nothing reader-specific in it) uses that server."""

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
from dataclasses import dataclass

import pytest

from harness.processes import ServerProcess
from tests.support.docs_blocks import REPO, all_blocks

pytestmark = pytest.mark.engine
DEMO = REPO / "examples" / "shakespeare_char"
BLOCK_TIMEOUT = 300  # s; a block's own command (a convert, a curl)
READY_TIMEOUT = 420  # s; an engine start on 2 busy cores, compile included
# server commands (exact text) already seen to start and get ready in this run -> where
PROVEN: dict[str, str] = {}


SETUP = "scripts/setup.sh && "  # a prefix that changes nothing once setup has run


@dataclass
class Running:
    """The one server the docs have running at a time (their examples share port 8000), and
    which reader's block started it."""

    server: ServerProcess | None = None
    command: str | None = None  # as the block writes it, less a leading `scripts/setup.sh && `
    session: "DocSession | None" = None
    name: str | None = None

    def stop(self) -> None:
        if self.server is not None:
            # the block's shell and the server it started share one process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.proc.pid, signal.SIGTERM)
            self.server.stop(grace=60)
        self.server, self.command, self.session, self.name = None, None, None, None


RUNNING = Running()


class DocSession:
    """One reader working through one document: the scratch directory, the placeholders' values,
    and the server blocks seen so far (name -> block)."""

    def __init__(self, root):
        self.root = root
        self.key = "sk-" + secrets.token_urlsafe(24)
        self.values: dict[str, str] = {}
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
        self.server_blocks[name] = block
        command = block.code.strip().removeprefix(SETUP)
        if RUNNING.command == command and self.substitute(block.code) == block.code:
            # Another page's reader left this very server running (docs/API.md's demo is the
            # README's): the same command, with nothing in it that is this reader's own, gives
            # the same server. A second engine start (~60 s in CI) would prove nothing new.
            RUNNING.session, RUNNING.name = self, name
            return
        RUNNING.stop()
        _assert_port_free(port)
        log = self.root / f"server-{block.line}.log"
        server = ServerProcess(self.command(block), port, log, env=self.env, cwd=self.root)
        RUNNING.server, RUNNING.session, RUNNING.name = server, self, name
        server.wait_ready(READY_TIMEOUT)
        RUNNING.command = command
        PROVEN.setdefault(block.code, block.where)

    def note(self, block) -> None:
        """Remember a server block without starting it: a later `uses` block starts it."""
        self.server_blocks[block.marks["server"].get("name", "demo")] = block

    def ensure(self, name: str) -> None:
        if RUNNING.session is not self or RUNNING.name != name:
            assert name in self.server_blocks, f"no block above starts the server {name!r}"
            self.start(self.server_blocks[name])


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
            root = tmp_path_factory.mktemp(path.stem)
            _scratch(root)
            made[path] = DocSession(root)
        return made[path]

    yield session
    RUNNING.stop()


def _unused(block, page: list) -> bool:
    """Is `block` a server that no block of its page talks to? The next block is another
    server, or a `uses` of another one, or there is none; and no later block uses it by name."""
    later = page[page.index(block) + 1 :]
    name = block.marks["server"].get("name", "demo")
    if any(b.marks["uses"].get("name", "demo") == name for b in later if "uses" in b.marks):
        return False
    return not later or "server" in later[0].marks or "uses" in later[0].marks


BLOCKS = [b for b in all_blocks() if "not_run" not in b.marks]
# Server blocks nothing talks to only have to start and get ready: they run after every page
# (README.md's own checkpoint would otherwise stop the demo its LangChain example then restarts).
UNUSED = {
    b.where
    for b in BLOCKS
    if "server" in b.marks and _unused(b, [p for p in BLOCKS if p.path == b.path])
}
RUN = [b for b in BLOCKS if b.where not in UNUSED] + [b for b in BLOCKS if b.where in UNUSED]


@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_block_runs(block, sessions):
    session = sessions(block.path)
    if "server" in block.marks:
        if block.code in PROVEN and block.where in UNUSED:
            # The very same command already started and got ready above (docs/DEPLOY.md's
            # laptop step repeats the README's first command), and nothing here talks to it:
            # a second engine start (~60 s in CI) would prove nothing new.
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
