"""deploy/k8s: valid Kubernetes objects that point at nanoserve's real routes, ports and settings,
and a container environment that gets past the start-up checks the old manifest failed."""

import subprocess
import sys
import tomllib
from importlib.util import find_spec
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from nanoserve.server.app import create_app
from nanoserve.server.security.keyfile import digest, parse_key_file
from nanoserve.server.settings import Settings

from tests.deploy import k8s

OVERLAYS = list(k8s.OVERLAYS)
# The oldest Kubernetes these manifests claim (policy/v1 PDB, autoscaling/v2 HPA, components in
# kubectl's kustomize) and the newest schema kubernetes-validate ships.
VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
CRDS = {"ServiceMonitor"}  # no schema offline; test_servicemonitor_* checks what it refers to


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: k8s.render(name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def app_paths() -> set[str]:
    app = create_app(Settings(no_auth=True), lambda: None)
    return {route.path for route in app.routes}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_match_the_kubernetes_schemas(rendered, overlay, version):
    objects = rendered[overlay]
    checked = [o for o in objects if o["kind"] not in CRDS]
    for obj in checked:
        kubernetes_validate.validate(obj, version, strict=True)
    kinds = {o["kind"] for o in checked}
    assert {"Deployment", "Service", "Secret", "ConfigMap", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_apps_routes_on_its_port(rendered, overlay, app_paths):
    objects = rendered[overlay]
    c = k8s.container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": Settings().port}, "the image listens on nanoserve's default port"
    probes = {kind: c[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe")}
    probes["livenessProbe"] = c["livenessProbe"]["httpGet"]
    # readiness means loaded, not draining, engine alive (/ready); liveness is cheap (/live)
    assert {k: p["path"] for k, p in probes.items()} == {
        "startupProbe": "/ready",
        "readinessProbe": "/ready",
        "livenessProbe": "/live",
    }
    assert {p["path"] for p in probes.values()} <= app_paths
    assert all(p["port"] in ports for p in probes.values())
    [service_port] = k8s.one(objects, "Service")["spec"]["ports"]
    assert service_port["targetPort"] in ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_nanoserve_variable_is_a_setting(rendered, overlay):
    objects = rendered[overlay]
    env = k8s.container_env(objects)
    fields = set(Settings.model_fields)
    for name in env:
        assert name.startswith("NANOSERVE_"), f"{name}: not a nanoserve setting"
        assert name.removeprefix("NANOSERVE_").lower() in fields, f"{name}: no such setting"
    # the keys come from the Secret, under the setting's own name
    [source] = k8s.container(objects)["envFrom"]
    secret = k8s.named(objects, "Secret", source["secretRef"]["name"])
    assert set(k8s.secret_data(secret)) == {"NANOSERVE_API_KEYS"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_file_from_configs_is_valid_settings(rendered, overlay, tmp_path):
    objects = rendered[overlay]
    mount = k8s.volume_files(objects, tmp_path)["/etc/nanoserve"]
    env = k8s.container_env(objects)
    # the ConfigMap holds configs/ as it is in the repository
    for path in mount.iterdir():
        assert path.read_text() == (k8s.REPO / "configs" / path.name).read_text()
    chosen = tmp_path / env["NANOSERVE_CONFIG_FILE"].lstrip("/")
    assert chosen.is_file(), env["NANOSERVE_CONFIG_FILE"]
    Settings(config_file=chosen)  # extra="forbid": an unknown key raises
    expected = "gpu.toml" if overlay == "gpu" else "cpu-demo.toml"
    assert chosen.name == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(rendered, overlay):
    objects = rendered[overlay]
    c = k8s.container(objects)
    pod = k8s.one(objects, "Deployment")["spec"]["template"]["spec"]
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = int(k8s.container_env(objects)["NANOSERVE_GRACEFUL_SHUTDOWN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_a_local_image_as_the_images_user_with_a_big_shm(rendered, overlay):
    objects = rendered[overlay]
    c = k8s.container(objects)
    pod = k8s.one(objects, "Deployment")["spec"]["template"]["spec"]
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile = (k8s.REPO / "Dockerfile").read_text()
    assert f"USER {pod['securityContext']['runAsUser']}:" in dockerfile
    [shm] = [m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    [vol] = [v for v in pod["volumes"] if v["name"] == shm["name"]]
    assert vol["emptyDir"]["medium"] == "Memory"


def test_gpu_overlay_asks_for_one_gpu_and_the_gpu_image(rendered):
    c = k8s.container(rendered["gpu"])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["image"] == "nanoserve:gpu"
    assert "nvidia.com/gpu" not in str(k8s.container(rendered["cpu"])["resources"])


def test_pdb_and_service_select_the_deployments_pods(rendered):
    objects = rendered["cpu"]
    labels = k8s.one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind, selector in (
        ("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
        ("Service", lambda o: o["spec"]["selector"]),
    ):
        assert selector(k8s.one(objects, kind)).items() <= labels.items(), kind


def test_servicemonitor_scrapes_metrics_with_a_key_that_has_the_metrics_scope(
    rendered, app_paths, tmp_path
):
    objects = rendered["cpu+monitoring"]
    monitor = k8s.one(objects, "ServiceMonitor")
    service = k8s.one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and "/metrics" in app_paths
    ref = endpoint["authorization"]["credentials"]
    token = k8s.secret_data(k8s.named(objects, "Secret", ref["name"]))[ref["key"]]
    # the pod's key file, read by the server's own parser: the token has the metrics scope
    k8s.volume_files(objects, tmp_path)
    key_file = tmp_path / k8s.container_env(objects)["NANOSERVE_API_KEY_FILE"].lstrip("/")
    callers = [e.caller for e in parse_key_file(key_file) if e.digest == digest(token)]
    assert [c.metrics for c in callers] == [True]


def test_autoscaler_uses_the_queue_depth_the_adapter_serves(rendered):
    hpa = k8s.one(rendered["cpu+monitoring"], "HorizontalPodAutoscaler")
    [metric] = hpa["spec"]["metrics"]
    values = k8s.K8S / "components" / "monitoring" / "prometheus-adapter-values.yaml"
    [rule] = yaml.safe_load(values.read_text())["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["seriesQuery"].startswith("vllm:num_requests_waiting{")
    # the series exists: vLLM itself registers it
    [vllm_dir] = find_spec("vllm").submodule_search_locations
    assert '"vllm:num_requests_waiting"' in Path(vllm_dir, "v1/metrics/loggers.py").read_text()


# --- The container's command with the manifest's environment starts.

# What deploy/kubernetes.yaml gave the image (which sets NANOSERVE_HOST=0.0.0.0): no credentials.
OLD_MANIFEST_ENV = {
    "NANOSERVE_HOST": "0.0.0.0",
    "NANOSERVE_LOG_FORMAT": "json",
    "NANOSERVE_CPU_KVCACHE_SPACE": "2",
    "NANOSERVE_KEEP_ALIVE_TIMEOUT": "75",
}


def _serve(env: dict[str, str], args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The image's entry point (`nanoserve serve ARGS`) with exactly ENV (plus PATH and HOME)."""
    import os

    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "nanoserve.cli", "serve", *args],
        env={**base, "NANOSERVE_CACHE_DIR": str(tmp_path / "cache"), **env},
        cwd=k8s.REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_old_manifest_env_crash_loops_on_missing_credentials(tmp_path):
    done = _serve(OLD_MANIFEST_ENV, [], tmp_path)
    assert done.returncode == 2
    assert "no credentials configured" in done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifest_env_gets_past_the_auth_check(rendered, overlay, tmp_path):
    objects = rendered[overlay]
    env = k8s.container_env(objects)
    k8s.volume_files(objects, tmp_path)  # the files the env names, re-rooted under tmp_path
    for name in ("NANOSERVE_CONFIG_FILE", "NANOSERVE_API_KEY_FILE"):
        if name in env:
            env[name] = str(tmp_path / env[name].lstrip("/"))
    assert tomllib.loads(Path(env["NANOSERVE_CONFIG_FILE"]).read_text())  # really there
    # A model that does not exist stops the start right after the checks the old env failed,
    # before vLLM is imported (the real start of this env runs in the container tests).
    args = k8s.container(objects)["args"] + ["/nonexistent/ckpt.pt"]
    done = _serve(env, args, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "no credentials" not in done.stderr and "refusing" not in done.stderr
    assert "model not found: /nonexistent/ckpt.pt" in done.stderr
