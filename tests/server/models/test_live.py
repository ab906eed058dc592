"""Reloads through the real app over fake engines (server/models/live.py): a job runs wholly on
one version, a failed reload changes nothing, another architecture gets a new engine and the
old one stops after its last job, and only `keep` versions stay on disk. The real engine's
swap is proven in tests/e2e/test_live_updates.py."""

import threading
import time

import pytest
from nanoserve.server.models.live import ReloadFailed, Source

from harness.probes import wait_until
from tests.server.models.test_version import CONFIG, model_dir
from tests.support.fake_engine import ALPHABET, FakeEngine, fake_app

BODY = {"model": "fake", "prompt": "a", "max_tokens": 10, "temperature": 0}


class Training:
    """Converted versions of one model, in the order a training run writes them."""

    def __init__(self, root, engine: FakeEngine):
        self.root, self.engine, self.n = root, engine, 0
        self.now = self.write()
        self.started: list[FakeEngine] = []

    def write(self, config=CONFIG, fail: str | None = None):
        self.n += 1
        self.fail = fail
        source = {"iter_num": 1000 * self.n, "sha256": f"{self.n:08d}" + "0" * 56}
        self.now = model_dir(self.root / f"v{self.n}", config=config, source=source)
        return self.now

    def resolve(self):
        if self.fail:
            raise RuntimeError(self.fail)
        return self.now

    async def start(self, directory):
        engine = FakeEngine(delay=self.engine.delay)
        self.started.append(engine)
        return engine

    def source(self) -> Source:
        async def first():
            return self.engine

        return Source(first, self.now, self.resolve, self.start, owns=lambda p: True)


def model_of(client):
    return client.app.state.runtime.model


def reload(client):
    return client.portal.call(model_of(client).reload, "test")


def complete(client, results: list):
    r = client.post("/v1/completions", json=BODY)
    results.append((r.json()["system_fingerprint"], r.json()["choices"][0]["text"]))


def generating(client, engine: FakeEngine, results: list) -> threading.Thread:
    """A completion started in a thread, returned once the engine is generating it."""
    thread = threading.Thread(target=complete, args=(client, results))
    thread.start()
    assert wait_until(lambda: engine.active == 1, 5, 0.01)
    return thread


def text(shift: int) -> str:  # the fake engine's greedy text after `shift` swaps
    return "".join(ALPHABET[(1 + i + shift) % len(ALPHABET)] for i in range(10))


def test_a_job_runs_wholly_on_the_version_it_started_on(tmp_path):
    engine = FakeEngine(delay=0.05)  # 10 tokens: half a second
    run = Training(tmp_path, engine)
    with fake_app(engine, source=run.source(), no_auth=True) as client:
        results: list = []
        before = generating(client, engine, results)
        run.write()
        swap = threading.Thread(target=reload, args=(client,))
        swap.start()
        time.sleep(0.1)  # the swap is waiting for the job that started
        after = threading.Thread(target=complete, args=(client, results))
        after.start()
        for t in (before, swap, after):
            t.join(10)
        assert engine.swapped == [(str(run.now), 0)]  # swapped with nothing generating
        assert sorted(results) == [("iter1000-00000001", text(0)), ("iter2000-00000002", text(1))]
        card = client.get("/v1/models/fake").json()
        assert (card["version"], card["status"]) == ("iter2000-00000002", "ready")
        assert [v["iter_num"] for v in card["versions"]] == [1000, 2000]


def test_a_failed_reload_changes_nothing_and_says_why(tmp_path):
    engine = FakeEngine()
    run = Training(tmp_path, engine)
    with fake_app(engine, source=run.source(), no_auth=True) as client:
        run.write(fail="checkpoint truncated")
        with pytest.raises(ReloadFailed, match="checkpoint truncated"):
            reload(client)
        card = client.get("/v1/models/fake").json()
        assert card["status"] == "failed: checkpoint truncated"
        assert card["last_error"] == "checkpoint truncated"
        assert card["version"] == "iter1000-00000001" and engine.swapped == []
        r = client.post("/v1/completions", json=BODY).json()
        assert r["choices"][0]["text"] == text(0)
        assert 'outcome="failed"} 1.0' in client.get("/metrics").text
        run.write()  # the next version is tried, and clears the error
        reload(client)
        card = client.get("/v1/models/fake").json()
        assert (card["status"], card["last_error"]) == ("ready", None)


def test_another_architecture_gets_a_new_engine_and_the_old_one_stops_after_its_jobs(tmp_path):
    engine = FakeEngine(delay=0.05)
    run = Training(tmp_path, engine)
    with fake_app(engine, source=run.source(), no_auth=True) as client:
        results: list = []
        before = generating(client, engine, results)
        run.write(config=CONFIG | {"n_layer": 3})
        reload(client)  # returns once the new engine serves, not when the old one is idle
        assert len(run.started) == 1 and not engine.stopped
        complete(client, results)
        before.join(10)
        assert results[0] == ("iter1000-00000001", text(0))  # the old engine finished it
        assert results[1][0] == "iter2000-00000002"
        assert wait_until(lambda: engine.stopped, 5, 0.01)
        assert engine.swapped == [] and not run.started[0].stopped


def test_only_the_kept_versions_stay_on_disk(tmp_path):
    engine = FakeEngine()
    run = Training(tmp_path, engine)
    first = run.now
    with fake_app(engine, source=run.source(), no_auth=True, keep_versions=2) as client:
        for _ in range(3):
            run.write()
            reload(client)
        card = client.get("/v1/models/fake").json()
        assert [v["iter_num"] for v in card["versions"]] == [3000, 4000]
        assert not first.exists() and not (tmp_path / "v2").exists()
        assert (tmp_path / "v3").exists() and run.now.exists()
