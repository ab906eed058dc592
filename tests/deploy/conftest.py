"""Fixtures for the container tests: podman configured for this machine, the CPU image built once
per session from the project's Dockerfile."""

import time
from pathlib import Path

import pytest

from tests.deploy import podman as pm


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory) -> dict[str, str]:
    missing = pm.tools_missing()
    assert not missing, f"{missing} not installed: run scripts/setup.sh --with-test-tools"
    return pm.podman_env(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def build_log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("builds")


@pytest.fixture(scope="session")
def cpu_image(podman_env, build_log_dir) -> str:
    """The CPU image from the project's Dockerfile, on the local Debian python base."""
    started = time.monotonic()
    tag = pm.build_nanoserve(pm.NANOSERVE_CPU, podman_env, build_log_dir / "nanoserve-cpu.log")
    print(f"\nnanoserve CPU image ready in {time.monotonic() - started:.0f} s")
    return tag
