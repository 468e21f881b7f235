"""Tasks and jobs over HTTP, on a real server (uvicorn on loopback) over a real SQLite home.

The headline: `serve` learns a task defined over the API from posted corrections with no manual
call -- the scheduler sees the verified outcomes, queues a learn job, a worker thread runs it, and
the org's crystallised program is committed. Around it, the attacks: another org's key cannot see
or cancel the job (its id answers like an unknown one), a user-bound key starts nothing, an org
key defines no shared task.
"""

from __future__ import annotations


import httpx
import pytest

from crystallise.api import create_app, create_key
from crystallise.engine import jobs
from crystallise.harness.runtime import close_sandboxes
from crystallise.testing import Server
from crystallise.types import Scope
from tests.helpers import ratio_records, wait_for


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


@pytest.fixture
def keyed(sqlite_home):
    home = sqlite_home
    home.config.update(model="scripted:0",  # an always-wrong "LLM": only crystallised code passes
                       learn={"task_outcomes": 24, "poll_s": 0.2, "dream_traces": 0, "extract": False})
    home.save_config()
    keys = {name: create_key(home.path, org, user=user)[0]
            for name, org, user in (("admin", "*", None), ("acme", "acme", None), ("evil", "evil", None),
                                    ("acme_u1", "acme", "u1"))}
    return home, keys


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _wait(fn, timeout: float = 120.0, every: float = 0.25):
    return wait_for("a job to reach the state asked for", fn, timeout, every)


def test_serve_learns_a_task_defined_over_the_api_from_posted_corrections(keyed):
    home, keys = keyed
    with Server(create_app(home, run_jobs=True, learn=True)) as api, httpx.Client(base_url=api.url) as c:
        r = c.post("/v1/tasks", json={"name": "ratio", "metric": "numeric"}, headers=_h(keys["acme"]))
        assert r.status_code == 403 and "admin key" in r.json()["detail"]
        r = c.post("/v1/tasks", json={"name": "ratio", "metric": "numeric", "instruction": "The ratio, 2 places."},
                   headers=_h(keys["admin"]))
        assert r.status_code == 201 and r.json()["created"] is True
        again = c.post("/v1/tasks", json={"name": "ratio", "metric": "numeric", "instruction": "The ratio, 2 places."},
                       headers=_h(keys["admin"]))
        assert again.status_code == 200 and again.json()["created"] is False
        bad = c.post("/v1/tasks", json={"name": "ratio", "metric": "fuzzy"}, headers=_h(keys["admin"]))
        assert bad.status_code == 400 and "unknown metric" in bad.json()["detail"]

        for rec in ratio_records(24):  # the agent answered wrongly; a person sent the correction
            r = c.post("/v1/traces", headers=_h(keys["acme"]), json={
                "name": "ratio", "input": rec["context"], "output": "0",
                "feedback": [{"score": 0.0, "correction": rec["target"]}]})
            assert r.status_code == 201, r.text

        def learned():
            items = c.get("/v1/jobs", params={"kind": "learn"}, headers=_h(keys["acme"])).json()["items"]
            return [j for j in items if j["status"] in ("succeeded", "failed")]

        (job,) = _wait(learned)
        assert job["status"] == "succeeded", job["error"]
        assert job["scope"]["org"] == "acme" and job["params"] == {"task": "ratio"} and job["result"]["versions"]
        assert home.repo.read("orgs/acme/tasks/ratio/code.py")  # the org's own program
        assert home.repo.read("tasks/ratio/code.py") is None  # never the shared one
        version = home.store.get_version(job["result"]["versions"][0])
        assert home.store.get_changeset(version.changeset_id).evidence["job"] == job["id"]

        # the job, as its org sees it, and its progress stream
        one = c.get(f"/v1/jobs/{job['id']}", headers=_h(keys["acme"])).json()
        assert one["progress"] == 1.0 and any("learn: crystallise" in e["line"] for e in one["log"])
        events = c.get(f"/v1/jobs/{job['id']}/events", headers=_h(keys["acme"])).text
        assert events.startswith("event: done\ndata: {") and f'"id": "{job["id"]}"' in events

        # another org: the job is unknown to it, in every route, with the same answer as an unknown id
        theirs = c.get(f"/v1/jobs/{job['id']}", headers=_h(keys["evil"]))
        unknown = c.get("/v1/jobs/job_0000000000000000", headers=_h(keys["evil"]))
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["detail"].replace(job["id"], "X") == unknown.json()["detail"].replace(
            "job_0000000000000000", "X")
        assert c.post(f"/v1/jobs/{job['id']}/cancel", headers=_h(keys["evil"])).status_code == 404
        assert c.get(f"/v1/jobs/{job['id']}/events", headers=_h(keys["evil"])).status_code == 404
        assert c.get("/v1/jobs", headers=_h(keys["evil"])).json()["items"] == []

        # evil cannot learn for acme, nor (it has no such task data) touch acme's scope
        r = c.post("/v1/learn", json={"task": "ratio", "org": "acme"}, headers=_h(keys["evil"]))
        assert r.status_code == 403
        # a user-bound key starts no learning
        r = c.post("/v1/learn", json={"task": "ratio"}, headers=_h(keys["acme_u1"]))
        assert r.status_code == 403 and "user-bound" in r.json()["detail"]
        # an org key cannot start agent-level (every org's) work
        r = c.post("/v1/learn", json={"kind": "extract"}, headers=_h(keys["acme"]))
        assert r.status_code == 403


