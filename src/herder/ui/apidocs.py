"""``/docs`` (Swagger UI) and ``/redoc`` from files herder serves itself, not from a CDN.

FastAPI's own pages load their script and styles from jsDelivr and fonts from Google: on
a host without internet (most of a fleet) they are blank. The same pages are made here
with every asset under ``/docs/assets/``, taken from the ``fastapi-offline`` package (a
dependency for its files only: Swagger UI's and ReDoc's bundles, whose licences travel
with it). No font is loaded from anywhere.

The pages, their assets and ``/openapi.json`` are public at the front door: a browser
cannot send a token with a page load, and the API description is the same for every
installation (it is in herder's repository), so it tells nobody anything of this one.
Every call made from the pages still needs a token.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import Response

DOCS = "/docs"
REDOC = "/redoc"
ASSETS = "/docs/assets"
OPENAPI = "/openapi.json"
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# The pages' own init scripts are inline (FastAPI writes them), and ReDoc runs a worker
# from a blob: nothing from another origin, nothing framed.
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)


def public_paths() -> frozenset[str]:
    """What the front door lets in without a token."""
    return frozenset({DOCS, REDOC, OPENAPI, *(f"{ASSETS}/{name}" for name in ASSET_TYPES)})


def assets_dir() -> Path | None:
    """Where ``fastapi-offline`` keeps its files, found without importing it; None if absent."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "static"


def install(app: Any, title: str) -> None:
    """``/docs``, ``/redoc`` and their assets on ``app`` (a FastAPI app made with
    ``docs_url=None, redoc_url=None``), outside its OpenAPI document."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse

    folder = assets_dir()

    async def swagger(request: Request) -> Response:
        return _with_csp(
            get_swagger_ui_html(
                openapi_url=OPENAPI,
                title=f"{title}: API",
                swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS}/favicon.png",
            )
        )

    async def redoc(request: Request) -> Response:
        return _with_csp(
            get_redoc_html(
                openapi_url=OPENAPI,
                title=f"{title}: API",
                redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        kind = ASSET_TYPES.get(name)
        if kind is None or folder is None or not (folder / name).is_file():
            message = f"no such file of the API pages: {name!r}"
            if folder is None:
                message += " (the fastapi-offline package is not installed)"
            return JSONResponse({"error": "not_found", "message": message, "field": "path"}, status_code=404)
        return FileResponse(
            folder / name,
            media_type=kind,
            headers={"cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"},
        )

    app.router.add_route(DOCS, swagger, methods=["GET"], include_in_schema=False)
    app.router.add_route(REDOC, redoc, methods=["GET"], include_in_schema=False)
    app.router.add_route(f"{ASSETS}/{{name}}", asset, methods=["GET"], include_in_schema=False)


def _with_csp(page: Response) -> Response:
    """``page`` (an HTML response) under the API pages' own CSP."""
    page.headers["content-security-policy"] = PAGE_CSP
    return page
