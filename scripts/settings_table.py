"""Print the settings table of docs/SETTINGS.md from the Settings field descriptions.

    .venv/bin/python scripts/settings_table.py          # print it
    .venv/bin/python scripts/settings_table.py --write  # replace it in docs/SETTINGS.md

tests/server/test_settings.py fails when docs/SETTINGS.md and this output differ.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoserve.server.cli import POSITIONAL, env_of, flag_of
from nanoserve.server.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "SETTINGS.md"
BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"


def _default(field) -> str:
    value = field.get_default(call_default_factory=True)  # `default` is unset with a factory
    if value is None or value == []:
        return "—"
    return f"`{str(value).replace(str(Path.home()), '~')}`"


def table() -> str:
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        flag = "MODEL (positional)" if name in POSITIONAL else flag_of(name)
        env = env_of(name)
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{flag}` | `{env}` | {_default(field)} | {desc} |")
    return "\n".join(rows)


def replaced(doc: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    return pattern.sub(f"{BEGIN}\n{table()}\n{END}", doc)


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC.write_text(replaced(DOC.read_text()))
    else:
        print(table())
