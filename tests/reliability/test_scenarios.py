"""Reliability at scale: the CI subset of `python -m reliability` (`fast`), run through the same
code that writes docs/RELIABILITY.md — nginx with the shipped nginx.conf, two real replicas, a real
Redis — and each scenario's stated claims asserted (0 lost, 0 failures where stated, exit codes).
The rolling update and the engine death run only in the full `python -m reliability`."""

import difflib
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from harness.nginx import NGINX_CONF, Nginx
from reliability import run
from reliability.doc import DOC, RESULTS, render

BEHAVIOUR = {  # scenario -> what the test proves, as its id
    "redis": "redis_outage_fails_closed_and_recovers_without_leaked_slots",
    "admission": "burst_beyond_the_backlog_gets_only_200_and_503",
    "disconnect": "disconnect_storm_leaves_the_engine_idle",
    "sigkill": "killed_replica_costs_the_retrying_client_nothing",
    "sigterm": "stopped_replica_drains_every_request_and_exits_0",
}


def test_fast_subset_is_every_behaviour_here():
    assert set(run.FAST) == set(BEHAVIOUR)


def test_nginx_runs_the_shipped_config_with_only_ports_changed(tmp_path):
    nginx = Nginx(tmp_path, [18001, 18002])
    diff = difflib.unified_diff(
        NGINX_CONF.read_text().splitlines(), nginx.conf.read_text().splitlines(), n=0
    )
    changed = [ln for ln in diff if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    removed = [ln[1:].strip() for ln in changed if ln.startswith("-")]
    assert removed == ["pid /tmp/nginx.pid;                   # writable whoever runs nginx",
                       "server nanoserve:8000 max_fails=0;", "listen 8080;"]  # fmt: skip
    added = [ln[1:].strip() for ln in changed if ln.startswith("+")]
    servers = [a for a in added if a.startswith("server 127.0.0.1:")]
    assert len(servers) == 2 and all(a.endswith(" max_fails=0;") for a in servers)
    assert all(a.split()[0].endswith(("_temp_path", "pid", "listen", "server")) for a in added)
    check = subprocess.run(
        ["/usr/sbin/nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"),
         "-c", str(nginx.conf)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


class _Upstream(BaseHTTPRequestHandler):
    """A replica reduced to its answer: 503 + Retry-After (full, draining, Redis down) or 200."""

    status = 503

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"error": {"code": "server_overloaded"}}' if self.status == 503 else b"{}"
        self.send_response(self.status)
        self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# With http_503 in proxy_next_upstream a 503 counts as a failed attempt: nginx's default
# max_fails=1 fail_timeout=10s marked every replica that answered 503 as down and answered 502
# "no live upstreams" for up to 10 s, even after the replicas recovered (found by this test).
def test_503_from_every_replica_reaches_the_client_and_recovery_is_immediate(tmp_path):
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Upstream) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    nginx = Nginx(tmp_path, [s.server_address[1] for s in servers])
    nginx.start()
    try:
        statuses = [
            httpx.post(nginx.url + "/v1/completions", json={}).status_code for _ in range(4)
        ]
        _Upstream.status = 200
        recovered = httpx.post(nginx.url + "/v1/completions", json={}).status_code
    finally:
        _Upstream.status = 503
        nginx.stop()
        for server in servers:
            server.shutdown()
    assert statuses == [503] * 4  # the replicas' own 503 + Retry-After, which the SDK honours
    assert recovered == 200


def test_the_doc_is_written_from_the_recorded_figures():
    assert DOC.read_text() == render(json.loads(RESULTS.read_text())), (
        "docs/RELIABILITY.md was edited by hand: run python -m reliability --write"
    )


@pytest.fixture(scope="module")
def results():
    done, _ = run.run(run.selected(["fast"]))
    return {r.name: r for r in done}


@pytest.mark.engine
@pytest.mark.timeout(1800)  # two engine starts and a restart: ~4 min alone, far more on busy cores
@pytest.mark.parametrize("name", list(BEHAVIOUR), ids=list(BEHAVIOUR.values()))
def test_scenario(results, name):
    r = results[name]
    if r.skipped:
        pytest.skip(r.skipped)
    failed = [claim for claim, ok in r.claims if not ok]
    assert not failed, json.dumps({"failed": failed, "figures": r.figures}, indent=1)
