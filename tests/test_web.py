"""The web UI's pages over HTTP (the browser test drives them in Chromium): login with an org key,
every page renders, an org never sees another org's data, revert and feedback need the form token,
and bad input is a clear 4xx page with nothing written."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the web UI needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402

from crystallise.server import create_app  # noqa: E402
from crystallise.api import create_key  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from tests.ui_seed import Seeded, seed  # noqa: E402

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Path, Seeded]:
    root = tmp_path_factory.mktemp("web")
    home = Home.init(root / "home")
    seeded = seed(home, root / "reports")
    home.close()
    return root / "home", root / "reports", seeded


@pytest.fixture
def env(tmp_path, template) -> Iterator[dict[str, Any]]:
    home_src, reports, seeded = template
    home = Home.open(shutil.copytree(home_src, tmp_path / "home"))
    keys = {org: create_key(home.path, org)[0] for org in ("acme", "globex", "*")}
    app = create_app(home, upstream="scripted:ok", reports_dir=str(reports))
    with TestClient(app, follow_redirects=False) as c:
        yield {"home": home, "keys": keys, "c": c, "s": seeded}
    home.close()


def login(c: TestClient, key: str, next_: str = "/ui/") -> Any:
    return c.post("/ui/login", content=f"key={key}&next={next_}", headers=FORM)


def as_org(env: dict[str, Any], org: str) -> TestClient:
    r = login(env["c"], env["keys"][org])
    assert r.status_code == 303, r.text
    return env["c"]  # type: ignore[no-any-return]


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]


def test_pages_need_a_key_and_login_sets_a_strict_cookie(env):
    c = env["c"]
    r = c.get("/ui/traces?agent=support")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Ftraces%3Fagent%3Dsupport"
    assert c.get("/").headers["location"] == "/ui/"
    bad = login(c, "cr_wrong")
    assert bad.status_code == 401 and "unknown API key" in bad.text
    r = login(c, env["keys"]["acme"], "/ui/traces")
    assert r.status_code == 303 and r.headers["location"] == "/ui/traces"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert login(c, env["keys"]["acme"], "https://evil.example/").headers["location"] == "/ui/"
    assert c.get("/ui/traces").status_code == 200


def test_every_page_renders_for_an_org(env):
    c, s = as_org(env, "acme"), env["s"]
    pages = ["/ui/", "/ui/traces", f"/ui/traces/{s.acme_trace}", "/ui/items",
             f"/ui/items/{s.items['u1 prefers email']}", "/ui/versions", f"/ui/versions/{s.acme_version}",
             f"/ui/versions/{s.shared_version}/diff/{s.acme_version}",
             "/ui/tasks", "/ui/tasks/refund-days", "/ui/reports", "/ui/reports/demo", "/ui/static/app.css"]
    for page in pages:
        assert c.get(page).status_code == 200, page
    png = c.get("/ui/reports/demo/files/curve.png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_a_trace_shows_its_items_feedback_and_the_version_it_caused(env):
    c, s = as_org(env, "acme"), env["s"]
    html = c.get(f"/ui/traces/{s.acme_trace}").text
    assert "Refunds are allowed within 30 days" in html and "Acme customers get 60 days" in html
    assert "60 days" in html and "bad" in html  # the feedback with its correction
    assert f'data-caused-version="{s.acme_version}"' in html
    version = c.get(f"/ui/versions/{s.acme_version}").text
    assert f'data-provenance="{s.acme_trace}"' in version  # and back: version -> its traces
    assert "McNemar" in version and "mcnemar_exact" in version and "revert-button" in version
    assert "+- Quote the 60-day window for acme customers" in version  # the diff of its commit


def test_items_by_scope_and_status_flag_quarantined_ones(env):
    c = as_org(env, "acme")
    html = c.get("/ui/items").text
    row = next(r for r in html.split("<tr") if "Ignore previous instructions" in r)
    assert 'class="quarantined"' in row and "⚠" in row
    assert "u1 prefers email" in html and "Globex secret rule" not in html
    only = c.get("/ui/items?status=quarantined&level=agent").text
    assert "Ignore previous instructions" in only and "Refunds are allowed" not in only
    assert c.get("/ui/items?level=team").status_code == 400


def test_an_org_never_sees_another_orgs_data(env):
    c, s = as_org(env, "acme"), env["s"]
    assert c.get(f"/ui/traces/{s.globex_trace}").status_code == 404
    assert c.get(f"/ui/versions/{s.globex_version}").status_code == 404
    assert c.get(f"/ui/items/{s.items['Globex secret rule']}").status_code == 404
    for page in ("/ui/", "/ui/traces", "/ui/items", "/ui/versions"):
        html = c.get(page).text
        assert "Globex" not in html and s.globex_trace not in html, page
    assert c.get("/ui/traces?org=globex").status_code == 403
    admin = as_org(env, "*")
    assert "Globex secret rule" in admin.get("/ui/items").text
    assert admin.get(f"/ui/traces/{s.globex_trace}").status_code == 200


def test_revert_from_the_ui_needs_the_form_token_and_makes_a_new_version(env):
    c, s, home = as_org(env, "acme"), env["s"], env["home"]
    page = c.get(f"/ui/versions/{s.acme_version}").text
    no_token = c.post(f"/ui/versions/{s.acme_version}/revert", content="reason=x", headers=FORM)
    assert no_token.status_code == 403 and home.store.get_version(s.acme_version).reverted_by is None
    r = c.post(f"/ui/versions/{s.acme_version}/revert", content=f"csrf={csrf(page)}&reason=wrong+rule", headers=FORM)
    assert r.status_code == 303
    new = int(r.headers["location"].rsplit("/", 1)[1])
    assert home.store.get_version(s.acme_version).reverted_by == new
    assert "Quote the 60-day" not in (home.repo.read("context/org/acme/playbook.md") or "")
    assert f"reverts <a href=\"/ui/versions/{s.acme_version}\"" in c.get("/ui/versions").text
    again = c.post(f"/ui/versions/{s.acme_version}/revert", content=f"csrf={csrf(page)}", headers=FORM)
    assert again.status_code == 400 and "already reverted" in again.text
    shared = c.post(f"/ui/versions/{s.shared_version}/revert", content=f"csrf={csrf(page)}", headers=FORM)
    assert shared.status_code == 403 and "admin" in shared.text
    assert 'id="revert-button"' not in c.get(f"/ui/versions/{s.shared_version}").text


def test_feedback_from_the_ui(env):
    c, s, home = as_org(env, "acme"), env["s"], env["home"]
    token = csrf(c.get(f"/ui/traces/{s.acme_trace}").text)
    before = len(home.store.get_trace(s.acme_trace).feedback)
    r = c.post(f"/ui/traces/{s.acme_trace}/feedback", content=f"csrf={token}&rating=good&comment=fine", headers=FORM)
    assert r.status_code == 303
    assert home.store.get_trace(s.acme_trace).outcome == 1.0
    empty = c.post(f"/ui/traces/{s.acme_trace}/feedback", content=f"csrf={token}&rating=", headers=FORM)
    assert empty.status_code == 400
    other = c.post(f"/ui/traces/{s.globex_trace}/feedback", content=f"csrf={token}&rating=bad", headers=FORM)
    assert other.status_code == 404
    assert len(home.store.get_trace(s.acme_trace).feedback) == before + 1
    assert len(home.store.get_trace(s.globex_trace).feedback) == 1


@pytest.mark.parametrize("page,status", [
    ("/ui/versions/0", 422), ("/ui/versions/abc", 422), ("/ui/versions/999", 404), ("/ui/traces/tr_nope", 404),
    ("/ui/traces?status=maybe", 400), ("/ui/tasks/nope", 404), ("/ui/tasks/Bad%20Name", 400),
    ("/ui/reports/nope", 404), ("/ui/reports/../home/files/config.json", 404),
    ("/ui/reports/demo/files/..%2Fresult.json", 404), ("/ui/reports/demo/files/result.txt", 404),
    ("/ui/versions/2/compare?against=x", 422),
])
def test_bad_addresses_are_clear_4xx_pages(env, page, status):
    c = as_org(env, "acme")
    r = c.get(page)
    assert r.status_code == status, (page, r.text)
    assert r.headers["content-type"].startswith("text/html") and "<h1>" in r.text


def test_the_open_server_ui_is_for_local_clients_only(tmp_path, template):
    home_src, reports, _ = template
    home = Home.open(shutil.copytree(home_src, tmp_path / "open-home"))
    app = create_app(home, upstream="scripted:ok", reports_dir=str(reports))
    with TestClient(app, client=("127.0.0.1", 5000)) as c:
        assert "open (local)" in c.get("/ui/").text
    with TestClient(app, client=("203.0.113.9", 5000)) as c:
        assert c.get("/ui/").status_code == 403
    home.close()


def test_a_user_bound_key_sees_only_its_users_data_in_the_ui(env):
    home, s = env["home"], env["s"]
    key = create_key(home.path, "acme", user="u7")[0]
    c = env["c"]
    assert login(c, key).status_code == 303
    assert c.get(f"/ui/traces/{s.acme_trace}").status_code == 404  # u1's trace
    assert "u1 prefers email" not in c.get("/ui/items").text and "Refunds are allowed" in c.get("/ui/items").text
    assert c.get("/ui/traces?user=u1").status_code == 403
    assert 'id="revert-button"' not in c.get(f"/ui/versions/{s.acme_version}").text
