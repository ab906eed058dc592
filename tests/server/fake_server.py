"""`python tests/server/fake_server.py [serve flags]`: the real app, HTTP stack, settings and
limiter, with the fake engine behind them — for multi-process tests of shared rate limits,
where the engine is beside the point and two real engines would cost minutes."""

import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from server.app import create_app
from server.cli import load_settings
from tests.server.fakes import FakeEngine


def main() -> None:
    settings = load_settings(sys.argv[1:])

    async def load():
        return FakeEngine()

    app = create_app(settings, load)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
