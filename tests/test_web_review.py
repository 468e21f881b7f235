"""The UI's review pages (`/ui/review`): proposals with diff, evidence and verdict; approve and
reject through CSRF-checked forms; the API's org rules (tests/test_api_review.py) hold here too."""

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
from tests.test_api_review import learned  # noqa: E402

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = Home.init(tmp_path_factory.mktemp("web-review") / "home")
    h.close()
    return h.path


@pytest.fixture
def env(tmp_path: Path, template: Path) -> Iterator[dict[str, Any]]:
    home = Home.open(shutil.copytree(template, tmp_path / "home"))
    home.config["review"] = [{"layer": "context"}]
    home.save_config()
    held = {name: learned(home, f"{name} rule: confirm the address first", org)[0]
            for name, org in (("acme", "acme"), ("globex", "globex"), ("shared", None))}
    keys = {org: create_key(home.path, org)[0] for org in ("acme", "globex")}
    with TestClient(create_app(home), follow_redirects=False) as c:
        r = c.post("/ui/login", content=f"key={keys['acme']}&next=/ui/", headers=FORM)
        assert r.status_code == 303
        yield {"home": home, "c": c, "held": held}
    home.close()


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]


def test_the_review_list_shows_the_orgs_proposals(env: dict[str, Any]) -> None:
    c, held = env["c"], env["held"]
    page = c.get("/ui/review")
    assert page.status_code == 200
    assert held["acme"].id in page.text and held["shared"].id in page.text and held["globex"].id not in page.text
    assert "review rule: layer context" in page.text
    assert c.get(f"/ui/review/{held['globex'].id}").status_code == 404


def test_a_proposal_shows_diff_evidence_and_verdict_and_is_approved(env: dict[str, Any]) -> None:
    c, held, home = env["c"], env["held"], env["home"]
    url = f"/ui/review/{held['acme'].id}"
    page = c.get(url).text
    assert "acme rule: confirm the address first" in page and 'id="diff"' in page
    assert "McNemar" in page and 'id="approve-button"' in page
    assert c.post(url + "/approve", content="by=alice", headers=FORM).status_code == 403  # no form token
    assert c.post(url + "/approve", content=f"csrf={csrf(page)}&by=", headers=FORM).status_code == 400
    assert home.store.get_changeset(held["acme"].id).status == "needs_review"
    r = c.post(url + "/approve", content=f"csrf={csrf(page)}&by=alice&note=looks+right", headers=FORM)
    assert r.status_code == 303
    number = int(r.headers["location"].rsplit("/", 1)[1])
    version = home.store.get_version(number)
    assert version.changeset_id == held["acme"].id and "approved by alice" in version.verdict["reason"]
    assert "acme rule: confirm the address first" in (home.repo.read("context/org/acme/playbook.md") or "")
    again = c.post(url + "/approve", content=f"csrf={csrf(page)}&by=alice", headers=FORM)
    assert again.status_code == 409 and "not waiting for review" in again.text


def test_reject_keeps_evidence_and_shared_proposals_need_the_admin(env: dict[str, Any]) -> None:
    c, held, home = env["c"], env["held"], env["home"]
    shared = c.get(f"/ui/review/{held['shared'].id}").text
    assert 'id="approve-button"' not in shared and 'id="cannot-decide"' in shared
    assert c.post(f"/ui/review/{held['shared'].id}/approve", content=f"csrf={csrf(shared)}&by=x",
                  headers=FORM).status_code == 403
    url = f"/ui/review/{held['acme'].id}"
    r = c.post(url + "/reject", content=f"csrf={csrf(shared)}&by=bob&note=too+strict", headers=FORM)
    assert r.status_code == 303 and r.headers["location"] == url
    page = c.get(url).text
    assert "rejected" in page and "reject by bob" in page and "too strict" in page
    assert home.store.get_changeset(held["acme"].id).status == "rejected"
    assert held["acme"].id not in c.get("/ui/review").text


def test_undo_a_trace_from_the_ui_with_a_preview(env: dict[str, Any]) -> None:
    from crystallise.types import Trace

    c, home = env["c"], env["home"]
    home.config["review"] = []
    home.save_config()
    ours = home.store.write_trace(Trace(name="answer", agent_id="support", org_id="acme"))
    _, item = learned(home, "acme: always offer a refund", "acme", provenance=[ours.id])
    shared_from = home.store.write_trace(Trace(name="answer", agent_id="support", org_id="acme"))
    _, shared = learned(home, "everyone: always offer a refund", None, provenance=[shared_from.id])
    theirs = home.store.write_trace(Trace(name="answer", agent_id="support", org_id="globex"))

    assert 'id="undo-link"' in c.get(f"/ui/traces/{ours.id}").text
    preview = c.get(f"/ui/traces/{ours.id}/undo").text
    assert item.id in preview and 'id="undo-button"' in preview
    assert home.store.get_item(item.id).status == "active"  # the preview is a dry run
    assert c.post(f"/ui/traces/{ours.id}/undo", content="reason=x", headers=FORM).status_code == 403  # no token
    r = c.post(f"/ui/traces/{ours.id}/undo", content=f"csrf={csrf(preview)}&reason=poisoned", headers=FORM)
    assert r.status_code == 303 and "/ui/versions/" in r.headers["location"]
    assert home.store.get_item(item.id).status == "retired"

    blocked = c.get(f"/ui/traces/{shared_from.id}/undo").text
    assert 'id="needs-admin"' in blocked and "shared by every org" in blocked and 'id="undo-button"' not in blocked
    refused = c.post(f"/ui/traces/{shared_from.id}/undo", content=f"csrf={csrf(preview)}", headers=FORM)
    assert refused.status_code == 403 and "admin key" in refused.text
    assert home.store.get_item(shared.id).status == "active"
    assert c.get(f"/ui/traces/{theirs.id}/undo").status_code == 404
