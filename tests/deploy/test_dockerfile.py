"""The Dockerfile passes hadolint: one file, so both targets (TARGET=cpu|gpu) are linted."""

import subprocess
import sys
from pathlib import Path

from tests.deploy.podman import REPO


def test_hadolint_passes_without_warnings():
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
