"""The CPU overlay's pod, started the way the kubelet would start it: the image's entry point with
the manifest's args, its environment (Secret + env), the ConfigMap mounted, its user and
capabilities. Its probes pass, and SIGTERM ends it within the grace period."""

import time

import httpx
import pytest

from bench.procs import free_port
from tests.deploy import k8s
from tests.deploy import podman as pm

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]


def kubelet_args(objects: list[dict], config_dir) -> list[str]:
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
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/nanoserve"]
    args += ["-v", f"{config_dir}:{mount['mountPath']}:ro"]
    [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
    args += ["--shm-size", shm["emptyDir"]["sizeLimit"].replace("Gi", "g")]
    return args


def test_cpu_pod_starts_passes_its_probes_and_drains_in_time(cpu_image, podman_env, tmp_path):
    objects = k8s.render("cpu")
    c = k8s.container(objects)
    pod = k8s.one(objects, "Deployment")["spec"]["template"]["spec"]
    config_dir = k8s.configmap_files(objects, tmp_path)
    port = free_port()
    name = f"nanoserve-test-pod-{port}"
    pm.podman(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{c['ports'][0]['containerPort']}",
        *kubelet_args(objects, config_dir), cpu_image, *c["args"],
        env=podman_env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        pm.wait_ready(url, name, podman_env)  # the startup probe's /ready
        for probe in ("readinessProbe", "livenessProbe"):
            path = c[probe]["httpGet"]["path"]
            assert httpx.get(url + path, timeout=5).status_code == 200, probe
        # the manifest's key works, and auth is on
        key = k8s.container_env(objects)["NANOSERVE_API_KEYS"].split(",")[0]
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert models.status_code == 200, models.text
        assert httpx.get(f"{url}/v1/models").status_code == 401

        # kubelet: SIGTERM, then SIGKILL after terminationGracePeriodSeconds
        grace = pod["terminationGracePeriodSeconds"]
        started = time.monotonic()
        pm.podman("stop", "-t", str(grace), name, env=podman_env, timeout=grace + 60)
        took = time.monotonic() - started
        code = pm.podman("inspect", "-f", "{{.State.ExitCode}}", name, env=podman_env).stdout
        assert took < grace and int(code) != 137, f"exit {code.strip()} after {took:.0f} s"
    finally:
        pm.podman("rm", "-f", "-t", "10", name, env=podman_env, check=False)
