"""Fixtures shared by every test folder: one real server per configuration for the whole
session (an engine start costs ~30-100 s here), the fake-engine servers, Redis, and the demo
checkpoint as nanoGPT lays it out. Tests that kill the engine start their own.

The tests run in two lanes at once (pytest-xdist: `-n 2 --dist loadscope` in pyproject.toml),
each in its own process: most of a test run waits on one core (an engine start is mostly
imports, in one process after another). `serving` holds the server's own tests (tests/server,
tests/e2e): the only ones that use the shared servers below, which would otherwise start again
in the other process. `systems` holds the rest: the converter, the docs' servers, containers,
the reliability topology, the benchmarks. Each lane takes about half of the run's time.
`-n 0` runs everything in this one process, in file order.
"""

import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from nanoserve.convert.reference import GPT, GPTConfig

from harness.processes import ServerProcess, free_port, redis_server
from tests.support.servers import (
    DEMO,
    FAKE_START_TIMEOUT,
    KEYS,
    REPO,
    SECRET,
    START_TIMEOUT,
    server_process,
)

SERVING = ("tests/server/", "tests/e2e/")  # the `serving` lane; every other test: `systems`


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadscope` (pyproject.toml's) with the two lanes as its only scopes: each runs
    whole on one worker, in collection order. Any other `--dist` is xdist's own. (Not
    `--dist loadgroup` marks: xdist 3.8 groups by editing `item._nodeid`, which pytest 9 no
    longer reads, so every test became a group of its own.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "serving" if nodeid.startswith(SERVING) else "systems"

    return Lanes(config, log)


def pytest_collection_modifyitems(items):
    # xdist schedules by node id: of tests that share one, only the first would run
    shared = [nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1]
    if shared:
        raise pytest.UsageError(f"tests share a node id, so xdist would run one of each: {shared}")


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    started: list[ServerProcess] = []

    def start(*args: str, env: dict | None = None, cwd: Path = REPO) -> ServerProcess:
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = server_process(list(args), log, env, cwd)
        started.append(server)
        server.wait_ready(START_TIMEOUT)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def demo(start_server, demo_cache) -> ServerProcess:
    """The bundled demo model, served exactly as the README's run command does (no MODEL)."""
    return start_server("--no-auth", "--cache-dir", str(demo_cache), "--log-format", "json")


@pytest.fixture(scope="session")
def keyfile(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(KEYS)
    return path


@pytest.fixture(scope="session")
def secure(start_server, demo_cache, keyfile, redis_url):
    """The demo behind keys (KEYS), JWTs (SECRET) and limits counted in Redis, with a short
    rate-limit window (4 s) so that limits can be hit and waited out quickly. `viewer` is the
    playground's caller. It trusts X-Forwarded-For from 127.0.0.1 only, where the tests'
    nginx runs; clients from other loopback addresses (127.0.0.2...) are told apart."""
    return start_server(
        "--cache-dir",
        str(demo_cache),
        "--api-key-file",
        str(keyfile),
        "--jwt-secret",
        SECRET,
        "--ratelimit-storage",
        redis_url,
        "--ratelimit-window",
        "4",
        "--forwarded-allow-ips",
        "127.0.0.1",
        "--log-format",
        "json",
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server (Debian's package; scripts/setup.sh --with-test-tools) on loopback."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def fake_server(tmp_path):
    """Start fake-engine servers (real runner and app, fake engine) with the given flags."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        port = free_port()
        cmd = [sys.executable, str(REPO / "tests/support/fake_server.py"), *args]
        server = ServerProcess([*cmd, "--port", str(port)], port, tmp_path / f"fake-{port}.log")
        started.append(server)
        server.wait_ready(FAKE_START_TIMEOUT)
        return server

    yield start
    for server in started:
        server.stop(grace=20)


@pytest.fixture(scope="session")
def nanogpt_checkout(tmp_path_factory) -> Path:
    """The demo model laid out as in a nanoGPT checkout after training: out/ckpt.pt, and the
    vocabulary where prepare.py writes it, data/<config.dataset>/meta.pkl (nothing beside
    the checkpoint)."""
    root = tmp_path_factory.mktemp("nanoGPT")
    (root / "out").mkdir()
    shutil.copy(DEMO / "ckpt.pt", root / "out" / "ckpt.pt")
    (root / "data" / "shakespeare_char").mkdir(parents=True)
    shutil.copy(DEMO / "meta.pkl", root / "data" / "shakespeare_char" / "meta.pkl")
    return root


@pytest.fixture(scope="session")
def reference():
    """The demo checkpoint in the reference nanoGPT architecture, with its char vocabulary."""
    from nanoserve.convert.meta import load_meta

    ckpt = torch.load(DEMO / "ckpt.pt", map_location="cpu", weights_only=True)
    model = GPT(GPTConfig.from_model_args(ckpt["model_args"]))
    model.load_state_dict(
        {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}, strict=False
    )
    model.eval()
    vocab = load_meta(DEMO / "meta.pkl")
    return model, vocab
