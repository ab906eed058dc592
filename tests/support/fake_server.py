"""`python tests/support/fake_server.py [--fake-delay S] [serve flags]`: the real runner, app,
HTTP stack, settings and limiter, with the fake engine behind them — for multi-process tests
(shared rate limits, draining) where the engine is beside the point and real engines would
cost minutes each."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nanoserve.server.cli import load_settings, run
from nanoserve.server.observability import logs

from tests.support.fake_engine import FakeEngine


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
