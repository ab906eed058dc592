"""`python tests/support/fake_server.py [--fake-delay S] [serve flags]`: the real runner, app,
HTTP stack, settings and limiter, with the fake engine behind them — for multi-process tests
(shared rate limits, draining) where the engine is beside the point and real engines would
cost minutes each."""

import importlib.util
import sys
from pathlib import Path

TREE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TREE))


def _bind_to_this_tree(name: str, folder: Path) -> None:
    # The editable install maps nanoserve.server and nanoserve.convert to the installed
    # checkout's folders. This script also runs from another tree (bench/frontend.py
    # --baseline DIR), whose code is what must be measured: bind the names to its folders.
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    setattr(importlib.import_module(parent), child, module)  # `nanoserve.server` by attribute too


_bind_to_this_tree("nanoserve.convert", TREE / "convert")
_bind_to_this_tree("nanoserve.server", TREE / "server")

from nanoserve.server.cli import load_settings, run  # noqa: E402
from nanoserve.server.observability import logs  # noqa: E402

from tests.support.fake_engine import FakeEngine  # noqa: E402


def main() -> int:
    args = sys.argv[1:]
    delay = 0.0
    if args[:1] == ["--fake-delay"]:
        delay, args = float(args[1]), args[2:]
    settings = load_settings(args)
    logs.configure(settings)

    async def load():
        return FakeEngine(delay=delay)

    return run(settings, load)


if __name__ == "__main__":
    sys.exit(main())
