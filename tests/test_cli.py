"""The command lines as a new user meets them: every entry point's --help, and one-line refusals.

argparse %-formats help strings, so one "90%" in a setting's description crashed
`nanoserve serve --help`; these run each entry point for real, in a subprocess.
"""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from nanoserve.convert.cli import build_parser as convert_parser
from nanoserve.server.cli import GROUPS, flag_of
from nanoserve.server.settings import Settings

from harness.processes import free_port
from nanoserve import __version__
from tests.support.checkpoints import char_checkpoint_dir, run_cli

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
NANOSERVE = str(Path(sys.executable).parent / "nanoserve")


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def bench_parser(module: str = "bench.run") -> argparse.ArgumentParser:
    return importlib.import_module(module).build_parser()


def test_nanoserve_help_describes_each_command_in_a_line():
    out = run(NANOSERVE, "--help")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for command in ("convert", "serve"):
        line = next(ln for ln in lines if ln.strip().startswith(command + " "))
        assert len(line.split()) > 4, line  # the command and what it does


def test_every_setting_is_in_exactly_one_help_section():
    placed = [name for names in GROUPS.values() for name in names]
    assert sorted(placed) == sorted(Settings.model_fields), "a setting is missing or doubled"


def test_serve_help_is_grouped_with_defaults_variables_and_examples():
    out = run(NANOSERVE, "serve", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps lines at any space
    assert out.stdout.startswith("usage: nanoserve serve [MODEL] [options]\n")
    for title in ("model:", "security:", "observability:", "deployment:", "examples:"):
        assert f"\n{title}\n" in out.stdout, title
    assert "[default: 127.0.0.1; NANOSERVE_HOST]" in text
    assert "[default: 8000; NANOSERVE_PORT]" in text
    assert "[default: off; NANOSERVE_NO_AUTH]" in text
    assert "nanoserve serve --no-auth" in out.stdout.split("examples:")[1]


@pytest.mark.parametrize("argv", [("--version",), ("serve", "--version")], ids=["top", "serve"])
def test_version(argv):
    out = run(NANOSERVE, *argv)
    assert (out.returncode, out.stdout) == (0, f"nanoserve {__version__}\n"), out.stderr


@pytest.mark.parametrize(
    "argv",
    [(NANOSERVE, "serve", "--help"), (PY, "-m", "nanoserve.server", "--help")],
    ids=["nanoserve", "m"],
)
def test_serve_help_lists_every_setting(argv):
    out = run(*argv)
    assert out.returncode == 0, out.stderr
    for name in Settings.model_fields:
        assert flag_of(name) in out.stdout, name


@pytest.mark.parametrize(
    "argv",
    [(NANOSERVE, "convert", "--help"), (PY, "-m", "nanoserve.convert", "--help")],
    ids=["nanoserve", "m"],
)
def test_convert_help_lists_every_option(argv):
    out = run(*argv)
    assert out.returncode == 0, out.stderr
    expected = long_options(convert_parser())
    assert expected >= {"--out", "--meta", "--tokenizer", "--dtype"}
    for flag in expected:
        assert flag in out.stdout, flag


def test_bench_help_lists_every_option():
    out = run(PY, "-m", "bench.run", "--help")
    assert out.returncode == 0, out.stderr
    expected = long_options(bench_parser())
    assert "--smoke" in expected
    for flag in expected:
        assert flag in out.stdout, flag


@pytest.mark.slow
def test_unsupported_head_size_is_refused_in_one_line(tmp_path, capsys):
    # vLLM's CPU attention has no kernel for head size 16: its engine core would die with a
    # stack trace after a 30 s start. The server asks vLLM which sizes it supports, up front.
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt", n_embd=48, n_head=3)
    assert run_cli([ckpt, "--out", tmp_path / "hf", "--no-verify"], capsys)[0] == 0
    out = run(
        PY, "-m", "nanoserve.server", str(tmp_path / "hf"), "--no-auth", "--port", str(free_port()),
        "--log-format", "text",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "head size 16" in out.stderr and "supported: 32" in out.stderr
    assert "Traceback" not in out.stderr


def test_watch_refuses_a_converted_directory_in_one_line(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    assert run_cli([ckpt, "--out", tmp_path / "hf", "--no-verify"], capsys)[0] == 0
    out = run(PY, "-m", "nanoserve.server", str(tmp_path / "hf"), "--watch", "--no-auth",
              "--log-format", "text")  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--watch follows a nanoGPT checkpoint" in out.stderr
    assert "serve the checkpoint itself" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
