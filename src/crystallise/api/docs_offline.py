"""`/docs` (Swagger UI) and `/redoc` that work offline: their scripts and styles are served from here.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without internet (or
behind a proxy that blocks it) `/docs` is a blank page. The assets ship in the `fastapi-offline`
wheel (part of the `serve` extra) and are served under `/docs-assets/`:

    GET /docs                            Swagger UI page -> /docs-assets/swagger-ui-bundle.js, swagger-ui.css
    GET /redoc                           ReDoc page      -> /docs-assets/redoc.standalone.js (no Google Fonts)
    GET /docs/oauth2-redirect            Swagger UI's OAuth2 helper page

No page references a URL outside this server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

try:
    import fastapi_offline
except ImportError as exc:  # pragma: no cover - depends on the extras installed
    raise ImportError(f"offline /docs need the serve extra: pip install 'crystallise[serve]' ({exc})") from exc

__all__ = ["ASSETS_PREFIX", "install_docs"]

ASSETS_PREFIX = "/docs-assets"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def install_docs(app: FastAPI, *, title: str, openapi_url: str = "/openapi.json") -> None:
    """Serve `/docs`, `/redoc` and their assets on `app` (create it with docs_url=None, redoc_url=None)."""
    app.mount(ASSETS_PREFIX, StaticFiles(directory=_ASSETS), name="docs-assets")
    favicon = f"{ASSETS_PREFIX}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - API docs",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_js_url=f"{ASSETS_PREFIX}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_PREFIX}/swagger-ui.css", swagger_favicon_url=favicon)

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{title} - API reference",
                              redoc_js_url=f"{ASSETS_PREFIX}/redoc.standalone.js", redoc_favicon_url=favicon,
                              with_google_fonts=False)
