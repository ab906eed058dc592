"""The CPU overlay's pod (with the monitoring component), started the way the kubelet would start
it: the image's entry point with the manifest's args, its environment (Secret + env), the
ConfigMap and the scrape key file mounted, its user and capabilities. Its probes pass, the
client key and Prometheus's key work as scoped, and SIGTERM ends it within the grace period."""

import time

import httpx
import pytest

from harness.processes import free_port
from tests.deploy import k8s
from tests.deploy import podman as pm

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]


def kubelet_args(objects: list[dict], root) -> list[str]:
    """`podman run` options for what the Deployment's pod spec asks of the container runtime."""
    pod = k8s.one(objects, "Deployment")["spec"]["template"]["spec"]
    c = k8s.container(objects)
    user = pod["securityContext"]
    args = ["--user", f"{user['runAsUser']}:{user['runAsGroup']}"]
    if c["securityContext"]["capabilities"]["drop"] == ["ALL"]:
        args += ["--cap-drop", "ALL"]
    if c["securityContext"]["allowPrivilegeEscalation"] is False:
        args += ["--security-opt", "no-new-privileges"]
    for name, value in k8s.container_env(objects).items():
        args += ["-e", f"{name}={value}"]
    for mount_path, directory in k8s.volume_files(objects, root).items():
        args += ["-v", f"{directory}:{mount_path}:ro"]
    [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
    args += ["--shm-size", shm["emptyDir"]["sizeLimit"].replace("Gi", "g")]
    return args


def test_cpu_pod_starts_passes_its_probes_and_drains_in_time(cpu_image, podman_env, tmp_path):
    objects = k8s.render("cpu+monitoring")
    c = k8s.container(objects)
    pod = k8s.one(objects, "Deployment")["spec"]["template"]["spec"]
    port = free_port()
    name = f"nanoserve-test-pod-{port}"
    pm.podman(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{c['ports'][0]['containerPort']}",
        *kubelet_args(objects, tmp_path), cpu_image, *c["args"],
        env=podman_env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        pm.wait_ready(url, name, podman_env)  # the startup probe's /ready
        for probe in ("readinessProbe", "livenessProbe"):
            path = c[probe]["httpGet"]["path"]
            assert httpx.get(url + path, timeout=5).status_code == 200, probe
        # the client key from the Secret works, and auth is on
        key = k8s.container_env(objects)["NANOSERVE_API_KEYS"].split(",")[0]
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert models.status_code == 200, models.text
        assert httpx.get(f"{url}/v1/models").status_code == 401
        # /metrics: Prometheus's token (the ServiceMonitor's) yes, a client key no
        [endpoint] = k8s.one(objects, "ServiceMonitor")["spec"]["endpoints"]
        ref = endpoint["authorization"]["credentials"]
        token = k8s.secret_data(k8s.named(objects, "Secret", ref["name"]))[ref["key"]]
        scrape = httpx.get(url + endpoint["path"], headers={"Authorization": f"Bearer {token}"})
        assert scrape.status_code == 200 and "vllm:num_requests_waiting" in scrape.text
        client = httpx.get(url + endpoint["path"], headers={"Authorization": f"Bearer {key}"})
        assert client.status_code == 403

        # kubelet: SIGTERM, then SIGKILL after terminationGracePeriodSeconds
        grace = pod["terminationGracePeriodSeconds"]
        started = time.monotonic()
        pm.podman("stop", "-t", str(grace), name, env=podman_env, timeout=grace + 60)
        took = time.monotonic() - started
        code = pm.podman("inspect", "-f", "{{.State.ExitCode}}", name, env=podman_env).stdout
        # drained in time (not SIGKILLed: 137) and a normal end (0, not a re-raised SIGTERM)
        assert took < grace and int(code) == 0, f"exit {code.strip()} after {took:.0f} s"
    finally:
        pm.podman("rm", "-f", "-t", "10", name, env=podman_env, check=False)