def test_post_learn_queues_runs_and_cancels(keyed):
    home, keys = keyed
    with Server(create_app(home, run_jobs=True)) as api, httpx.Client(base_url=api.url) as c:
        c.post("/v1/tasks", json={"name": "ratio", "metric": "numeric"}, headers=_h(keys["admin"]))
        r = c.post("/v1/learn", json={"task": "ratio"}, headers=_h(keys["acme"]))
        assert r.status_code == 202
        (job,) = r.json()["items"]
        assert job["scope"]["org"] == "acme" and job["status"] in ("queued", "running", "succeeded")
        done = _wait(lambda: (j := c.get(f"/v1/jobs/{job['id']}", headers=_h(keys["acme"])).json())["status"]
                     in ("succeeded", "failed") and j)
        assert done["status"] == "succeeded" and done["result"]["summary"]
        for body, why in [({}, "name one task"), ({"task": "ratio", "all": True}, "name one task"),
                          ({"task": "nope"}, "no task 'nope'"), ({"kind": "dream", "task": "ratio"}, "are for learn"),
                          ({"kind": "bogus"}, "unknown job kind"), ({"task": "ratio", "params": {"x": 1}}, "unknown")]:
            r = c.post("/v1/learn", json=body, headers=_h(keys["acme"]))
            assert r.status_code in (400, 404, 422) and why in r.json()["detail"], (body, r.text)
        # a queued job of another scope (no worker takes "wait"-less kinds before we cancel: queue then cancel)
        queued = jobs.submit(home, "skills", scope=Scope(org="acme"))
        r = c.post(f"/v1/jobs/{queued.id}/cancel", headers=_h(keys["acme"]))
        assert r.status_code == 200 and r.json()["cancel_requested"]
        final = _wait(lambda: (j := jobs.get(home, queued.id)).done and j)
        assert final.status in ("cancelled", "succeeded")


def test_jobs_over_the_api_on_both_stores_keep_orgs_apart(home):
    """The same routes on SQLite and PostgreSQL (row-level security on: an org key's request runs as
    the `crystallise_org` role), no workers: what is queued stays queued."""
    keys = {name: create_key(home.path, org)[0] for name, org in (("admin", "*"), ("acme", "acme"),
                                                                    ("evil", "evil"))}
    with Server(create_app(home)) as api, httpx.Client(base_url=api.url) as c:
        assert c.post("/v1/tasks", json={"name": "ratio", "metric": "numeric"},
                      headers=_h(keys["admin"])).status_code == 201
        r = c.post("/v1/learn", json={"task": "ratio"}, headers=_h(keys["acme"]))
        assert r.status_code == 202, r.text
        (job,) = r.json()["items"]
        mine = c.get(f"/v1/jobs/{job['id']}", headers=_h(keys["acme"]))
        assert mine.status_code == 200 and mine.json()["status"] == "queued"
        assert c.get(f"/v1/jobs/{job['id']}", headers=_h(keys["evil"])).status_code == 404
        assert c.get("/v1/jobs", headers=_h(keys["evil"])).json()["items"] == []
        assert c.post(f"/v1/jobs/{job['id']}/cancel", headers=_h(keys["evil"])).status_code == 404
        assert [j["id"] for j in c.get("/v1/jobs", headers=_h(keys["admin"])).json()["items"]] == [job["id"]]
        r = c.post(f"/v1/jobs/{job['id']}/cancel", headers=_h(keys["acme"]))
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
