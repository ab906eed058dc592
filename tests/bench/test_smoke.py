"""The benchmark harness: its validity rule on fabricated records, and end to end, CI-sized:
`python -m bench.run --smoke` must keep giving sane numbers.

The smoke run starts real servers (nanoserve with its vLLM engine, and the naive baseline) and
drives them with `vllm bench serve`, so it is an engine test (~1-3 minutes here, mostly the
engine's start).
"""

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from nanoserve.server.cli import build_parser

from bench import (
    benchmarks_doc,
    plan,
    quantization,
    report,
    run,
    servers,
    usage,
    validity,
    vllm_bench_load,
)
from bench.vllm_bench_load import Level

REPO = Path(__file__).resolve().parents[2]


def record(server: str, repeat: int, tput: float, errors: int = 0, load: float = 0.5) -> dict:
    """A fabricated result record, as bench.run writes them."""
    return {
        "model": "m", "server": server, "repeat": repeat, "concurrency": 16, "prompts": 32,
        "warmups": 8, "ready_s": 30.0, "load_avg_before": load, "errors": errors,
        "completed": 32 - errors, "output_throughput": tput, "request_throughput": tput / 64,
        "p50_ttft_ms": 50.0, "p95_ttft_ms": 80.0, "p50_tpot_ms": 4.0,
    }  # fmt: skip


def test_a_failed_request_makes_the_record_invalid():
    (r,) = validity.mark([record("naive", 0, 300.0, errors=1)], max_load=1.5)
    assert r["valid"] is False
    assert r["invalid_reason"] == "1 of 32 requests failed"


def test_a_busy_machine_makes_the_record_invalid():
    (r,) = validity.mark([record("vllm", 0, 2000.0, load=1.6)], max_load=1.5)
    assert r["invalid_reason"] == "load average 1.6 > 1.5 before the server started"
    (r,) = validity.mark([record("vllm", 0, 2000.0, load=1.5)], max_load=1.5)
    assert r["valid"] is True


def test_a_server_never_ready_is_invalid():
    (r,) = validity.mark([record("vllm", 0, 2000.0) | {"ready_s": None}], max_load=1.5)
    assert r["invalid_reason"] == "server not ready"


def test_no_median_or_ratio_comes_from_an_invalid_run():
    runs = [
        record("nanoserve", 0, 2000.0), record("vllm", 0, 1000.0, load=9.0),  # busy: no ratio
        record("nanoserve", 1, 1800.0), record("vllm", 1, 2000.0),
        record("nanoserve", 2, 2200.0, errors=3), record("vllm", 2, 2000.0),  # failed: no ratio
    ]  # fmt: skip
    validity.mark(runs, max_load=1.5)
    rows = {r["server"]: r for r in report.summarize(runs)}
    assert rows["nanoserve"]["output_throughput"] == {
        "median": 1900.0, "min": 1800.0, "max": 2000.0, "n": 2
    }  # fmt: skip
    assert (rows["nanoserve"]["valid_runs"], rows["nanoserve"]["runs"]) == (2, 3)
    assert rows["vllm"]["output_throughput"]["n"] == 2
    (ratio,) = report.ratios(runs)
    assert ratio["vllm_ratio"] == {
        "median": 0.9, "min": 0.9, "max": 0.9, "n": 1, "vs_best_level": False
    }  # fmt: skip


def test_the_table_shows_valid_cells_only_and_lists_the_rest(tmp_path):
    runs = [record("nanoserve", 0, 2000.0), record("naive", 0, 300.0, errors=32)]
    info = {
        "date": "d", "wall_s": 60, "smoke": False, "command": "c", "pairs": 1, "repeats": 1,
        "machine": {"cpus": 2, "cpu_model": "x", "load_avg_at_start": [0.1], "versions": {},
                    "git": "g"},
        "runs": runs, "max_load": 1.5, "server_commands": {}, "client_command_example": "e",
        "engine_settings": {}, "cases": [{"model": "m", "input_len": 32, "output_len": 64}],
    }  # fmt: skip
    report.write(tmp_path, info)
    table = (tmp_path / "results.md").read_text()
    assert "| nanoserve | 16 | 32 | 1/1 | 2000.0 |" in table, table
    assert "| naive" not in table, table
    assert "- m naive (no KV cache) run 0, c=16: 32 of 32 requests failed" in table, table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["valid"] for r in saved["runs"]] == [True, False]
    assert saved["ratios"][0]["naive_ratio"] is None


