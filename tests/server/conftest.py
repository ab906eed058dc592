"""Real servers for end-to-end tests: `python -m server` as a subprocess on 127.0.0.1.

One server per session for the bundled demo model (engine start costs ~30-100 s here); tests that
kill the engine get their own. Every process started here is ended here, by PID.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 420  # s; a cold engine start on 2 busy cores (compile included) takes ~100 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {
            **os.environ,
            "VLLM_NO_USAGE_STATS": "1",
            **(env or {}),
        }
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                *args,
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
                "--cpu-kvcache-space",
                "1",
            ],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    started: list[ServerProcess] = []

    def start(*args: str, env: dict | None = None) -> ServerProcess:
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = ServerProcess(list(args), log, env)
        started.append(server)
        server.wait_ready()
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
def redis_url(tmp_path_factory):
    """A real redis-server (Debian's package; scripts/setup.sh --with-redis) on loopback."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@dataclass
class FakeServer:
    url: str
    proc: subprocess.Popen


@pytest.fixture
def fake_server(tmp_path):
    """Start fake-engine servers (real app, fake engine) with the given flags."""
    started = []

    def start(*args: str) -> FakeServer:
        port = free_port()
        log = (tmp_path / f"fake-{port}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests/server/fake_server.py"), *args, "--port", str(port)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    return FakeServer(url, proc)
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("fake server did not start")

    yield start
    for proc, log in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        log.close()
