"""GET /playground: a static page that streams completions and chat replies in the browser.

The page holds no secrets and grants nothing: it is HTML, a script and a style sheet, served
without credentials so a browser can load it, and every call it makes goes to the public API
with the key the user typed (or none, with --no-auth) through the same guard as any client. A
strict Content-Security-Policy confines it to this origin: no inline script, nothing loaded or
sent anywhere else, no framing.
"""

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response
from nanoserve.server.settings import Settings

PAGE = "/playground"
# path -> (file in server/api/static/, media type). These exact paths are open; nothing else is.
ASSETS = {
    PAGE: ("playground.html", "text/html; charset=utf-8"),
    "/playground/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "/playground/playground.css": ("playground.css", "text/css; charset=utf-8"),
    # the page names its icon: without one the browser asks for /favicon.ico, which the guard
    # answers 401 and counts as a failed authentication against the user's address
    "/playground/icon.svg": ("icon.svg", "image/svg+xml"),
}
PLAYGROUND_PATHS = frozenset(ASSETS)

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",  # fetch() reaches this server's API and nothing else
        "base-uri 'none'",
        "form-action 'none'",  # the key form never submits: no key in a URL, ever
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cache-Control": "no-cache",  # revalidate: an upgraded server serves its own page
}


@cache
def _read(name: str) -> bytes:
    # importlib.resources: the files ship inside the package (pyproject's package data), so a
    # wheel install has them too; read on first request, not at import
    return (resources.files("nanoserve.server.api") / "static" / name).read_bytes()


def _route(name: str, media_type: str):
    async def asset() -> Response:
        return Response(_read(name), media_type=media_type, headers=HEADERS)

    return asset


def router() -> APIRouter:
    """The page and its three files, one route each (not in the OpenAPI schema: not API)."""
    r = APIRouter()
    for path, (name, media_type) in ASSETS.items():
        r.add_api_route(path, _route(name, media_type), methods=["GET"], include_in_schema=False)
    return r


def url(settings: Settings) -> str | None:
    """Where a browser on this machine finds the page, for the ready log line (None if off)."""
    if settings.no_playground:
        return None
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # every address: this machine's loopback is one of them
        host = "127.0.0.1"
    if ":" in host:  # an IPv6 literal goes in brackets
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{PAGE}"
