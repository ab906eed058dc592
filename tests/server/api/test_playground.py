"""GET /playground over the fake engine: the page is open, its API calls are not, its headers
lock it to this origin, and it ships inside the package. The page working in a real browser on
the real engine is tests/e2e/test_playground.py."""

import json
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import httpx
import pytest
from nanoserve.server.api import playground
from nanoserve.server.settings import Settings

from tests.support.fake_engine import fake_app
from tests.support.servers import REPO

KEY = {"Authorization": "Bearer sk-t"}
STATIC = resources.files("nanoserve.server.api") / "static"


def directives(csp: str) -> dict[str, str]:
    return dict(d.strip().split(" ", 1) for d in csp.split(";"))


class Page(HTMLParser):
    """What a browser would load or run from the page: its URLs and anything inline."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.inline += [f"{tag} {k}=" for k in a if k == "style" or k.startswith("on")]
        self.inline += [f"{tag} javascript: URL" for v in a.values() if "javascript:" in (v or "")]
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script" and "src" not in a:
            self._script = True
        self.urls += [a[k] for k in ("src", "href") if k in a and tag in ("script", "link")]

    def handle_data(self, data):
        if self._script and data.strip():
            self.inline.append("<script> body")

    def handle_endtag(self, tag):
        self._script = self._script and tag != "script"


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_page_is_open_and_locked_to_this_origin():
    with fake_app(api_keys=["sk-t"]) as c:
        r = c.get("/playground")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert directives(r.headers["content-security-policy"]) == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self'",
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    assert "<title>nanoserve playground</title>" in r.text


def test_every_file_the_page_loads_is_served_and_nothing_more_is_open():
    html = (STATIC / "playground.html").read_text()
    named = set(parse(html).urls)
    # the page's own path plus what it names: exactly the open set
    assert named | {playground.PAGE} == playground.PLAYGROUND_PATHS
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    with fake_app(api_keys=["sk-t"]) as c:
        for url in named:
            r = c.get(url)
            assert r.status_code == 200, (url, r.text)
            assert r.headers["content-type"].startswith(types[Path(url).suffix]), url
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.content == (STATIC / Path(url).name).read_bytes()
        assert c.get("/playground/app.js").status_code == 401  # only those exact paths
        assert c.get("/playground/").status_code == 401


def test_page_has_nothing_inline_that_its_csp_would_block():
    assert parse((STATIC / "playground.html").read_text()).inline == []
    script = (STATIC / "playground.js").read_text()
    # model output is text: it goes into the page with textContent/append, never parsed as HTML
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function",
                   "document.write", "setAttribute(\"style\""):  # fmt: skip
        assert banned not in script, banned


def test_the_api_the_page_calls_still_needs_the_key():
    with fake_app(api_keys=["sk-t"]) as c:
        assert c.get("/playground").status_code == 200
        for method, path, body in [
            ("GET", "/v1/models", None),
            ("POST", "/tokenize", {"prompt": "abc"}),
            ("POST", "/v1/completions", {"model": "fake", "prompt": "abc", "max_tokens": 2}),
        ]:
            r = c.request(method, path, json=body)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert c.request(method, path, json=body, headers=KEY).status_code == 200, path


def test_no_playground_turns_the_page_off():
    with fake_app(api_keys=["sk-t"], no_playground=True) as c:
        assert c.get("/playground").status_code == 401  # no longer an open path
        assert c.get("/playground", headers=KEY).status_code == 404
        assert c.get("/playground/playground.js", headers=KEY).status_code == 404


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/playground"),
        ("0.0.0.0", "http://127.0.0.1:8000/playground"),
        ("::1", "http://[::1]:8000/playground"),
        ("localhost", "http://localhost:8000/playground"),
    ],
)
def test_url_is_one_a_browser_here_can_open(host, url):
    assert playground.url(Settings(host=host, port=8000)) == url
    assert playground.url(Settings(host=host, no_playground=True)) is None


def _ready_line(server) -> dict:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return next(line for line in lines if line["message"].startswith("ready:"))


def test_ready_line_names_the_playground_url(fake_server):
    server = fake_server("--no-auth", "--log-format", "json")
    ready = _ready_line(server)
    assert ready["playground"] == f"{server.url}/playground"
    assert ready["message"].endswith(f"; playground: {server.url}/playground")
    assert httpx.get(ready["playground"]).status_code == 200
    off = fake_server("--no-auth", "--log-format", "json", "--no-playground")
    assert "playground" not in _ready_line(off)["message"]


def test_a_wheel_ships_the_page(tmp_path):
    """A non-editable install has the files: they are package data (pyproject.toml)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in ("nanoserve", "server", "convert"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*cmd, "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("nanoserve-*.whl")
    with zipfile.ZipFile(wheel) as z:
        for name in ("playground.html", "playground.js", "playground.css", "icon.svg"):
            assert z.read(f"nanoserve/server/api/static/{name}") == (STATIC / name).read_bytes(), (
                name
            )
        # one import root: no bare `server` or `convert` package lands in site-packages
        assert {n.split("/")[0] for n in z.namelist() if not n.startswith("nanoserve-")} == {
            "nanoserve"
        }
