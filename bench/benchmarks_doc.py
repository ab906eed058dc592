"""docs/BENCHMARKS.md's result tables are the report generator's output, so they show valid runs
only.

    .venv/bin/python -m bench.benchmarks_doc [--check]

Each block between `<!-- bench-results: RESULTS_JSON MODEL -->` and `<!-- bench-results end -->`
in docs/BENCHMARKS.md is re-rendered from that results.json (bench/report.py: valid cells only,
ratios only from valid pairs, a count of what was left out). `--check` fails if a block differs
from what the generator makes of its file (tests/bench/test_smoke.py runs it).
"""

import argparse
import json
import re
import sys
from pathlib import Path

from bench import report, validity

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BENCHMARKS.md"
BLOCK = re.compile(
    r"(<!-- bench-results: (\S+) (\S+) -->\n)(.*?)(<!-- bench-results end -->)", re.S
)


def render(results: Path, model: str) -> str:
    """The tables of `model` in `results` (a path from the repository's root)."""
    info = report.analyze(json.loads((ROOT / results).read_text()))
    runs = [r for r in info["runs"] if r["model"] == model]
    (case,) = [c for c in info["cases"] if c["model"] == model]
    lines = report.case_md(info, case, heading="####")[2:]  # the page has its own heading
    left_out = len(runs) - len(validity.valid(runs))
    lines += [
        "",
        f"{len(runs) - left_out} of {len(runs)} records valid (no failed request, 1-minute load "
        f"average ≤ {info['max_load']:g} before the server started); the {left_out} others are "
        f"left out, with their reasons in `{Path(results).with_suffix('.md')}`.",
    ]
    return "\n".join(lines) + "\n"


def refresh(text: str) -> str:
    """`text` with every bench-results block re-rendered."""
    return BLOCK.sub(lambda m: m[1] + render(Path(m[2]), m[3]) + m[5], text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        "python -m bench.benchmarks_doc", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--check", action="store_true", help=f"fail if {DOC.name} is not up to date")
    args = ap.parse_args(argv)
    text = DOC.read_text()
    new = refresh(text)
    if args.check:
        if new != text:
            print(
                f"{DOC.name}'s benchmark tables are stale: run python -m bench.benchmarks_doc",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
