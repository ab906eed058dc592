"""Podman for the deployment tests: its configuration, local base images, image builds.

No registry image can be pulled on the test machines, so the bases are made here: Debian
bookworm from debootstrap, imported once and kept in podman's store between runs, then thin
layers (python3, nginx, redis-server) from Debian's packages in place of the registry images.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path(__file__).resolve().parent / "images"
PREFIX = "localhost/nanoserve-test"
DEBIAN = f"{PREFIX}/bookworm-min:latest"
PYTHON = f"{PREFIX}/python:3.11"
NGINX = f"{PREFIX}/nginx:latest"
REDIS = f"{PREFIX}/redis:latest"
PROMETHEUS = f"{PREFIX}/prometheus:latest"
NANOSERVE_CPU = f"{PREFIX}/nanoserve:cpu"
START_TIMEOUT = 480  # s: conversion, engine start and first compile on 2 busy cores
DEBIAN_MIRROR = os.environ.get("NANOSERVE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# crun fails here on rlimits and hybrid cgroups; runc with cgroupfs works. Passed through
# CONTAINERS_CONF, so the machine's /etc/containers stays as it is.
CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""


def podman_env(workdir: Path) -> dict[str, str]:
    """os.environ plus CONTAINERS_CONF pointing at our containers.conf (written to workdir)."""
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(
    *args: str, env: dict[str, str], timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess:
    """Run `podman ARGS`; on failure with check, raise with its output."""
    done = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} -> {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def image_exists(name: str, env: dict[str, str]) -> bool:
    return podman("image", "exists", name, env=env, check=False).returncode == 0


def debian_base(env: dict[str, str]) -> str:
    """Debian bookworm (minbase), made once with debootstrap and kept in podman's store."""
    if image_exists(DEBIAN, env):
        return DEBIAN
    with tempfile.TemporaryDirectory(prefix="nanoserve-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
            check=True,
            capture_output=True,
            timeout=900,
        )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "-", DEBIAN],
            stdin=tar.stdout,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        tar.wait(60)
    return DEBIAN


def debian_image(name: str, containerfile: str, env: dict[str, str]) -> str:
    """A layer of Debian packages over the base (podman's layer cache makes repeats instant)."""
    base = debian_base(env)
    podman(
        "build", "--network", "host", "--build-arg", f"FROM={base}",
        "-f", str(IMAGES / containerfile), "-t", name, str(IMAGES),
        env=env, timeout=900,
    )  # fmt: skip
    return name


def _pip_setting(name: str) -> str | None:
    """pip's own setting NAME (cert, find-links) as pip would read it: environment first, then
    its config files (`pip config list` prints `where.name='value'` lines)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    )
    found = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        where, _, key_name = key.rpartition(".")
        if key_name == name:
            found[where] = value.strip("'")
    return found.get(":env:") or next(iter(found.values()), None)


def proxy_build_args() -> list[str]:
    """The Dockerfile's optional build inputs, from this machine's pip setup: its CA bundle
    (PIP_CERT) and local wheel directory (PIP_FIND_LINKS), mounted into the build."""
    args: list[str] = []
    cert = _pip_setting("cert")
    if cert and Path(cert).is_file():
        args += ["-v", f"{cert}:/run/pip-ca.crt:ro", "--build-arg", "PIP_CERT=/run/pip-ca.crt"]
    links = _pip_setting("find-links")
    if links and Path(links).is_dir():
        args += ["-v", f"{links}:/run/wheels:ro", "--build-arg", "PIP_FIND_LINKS=/run/wheels"]
        if any(Path(links).glob("torch-2.13.0+cpu-*.whl")):
            # as scripts/setup.sh does: a local CPU torch wheel replaces PyTorch's index
            args += ["--build-arg", "TORCH_INDEX_URL="]
    return args


def build_nanoserve(tag: str, env: dict[str, str], log: Path, context: Path = REPO) -> str:
    """Build the project's Dockerfile (CPU target) on the local python base."""
    base = debian_image(PYTHON, "python.Containerfile", env)
    # --format docker: the OCI image format has no HEALTHCHECK
    cmd = [
        "podman", "build", "--format", "docker", "--network", "host",
        "--build-arg", f"BASE={base}",
        *proxy_build_args(), "-t", tag, str(context),
    ]  # fmt: skip
    with log.open("wb") as out:
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=2400)
    if done.returncode != 0:
        raise RuntimeError(f"image build failed:\n{log.read_text(errors='replace')[-4000:]}")
    return tag


def tools_missing() -> list[str]:
    return [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]


def logs(name: str, env: dict[str, str]) -> str:
    done = podman("logs", name, env=env, check=False)
    return (done.stdout + done.stderr)[-4000:]


def wait_ready(url: str, name: str, env: dict[str, str]) -> None:
    """Until URL/ready answers 200; fail at once, with the logs, if container NAME stops."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = podman("inspect", "-f", "{{.State.Status}}", name, env=env).stdout.strip()
        if state != "running":
            raise AssertionError(f"container {state}:\n{logs(name, env)}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    raise AssertionError(f"not ready after {START_TIMEOUT} s:\n{logs(name, env)}")
