"""/docs and /redoc work offline: the pages name no URL outside the server, and every asset they load answers."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi", reason="the API needs the `serve` extra")

import httpx  # noqa: E402

from crystallise.api import create_app  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.testing import Server  # noqa: E402

_URL = re.compile(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]|(https?://[^\s'"<>)]+)|['"](//[^'"]+)['"]""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_nothing_from_outside(tmp_path, page):
    home = Home.init(tmp_path / "home")
    with Server(create_app(home, upstream="scripted")) as api:
        html = httpx.get(api.url + page, timeout=10)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        urls = [next(g for g in m.groups() if g) for m in _URL.finditer(html.text)]
        external = [u for u in urls if u.startswith(("http:", "https:", "//"))]
        assert external == [], f"{page} loads {external}: /docs would be blank offline"
        assets = [u for u in urls if u.startswith("/docs-assets/")]
        assert len(assets) >= (2 if page == "/docs" else 1) and "/openapi.json" in urls
        for url in assets + ["/openapi.json"]:
            r = httpx.get(api.url + url, timeout=10)
            assert r.status_code == 200 and len(r.content) > 100, url
    home.close()
