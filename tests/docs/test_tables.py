"""The docs can't drift from the product: their flags, routes and list of blocks not run are
checked against the parsers, the app and the blocks' marks (tests/docs/test_blocks.py runs the
blocks).
The reference pages each own a part: docs/SETTINGS.md every `serve` flag, docs/CONVERT.md every
`convert` flag, docs/API.md the routes, docs/CONTRIBUTING.md the list of blocks not run."""

import re

import pytest
from fastapi.routing import APIRoute
from nanoserve.convert.cli import build_parser as convert_parser
from nanoserve.server.cli import build_parser as serve_parser

from tests.support import docs_blocks
from tests.support.docs_blocks import (
    BEGIN,
    DOCS,
    END,
    REPO,
    all_blocks,
    blocks,
    not_run_table,
    replaced,
)
from tests.support.fake_engine import fake_app
from tests.test_cli import bench_parser, long_options

# Flags the docs show for other programs: docker/podman, compose, pytest, ruff, this repo's
# scripts. A flag of nanoserve's that is misspelt in the docs is not on this list, so it fails.
OTHER_PROGRAMS = {
    "--shm-size", "--gpus", "--build-arg", "--rm", "--ipc", "--format", "--entrypoint",
    "--cpuset-cpus",
    "--profile", "--check", "--help", "--write", "--with-test-tools",
    "--ignore-eos",  # vllm bench serve's
    "--temperature", "--max-new-tokens",  # the demo's sample.py (its blocks run in test_docs)
    "--model", "--tasks",  # lm-eval's (README's Integrations)
    "--dist",  # pytest-xdist's (CONTRIBUTING's fast tier)
}  # fmt: skip
FASTAPI_OWN = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def doc_flags() -> dict[str, str]:
    """Every `--flag` the docs name (a `--jwt-*` wildcard stands for the --jwt- family)."""
    found = {}
    for path in DOCS:
        for m in re.finditer(r"(?<![\w!-])--[a-z][a-z0-9-]*[a-z0-9](?![\w*-])", path.read_text()):
            found.setdefault(m.group(0), path.name)
    return found


def test_every_flag_the_docs_name_exists():
    known = long_options(serve_parser()) | long_options(convert_parser())
    for module in ("bench.run", "bench.frontend", "bench.startup"):
        known |= long_options(bench_parser(module))
    known |= OTHER_PROGRAMS
    unknown = {flag: where for flag, where in doc_flags().items() if flag not in known}
    assert not unknown, f"the docs name flags no command has: {unknown}"


@pytest.mark.parametrize(
    ("parser", "page"), [(serve_parser, "SETTINGS.md"), (convert_parser, "CONVERT.md")]
)
def test_every_serve_and_convert_flag_is_on_its_page(parser, page):
    text = (REPO / "docs" / page).read_text()
    missing = {flag for flag in long_options(parser()) - {"--help"} if f"`{flag}" not in text}
    assert not missing, f"docs/{page} documents no {sorted(missing)}"


def _route(method: str, path: str) -> tuple[str, str]:
    return method, re.sub(r"\{[^}]*\}", "{}", path)  # /v1/models/{id} = /v1/models/{model_id}


def documented_routes() -> set[tuple[str, str]]:
    """The routes in the first column of docs/API.md's route table."""
    text = (REPO / "docs" / "API.md").read_text()
    table = text[text.index("| route | what | example |") :].split("\n\n")[0]
    routes = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        routes |= {_route(m, p) for m, p in re.findall(r"`(GET|POST) (/[^`]*)`", first_cell)}
    return routes


def test_the_api_table_lists_exactly_the_apps_routes():
    with fake_app(sagemaker=True) as client:  # every route that can exist
        app = client.app
        schema = {
            _route(method.upper(), path)
            for path, item in app.openapi()["paths"].items()
            for method in item
        }
    # routes kept out of the schema (the playground's HTML) count too; the page's own script,
    # style and icon are the page, not routes a client calls
    hidden = {
        _route(method, r.path)
        for r in app.routes
        if isinstance(r, APIRoute) and not r.include_in_schema
        for method in r.methods
        if not r.path.startswith("/playground/")
    }
    routes = {r for r in schema | hidden if r[1] not in FASTAPI_OWN}
    documented = documented_routes()
    assert documented, "docs/API.md's route table not found"
    assert routes - documented == set(), "routes missing from docs/API.md's table"
    assert documented - routes == set(), "docs/API.md's table lists routes the app does not have"


def test_every_block_is_run_or_says_why_not():
    for block in all_blocks():
        unknown = set(block.marks) - {"server", "uses", "not_run"}
        assert not unknown, f"{block.where}: unknown marks {unknown}"
        if "not_run" in block.marks:
            assert block.marks["not_run"].get("reason"), f"{block.where}: not_run needs a reason"
    text = docs_blocks.NOT_RUN_LIST.read_text()
    assert BEGIN in text and END in text
    assert replaced(text) == text, (
        f"{docs_blocks.NOT_RUN_LIST.relative_to(REPO)}'s list of blocks not run is stale: "
        "run .venv/bin/python tests/support/docs_blocks.py --write"
    )
    assert not_run_table() in text


def test_the_readme_test_command_is_what_ci_runs():
    [_, test_command, *_] = blocks(REPO / "README.md")
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert test_command.code.strip() == ci
    assert "not_run" in test_command.marks  # it would run the suite inside the suite
