"""Settings: one object, four sources, one precedence; docs/SETTINGS.md's table can't drift."""

import subprocess
import sys
from pathlib import Path

import pytest
from nanoserve.server.cli import load_settings
from nanoserve.server.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def toml(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('port = 9001\nmax_num_seqs = 8\nlog_format = "text"\n')
    return path


def test_precedence_is_flags_then_env_then_file_then_default(toml, monkeypatch):
    monkeypatch.setenv("NANOSERVE_PORT", "9002")
    s = load_settings(["--config", str(toml), "--max-num-seqs", "4"])
    assert s.port == 9002  # env beats file
    assert s.max_num_seqs == 4  # flag beats file
    assert s.log_format == "text"  # file beats default
    assert s.host == "127.0.0.1"  # default
    assert load_settings(["--config", str(toml), "--port", "9003"]).port == 9003  # flag beats env


def test_vllm_flag_spellings(monkeypatch):
    s = load_settings(
        [
            "/m",
            "--max-model-len",
            "128",
            "--enforce-eager",
            "--dtype",
            "float32",
            "--served-model-name",
            "demo",
            "--tensor-parallel-size",
            "2",
        ]
    )
    assert (s.model, s.max_model_len, s.enforce_eager, s.dtype) == ("/m", 128, True, "float32")
    assert (s.served_model_name, s.tensor_parallel_size) == ("demo", 2)


def test_config_file_from_environment(toml, monkeypatch):
    monkeypatch.setenv("NANOSERVE_CONFIG_FILE", str(toml))
    assert Settings().max_num_seqs == 8


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--config", "/nonexistent/nope.toml"], "config file not found"),
        (["--max-logprobs", "50"], "max_logprobs"),
        (["--dtype", "float64"], "invalid choice"),
        (["--forwarded-allow-ips", "*"], "'*' is not an IP address or CIDR network"),
        (["--forwarded-allow-ips", "proxy.local"], "name the proxies exactly"),
    ],
)
def test_bad_settings_are_a_clear_error(flags, message):
    out = subprocess.run(
        [sys.executable, "-m", "nanoserve.server", *flags],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_the_settings_table_is_generated_from_descriptions():
    sys.path.insert(0, str(REPO / "scripts"))
    import settings_table

    doc = settings_table.DOC.read_text()
    assert settings_table.replaced(doc) == doc, (
        "docs/SETTINGS.md's table is stale: run .venv/bin/python scripts/settings_table.py --write"
    )
    assert settings_table.table() in doc


def test_api_keys_from_repeated_flag_and_comma_separated_env(monkeypatch):
    s = load_settings(["--api-key", "k1", "--api-key", "k2"])
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]
    monkeypatch.setenv("NANOSERVE_API_KEYS", "k3, k4")
    assert [k.get_secret_value() for k in Settings().api_keys] == ["k3", "k4"]
    assert "k3" not in repr(Settings())  # secrets stay out of reprs and logs


def test_trusted_proxies_are_addresses_or_networks_and_default_to_none(monkeypatch):
    assert Settings().forwarded_allow_ips == []
    monkeypatch.setenv("NANOSERVE_FORWARDED_ALLOW_IPS", "10.0.0.5, 172.30.87.0/24,::1")
    assert Settings().forwarded_allow_ips == ["10.0.0.5", "172.30.87.0/24", "::1"]
    flags = ["--forwarded-allow-ips", "127.0.0.1", "--forwarded-allow-ips", "10.1.0.0/16"]
    assert load_settings(flags).forwarded_allow_ips == ["127.0.0.1", "10.1.0.0/16"]
