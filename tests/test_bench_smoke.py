"""The benchmark harness end to end, CI-sized: `bench/run.py --smoke` must keep giving sane numbers.

Starts real servers (nanoserve with its vLLM engine, and the naive baseline) and drives them with
`vllm bench serve`, so it is an engine test (~1-3 minutes here, mostly the engine's start).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(out)]
    # ~150 s on a quiet machine; a saturated one (load 30+ on 2 cores) took over 840 s
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.engine
@pytest.mark.timeout(1600)
def test_smoke_run_measures_every_server_and_level(smoke):
    _, results = smoke
    measured = {(r["server"], r["concurrency"]) for r in results["runs"]}
    assert measured == {("nanoserve", 1), ("nanoserve", 4), ("naive", 1), ("naive", 4)}
    for run in results["runs"]:
        assert run["output_throughput"] > 0, run
        assert run["request_throughput"] > 0, run
        assert run["p50_ttft_ms"] > 0, run
        assert run["output_tokens"] == run["completed"] * 16, run  # --ignore-eos: all 16 tokens


@pytest.mark.engine
@pytest.mark.timeout(1600)
def test_smoke_run_has_no_errors_for_nanoserve(smoke):
    _, results = smoke
    for run in (r for r in results["runs"] if r["server"] == "nanoserve"):
        assert run["errors"] == 0, run["error_sample"]
        assert run["completed"] == run["prompts"], run


@pytest.mark.engine
@pytest.mark.timeout(1600)
def test_smoke_run_writes_table_plots_and_ratios(smoke):
    out, results = smoke
    table = (out / "results.md").read_text()
    assert "| nanoserve | 4 | 8 |" in table, table
    assert results["machine"]["cpus"] >= 1 and results["machine"]["cpu_model"]
    assert {r["concurrency"] for r in results["ratios"]} == {1, 4}
    assert all(r["naive_ratio"]["median"] > 0 for r in results["ratios"])
    for png in ("throughput.png", "ttft.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
