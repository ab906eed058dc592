"""The package's shape: one import root, every package installed, one module that imports vLLM."""

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"nanoserve": REPO / "nanoserve", "nanoserve.server": REPO / "server",
         "nanoserve.convert": REPO / "convert"}  # fmt: skip


def package_folders() -> set[str]:
    """Import names of every folder with an __init__.py under the three roots."""
    names = set()
    for root, folder in ROOTS.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            names.add(".".join((root, *rel)))
    return names


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def python_files(*folders: str) -> list[Path]:
    return [p for f in folders for p in (REPO / f).rglob("*.py") if ".venv" not in p.parts]


def test_every_package_folder_is_installed():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    assert listed == package_folders()


def test_nothing_imports_the_bare_folder_names():
    # server/ and convert/ install as nanoserve.server and nanoserve.convert: a bare
    # `import server` works only from the repo root, and loads a second copy of every module
    bare = {
        str(p.relative_to(REPO)): sorted(
            m for m in imported_modules(p) if m.split(".")[0] in ("server", "convert")
        )
        for p in python_files(
            "server",
            "convert",
            "nanoserve",
            "tests",
            "bench",
            "harness",
            "reliability",
            "scripts",
            "examples",
        )
    }
    assert {k: v for k, v in bare.items() if v} == {}


def test_one_module_imports_vllm():
    importers = {
        str(p.relative_to(REPO))
        for p in python_files("server", "convert", "nanoserve")
        if any(m.split(".")[0] == "vllm" for m in imported_modules(p))
    }
    assert importers == {"server/engine/vllm_adapter.py"}
