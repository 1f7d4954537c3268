"""The page at /: chat with the served model and a camera mode, from files shipped in the package.

Everything the page needs is served from smolcli/serve/static/ (no CDN, nothing built at install
time), under a Content-Security-Policy that lets it reach only this server. The page itself is
public; the API it calls asks for the key, which the page then asks the user for.
"""

from __future__ import annotations

from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
# only this server, and the frames and files the page makes itself (data: and blob: URLs)
POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' data: blob: mediastream:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def asset(name: str) -> bytes:
    return resources.files("smolcli.serve").joinpath("static", name).read_bytes()


def ui_routes() -> list[Route]:
    async def page(request: Request) -> Response:
        return _served("index.html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise HTTPException(404, "no such file")
        return _served(name)

    return [Route("/", page, methods=["GET"]), Route("/ui/{name}", static, methods=["GET"])]


def _served(name: str) -> Response:
    headers = {"Content-Security-Policy": POLICY, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response(asset(name), media_type=ASSETS[name], headers=headers)
