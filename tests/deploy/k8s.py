"""Render deploy/k8s with kubectl's kustomize and read the objects the tests look at."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = {
    "cpu": (K8S / "overlays" / "cpu", []),
    "gpu": (K8S / "overlays" / "gpu", []),
    "cpu+monitoring": (K8S / "overlays" / "cpu", [K8S / "components" / "monitoring"]),
}


def kustomize(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (>= 1.27, with kustomize v5) is needed to render deploy/k8s"
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render(name: str) -> list[dict]:
    """The objects `kubectl apply -k` would send for an overlay (plus its components)."""
    overlay, components = OVERLAYS[name]
    if not components:
        return kustomize(overlay)
    # What a user does to add a component: a kustomization naming the overlay and it
    # (kustomize wants relative paths).
    with tempfile.TemporaryDirectory() as tmp:
        rel = [os.path.relpath(p, tmp) for p in (overlay, *components)]
        Path(tmp, "kustomization.yaml").write_text(
            yaml.safe_dump({"resources": rel[:1], "components": rel[1:]})
        )
        return kustomize(Path(tmp))


def one(objects: list[dict], kind: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind]
    return obj


def named(objects: list[dict], kind: str, name: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def container(objects: list[dict]) -> dict:
    [c] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def secret_data(secret: dict) -> dict[str, str]:
    # the manifests use stringData (readable placeholders); base64 `data` is not used
    return dict(secret.get("stringData", {}))


def container_env(objects: list[dict]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom Secrets, then env."""
    c = container(objects)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(secret_data(named(objects, "Secret", source["secretRef"]["name"])))
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    return env


def configmap_files(objects: list[dict], root: Path) -> Path:
    """Write the ConfigMap mounted into the container under root; return the mount's path there
    (the container's mountPath, re-rooted)."""
    c = container(objects)
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    [vol] = [v for v in volumes if "configMap" in v]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
    cm = named(objects, "ConfigMap", vol["configMap"]["name"])
    target = root / mount["mountPath"].lstrip("/")
    target.mkdir(parents=True)
    for filename, text in cm["data"].items():
        (target / filename).write_text(text)
    return target