def test_appended_baselines_pair_with_the_first_runs_and_are_dated(tmp_path):
    first = {
        "date": "d1", "wall_s": 60, "smoke": False, "command": "c1", "pairs": 1, "repeats": 1,
        "machine": {"cpus": 2, "cpu_model": "x", "load_avg_at_start": [0.1], "versions": {},
                    "git": "g1"},
        "runs": [record("nanoserve", 0, 2000.0)], "max_load": 1.5,
        "server_commands": {"m nanoserve": "s1"}, "client_command_example": "e",
        "engine_settings": {}, "cases": [{"model": "m", "input_len": 32, "output_len": 64}],
    }  # fmt: skip
    report.write(tmp_path, first)
    later = first | {
        "date": "d2", "wall_s": 120, "command": "c2 --append",
        "machine": first["machine"] | {"git": "g2"},
        "runs": [record("naive", 0, 250.0)], "server_commands": {"m naive": "s2"},
    }  # fmt: skip
    merged = run.appended(tmp_path / "results.json", later)
    report.write(tmp_path, merged)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["server"] for r in saved["runs"]] == ["nanoserve", "naive"]
    assert saved["ratios"][0]["naive_ratio"]["median"] == 8.0
    assert set(saved["server_commands"]) == {"m nanoserve", "m naive"}
    text = (tmp_path / "results.md").read_text()
    assert "- command: `c1`" in text, text
    assert "- then, d2 (2.0 min, nanoserve g2), records added by `c2 --append`" in text, text
    other = later | {"cases": [{"model": "other", "input_len": 1, "output_len": 1}]}
    with pytest.raises(SystemExit, match="measured other models"):
        run.appended(tmp_path / "results.json", other)


def test_quantization_drives_the_load_client_as_it_is_called_now(monkeypatch, tmp_path):
    # bench.quantization runs only by hand (~35 min): when vllm_bench_load.run_client changed, it
    # kept the old call and crashed at its first speed level, after 2 minutes of quality scoring
    signature, jobs = inspect.signature(vllm_bench_load.run_client), []

    def client(*args, **kwargs):
        signature.bind(*args, **kwargs)  # TypeError on a call that no longer fits
        jobs.extend(args[0])
        return [None] * len(args[0])

    figures = {"errors": 0, "output_throughput": 100.0, "p50_ttft_ms": 5.0, "p50_tpot_ms": 1.0}
    monkeypatch.setattr(vllm_bench_load, "run_client", client)
    monkeypatch.setattr(vllm_bench_load, "read_result", lambda path, level, problem=None: figures)
    proc = SimpleNamespace(
        url="http://127.0.0.1:9",
        log_path=tmp_path / "server.log",
        proc=SimpleNamespace(pid=os.getpid()),
    )
    level = Level(1, 2, 0)
    rec = quantization.run_level(
        proc, tmp_path, quantization.PLANS["shakespeare_char"], level, {"api_key": "k"}
    )
    ((argv, timeout),) = jobs
    assert argv[:2] == ["bench", "serve"] and timeout > 0
    assert (rec["errors"], rec["output_throughput"], rec["concurrency"]) == (0, 100.0, 1)


def test_the_benchmark_tables_are_the_generators_valid_cells():
    text = benchmarks_doc.DOC.read_text()
    assert text.count("<!-- bench-results: ") == 2
    assert benchmarks_doc.refresh(text) == text, "run .venv/bin/python -m bench.benchmarks_doc"


