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


def volume_files(objects: list[dict], root: Path) -> dict[str, Path]:
    """Write the container's ConfigMap and Secret volumes under root, as the kubelet lays them
    out (a Secret's files owned by fsGroup with defaultMode plus group read); return
    {mountPath: directory}."""
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    written = {}
    for mount in container(objects)["volumeMounts"]:
        vol = volumes[mount["name"]]
        if "configMap" in vol:
            files, mode = named(objects, "ConfigMap", vol["configMap"]["name"])["data"], 0o644
        elif "secret" in vol:
            src = secret_data(named(objects, "Secret", vol["secret"]["secretName"]))
            items = vol["secret"].get("items") or [{"key": k, "path": k} for k in src]
            files = {item["path"]: src[item["key"]] for item in items}
            mode = vol["secret"].get("defaultMode", 0o644) | 0o040
        else:
            continue
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True)
        for filename, text in files.items():
            (target / filename).write_text(text)
            (target / filename).chmod(mode)
            os.chown(target / filename, 0, pod["securityContext"]["fsGroup"])
        written[mount["mountPath"]] = target
    return written
