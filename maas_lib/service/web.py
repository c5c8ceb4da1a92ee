"""The web page the API serves at `/`: three static files and the headers that confine them.

The page is plain JavaScript calling the JSON API with `fetch`. It signs in with an API
token (or JWT) kept in `sessionStorage` and sent only as `Authorization: Bearer`, never in
a URL or a cookie, so a forged cross-site request carries no credential (no CSRF surface)
and the server sets no cookie at all. Every value from the API is inserted as text
(`textContent`, `createElement`), never as markup.

The headers make that hold even if a line of the page were wrong: the Content-Security-
Policy allows only this origin's script and style (no inline script or style, no `eval`),
no images, no plugins, no form submission to anywhere, no framing; Trusted Types refuse
every string assignment to `innerHTML` and the like outright. Nothing is cached.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response

#: Only this origin's own script, style and API; no inline code, images, objects, base
#: URL changes, form targets or framing; strings never become markup (Trusted Types).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'none'",
        "font-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)

#: Sent with the page and its script and style sheet.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

#: URL path -> (file in maas_lib/service/web/, media type).
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/web/app.css": ("app.css", "text/css; charset=utf-8"),
}


@cache
def _asset(name: str) -> bytes:
    return files("maas_lib.service").joinpath("web", name).read_bytes()


def _route(name: str, media_type: str):
    def serve() -> Response:
        return Response(_asset(name), media_type=media_type, headers=SECURITY_HEADERS)

    return serve


router = APIRouter(include_in_schema=False)
for _path, (_name, _type) in PAGES.items():
    router.add_api_route(_path, _route(_name, _type), methods=["GET", "HEAD"])


def mount(app: FastAPI) -> None:
    """Serve the web page from `app` at `/` (its script and style under `/web/`)."""
    app.include_router(router)
