"""The web UI's jobs pages: an org sees its jobs and their log and result, never another org's;
cancel needs the form token."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi", reason="the web UI needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.engine import jobs  # noqa: E402
from crystallise.server import create_app  # noqa: E402
from crystallise.store import jobs as rows  # noqa: E402
from crystallise.types import Scope  # noqa: E402

FORM = {"content-type": "application/x-www-form-urlencoded"}


def _login(c: TestClient, key: str) -> None:
    r = c.post("/ui/login", content=f"key={key}&next=/ui/", headers=FORM)
    assert r.status_code == 303, r.text


def test_jobs_pages_show_an_orgs_jobs_only_and_cancel_needs_the_token(sqlite_home):
    home = sqlite_home
    keys = {org: create_key(home.path, org)[0] for org in ("acme", "evil")}
    done = jobs.submit(home, "skills", scope=Scope(org="acme"))
    rows.update(home.store, done.id, status="succeeded", progress=1.0, message="1 version(s) committed",
                result={"versions": [7], "not_accepted": [{"changeset": "cs_x", "learner": "skills",
                                                           "status": "rejected", "reason": "no gain <b>"}]},
                log=[{"at": 1.0, "line": "learn: <script>alert(1)</script>"}])
    queued = jobs.submit(home, "skills", scope=Scope(org="acme", agent="other"))
    theirs = jobs.submit(home, "skills", scope=Scope(org="evil"))
    with TestClient(create_app(home), follow_redirects=False) as c:
        _login(c, keys["acme"])
        listing = c.get("/ui/jobs").text
        assert done.id in listing and queued.id in listing and theirs.id not in listing
        assert 'http-equiv="refresh"' in listing  # a queued job: the page follows it
        page = c.get(f"/ui/jobs/{done.id}").text
        assert '/ui/versions/7' in page and "no gain &lt;b&gt;" in page
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
        assert c.get(f"/ui/jobs/{theirs.id}").status_code == 404
        assert c.get("/ui/jobs/job_unknown").status_code == 404
        assert c.post(f"/ui/jobs/{queued.id}/cancel", content="csrf=nope", headers=FORM).status_code == 403
        assert jobs.get(home, queued.id).status == "queued"
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', c.get(f"/ui/jobs/{queued.id}").text).group(1)
        assert c.post(f"/ui/jobs/{theirs.id}/cancel", content=f"csrf={token}", headers=FORM).status_code == 404
        r = c.post(f"/ui/jobs/{queued.id}/cancel", content=f"csrf={token}", headers=FORM)
        assert r.status_code == 303 and jobs.get(home, queued.id).status == "cancelled"
        assert jobs.get(home, theirs.id).status == "queued"
