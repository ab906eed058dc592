"""deploy/compose.yaml run for real with podman-compose: nginx in front of two replicas of the
locally built image, limits counted in Redis, a completion through nginx with the openai SDK,
and Prometheus (the monitoring profile) scraping both replicas with a key and loading the alert
rules."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from harness.processes import free_port
from tests.deploy import podman as pm

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]

KEY = "sk-compose-test"
SCRAPE_KEY = "sk-compose-test-prometheus"
COMPOSE_FILE = pm.REPO / "deploy" / "compose.yaml"
START_TIMEOUT = 600  # s: two engines starting at once on 2 cores


class Stack:
    """One podman-compose project; every container it made is removed at the end."""

    def __init__(self, project: str, env: dict[str, str]):
        self.project, self.env = project, env
        podman_compose = Path(sys.executable).with_name("podman-compose")
        self.base = [
            str(podman_compose), "--profile", "monitoring", "-p", project, "-f", str(COMPOSE_FILE)
        ]  # fmt: skip

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"podman-compose {args}:\n{done.stderr[-4000:]}"
        return done

    def containers(self, service: str) -> list[str]:
        out = pm.podman(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label=io.podman.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
            env=self.env,
        ).stdout  # fmt: skip
        return sorted(out.split())

    def logs(self, name: str) -> str:
        done = pm.podman("logs", name, env=self.env, check=False)
        return done.stdout + done.stderr

    def wait_healthy(self, names: list[str]) -> None:
        """Until each container's HEALTHCHECK (the image's: /health) passes."""
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                status = pm.podman("inspect", "-f", "{{.State.Status}}", name, env=self.env)
                if status.stdout.strip() != "running":
                    pytest.fail(f"{name} stopped:\n{self.logs(name)[-4000:]}")
                if pm.podman("healthcheck", "run", name, env=self.env, check=False).returncode:
                    continue
                pending.remove(name)
            time.sleep(5)
        assert not pending, f"not healthy after {START_TIMEOUT} s: {pending}"

    def down(self) -> None:
        subprocess.run(
            [*self.base, "down", "-t", "15"], env=self.env, capture_output=True, timeout=300
        )
        # whatever `down` missed: the project's containers, then its network
        for service in ("prometheus", "nginx", "nanoserve", "redis"):
            for name in self.containers(service):
                pm.podman("rm", "-f", "-t", "15", name, env=self.env, check=False)
        pm.podman("network", "rm", "-f", f"{self.project}_default", env=self.env, check=False)


@pytest.fixture
def stack(cpu_image, podman_env, tmp_path):
    port, prometheus_port = free_port(), free_port()
    # deploy/keys.example's layout, with test keys; owned by uid 1000 as docs/DEPLOY.md says
    keys = tmp_path / "keys"
    keys.write_text(f"client {KEY}\nprometheus {SCRAPE_KEY} metrics\n")
    keys.chmod(0o600)
    os.chown(keys, 1000, 1000)
    scrape_key = tmp_path / "scrape.key"
    scrape_key.write_text(SCRAPE_KEY)
    scrape_key.chmod(0o644)  # Prometheus runs as nobody
    env = {
        **podman_env,
        "NANOSERVE_IMAGE": cpu_image,
        "NGINX_IMAGE": pm.debian_image(pm.NGINX, "nginx.Containerfile", podman_env),
        "REDIS_IMAGE": pm.debian_image(pm.REDIS, "redis.Containerfile", podman_env),
        "PROMETHEUS_IMAGE": pm.debian_image(pm.PROMETHEUS, "prometheus.Containerfile", podman_env),
        "NANOSERVE_SCRAPE_KEY_FILE": str(scrape_key),
        "PROMETHEUS_PUBLISH": f"127.0.0.1:{prometheus_port}",
        "NANOSERVE_KEY_FILE": str(keys),
        "NANOSERVE_PUBLISH": f"127.0.0.1:{port}",
        "NANOSERVE_REPLICAS": "2",
        "NANOSERVE_CPU_KVCACHE_SPACE": "1",
    }
    s = Stack(f"nanoserve-test-{port}", env)
    s.url = f"http://127.0.0.1:{port}"
    s.prometheus = f"http://127.0.0.1:{prometheus_port}"
    try:
        s.compose("up", "-d")
        yield s
    finally:
        s.down()
    assert not s.containers("nanoserve"), "compose down left containers behind"


def test_compose_serves_through_nginx_with_limits_in_redis(stack):
    replicas = stack.containers("nanoserve")
    assert len(replicas) == 2, replicas
    stack.wait_healthy(replicas)
    [nginx] = stack.containers("nginx")
    check = pm.podman("exec", nginx, "nginx", "-t", env=stack.env, check=False)
    assert check.returncode == 0, check.stderr

    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEY, max_retries=0)
    ids = [f"compose-test-{i}" for i in range(6)]
    for rid in ids:
        raw = client.completions.with_raw_response.create(
            model="shakespeare_char",
            prompt="ROMEO:",
            max_tokens=8,
            extra_headers={"X-Request-Id": rid},
        )
        assert raw.headers["x-request-id"] == rid, "nginx forwards the client's id"
        assert raw.parse().usage.completion_tokens == 8
    # Without one, nginx makes one ($request_id: 32 hex digits) and the replica keeps it.
    raw = client.completions.with_raw_response.create(
        model="shakespeare_char", prompt="ROMEO:", max_tokens=1
    )
    assert re.fullmatch(r"[0-9a-f]{32}", raw.headers["x-request-id"])

    # An anonymous client guessing keys through nginx locks out only its own failures: each
    # replica counts them by the address nginx names (it trusts only the compose network), so
    # the valid key and the scraper below still get in. 70 guesses: over 30 on each replica.
    guesses = [
        httpx.get(
            f"{stack.url}/v1/models",
            headers={"Authorization": f"Bearer sk-guess-{i}", "X-Request-Id": "compose-guess"},
            timeout=10,
        ).status_code
        for i in range(70)
    ]
    assert set(guesses) == {401, 429} and guesses[:30] == [401] * 30, guesses
    assert client.models.list().data[0].id == "shakespeare_char"
    nginx_ip = pm.podman(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", nginx,
        env=stack.env,
    ).stdout.strip()  # fmt: skip
    logged = {
        json.loads(line)["client"]
        for name in replicas
        for line in stack.logs(name).splitlines()
        if '"compose-guess"' in line and '"nanoserve.access"' in line
    }
    assert logged and nginx_ip not in logged, (nginx_ip, logged)

    # least_conn spread the requests over both replicas (each logs the ids it served)
    served = {name: [rid for rid in ids if f'"{rid}"' in stack.logs(name)] for name in replicas}
    assert all(served.values()), served
    assert sorted(rid for got in served.values() for rid in got) == ids

    # per-caller limits are counted in the shared Redis
    [redis] = stack.containers("redis")
    keys = pm.podman("exec", redis, "redis-cli", "--scan", env=stack.env).stdout.split()
    assert any(k.startswith("LIMITS") for k in keys), keys

    # nginx's own errors come in OpenAI's shape
    r = httpx.post(
        f"{stack.url}/v1/completions",
        content=b"x" * 1_000_001,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"

    # /metrics wants the metrics scope: a client key gets 403 (here through nginx)
    r = httpx.get(f"{stack.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 403, r.text
    # Prometheus scrapes every replica's /metrics with its key: auth stays on for metrics
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        targets = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=5).json()
        health = [t["health"] for t in targets["data"]["activeTargets"]]
        if health == ["up", "up"]:
            break
        time.sleep(3)
    assert health == ["up", "up"], targets["data"]["activeTargets"]
    # with the alert rules of deploy/prometheus/nanoserve.rules.yml, each evaluating cleanly
    groups = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    rules_file = COMPOSE_FILE.parent / "prometheus" / "nanoserve.rules.yml"
    alerts = rules_file.read_text().count("- alert:")
    assert len(rules) == alerts and all(r["health"] in ("ok", "unknown") for r in rules), rules
