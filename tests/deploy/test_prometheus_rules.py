"""deploy/prometheus/ checked by Debian's promtool (scripts/setup.sh --with-test-tools): the
config and the rules load, and every alert fires on the synthetic series it is meant for and
stays quiet on healthy ones (tests/deploy/nanoserve.rules.test.yml). Against a live server:
tests/e2e/test_observability.py."""

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    assert shutil.which("promtool"), "promtool missing: scripts/setup.sh --with-test-tools"
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_every_alert_fires_when_it_should_and_only_then():
    done = promtool("test", "rules", str(REPO / "tests" / "deploy" / "nanoserve.rules.test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_promtool_test():
    rules = (PROMETHEUS / "nanoserve.rules.yml").read_text()
    tests = (REPO / "tests" / "deploy" / "nanoserve.rules.test.yml").read_text()
    alerts = [line.split(":")[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert len(alerts) == 8
    assert [a for a in alerts if f"alertname: {a}" not in tests] == []


def test_the_compose_config_loads_with_its_rules(tmp_path):
    # as compose mounts them: the config, the rules beside it, a scrape key
    key = tmp_path / "scrape.key"
    key.write_text("sk-test")
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/etc/prometheus/scrape.key" in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/scrape.key", str(key)))
    shutil.copy(PROMETHEUS / "nanoserve.rules.yml", tmp_path)
    done = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = (PROMETHEUS / "nanoserve.rules.yml").read_text().count("- alert:")
    assert f"SUCCESS: {alerts} rules found" in done.stdout