def test_cpu_sampler_tells_the_main_process_from_the_rest_of_its_group(tmp_path):
    # the engine's shape: the main process idles while its child (same group) computes
    child = "import time; t = time.process_time()\nwhile time.process_time() - t < 1: pass\n"
    child += "time.sleep(60)"
    main = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {child!r}]).wait()"
    proc = subprocess.Popen([sys.executable, "-c", main], start_new_session=True)
    try:
        with usage.CpuSampler(proc.pid, every=0.05) as cpu:
            deadline = time.monotonic() + 30
            while usage.group_cpu_seconds(proc.pid)[1] < 1.0 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # this test's own group, by its PID
        proc.wait(10)
    t0, t1 = cpu.samples[0][0], cpu.samples[-1][0]
    front, rest = cpu.between(t0, t1)
    assert front < 0.5, (front, rest)  # Python's start-up, not the child's computing
    assert 1.0 <= rest < 1.6, (front, rest)  # the child's start-up and its 1 s
    assert cpu.between(t0 - 60, t1) is None  # before the first sample: not known, not guessed
    # a level's window runs from its first request's start to its last one's end, as the
    # client stamped them: not from the result file's mtime (another clock, written later)
    res = tmp_path / "c1.json"
    stamps = {"start_times": [t0 + 0.01, t0], "latencies": [t1 - t0 - 0.01, 0.5]}
    res.write_text(json.dumps({**stamps, "total_output_tokens": 100}))
    os.utime(res, (0, 0))
    used = run.cpu_use(cpu, res)
    assert used["engine_cpu_s"] == pytest.approx(rest, abs=0.01), used
    assert used["front_cpu_ms_per_token"] == pytest.approx(10 * used["front_cpu_s"], 0.01)


def test_a_random_key_that_begins_with_a_dash_reaches_the_server_intact():
    # secrets.token_urlsafe begins with "-" one time in 64: as its own argument argparse took
    # it for an option and the server never started
    eng = servers.EngineSettings(max_model_len=128)
    cmd = servers.command("nanoserve", Path("m"), 8000, "-k3y", eng)
    args = build_parser().parse_args(cmd[cmd.index("serve") + 1 :])
    assert args.api_keys == ["-k3y"]
    assert "--api-key=-k3y" in servers.command("vllm", Path("m"), 8000, "-k3y", eng)


def test_pairs_alternate_with_the_baselines_between_them():
    assert run.order(["nanoserve", "vllm", "naive", "hf"], pairs=3, repeats=2) == [
        ("nanoserve", 0), ("vllm", 0), ("naive", 0), ("hf", 0),
        ("nanoserve", 1), ("vllm", 1), ("naive", 1), ("hf", 1),
        ("nanoserve", 2), ("vllm", 2),
    ]  # fmt: skip


def test_a_serialized_server_gets_time_for_its_requests_in_sequence():
    case = plan.FULL[0]
    level = Level(16, 16, 0)
    engine, naive = (
        plan.level_timeout(case, "vllm", level),
        plan.level_timeout(case, "naive", level),
    )
    assert engine == 60.0  # 17 requests, 16 at a time: the one-minute floor
    assert naive == pytest.approx(17 * 64 * case.token_s)  # one at a time


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)]
    # a CI machine is busy by design: the load rule is tested above, on fabricated records
    cmd += ["--settle", "0", "--max-load", "1000"]
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
    for record in results["runs"]:
        assert record["output_throughput"] > 0, record
        assert record["request_throughput"] > 0, record
        assert record["p50_ttft_ms"] > 0, record
        assert record["output_tokens"] == record["completed"] * 16, record  # --ignore-eos
        if record["server"] == "nanoserve":  # the front end's CPU under the real engine
            assert 0 < record["front_cpu_s"] < record["duration_s"], record
            assert record["engine_cpu_s"] > 0, record
        else:  # a one-process server has no front end apart from its model
            assert "front_cpu_s" not in record, record


@pytest.mark.engine
@pytest.mark.timeout(1600)
def test_smoke_run_has_no_errors_and_every_record_is_valid(smoke):
    _, results = smoke
    for record in results["runs"]:
        assert record["errors"] == 0, record["error_sample"]
        assert record["completed"] == record["prompts"], record
        assert record["valid"], record["invalid_reason"]


@pytest.mark.engine
@pytest.mark.timeout(1600)
def test_smoke_run_writes_table_plots_and_ratios(smoke):
    out, results = smoke
    table = (out / "results.md").read_text()
    assert "| nanoserve | 4 | 8 | 1/1 |" in table, table
    assert results["machine"]["cpus"] >= 1 and results["machine"]["cpu_model"]
    assert {r["concurrency"] for r in results["ratios"]} == {1, 4}
    assert all(r["naive_ratio"]["median"] > 0 for r in results["ratios"])
    for png in ("throughput.png", "ttft.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
