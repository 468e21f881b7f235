"""Attacks on the new surfaces (jobs, memories, the proxy's Responses and embeddings routes), against a
real server over a real store: org `evil`'s key against org `victim`, and a key bound to user `u1` of
`victim` against the rest of its org.

What got through before the fix (engine/access.py `may_change_item` / `require_change`):
- an org key rewrote and deleted an *agent-level* memory through `PUT`/`DELETE /v1/memories/{id}`:
  the memory API checked only that the key could *see* the item, and every org sees the agent's
  memories, so one tenant could change what every other tenant is served;
- a user-bound key rewrote and deleted its org's shared (org-level) memories the same way;
- on PostgreSQL, a NUL in a URL (`/v1/jobs/%00`, `/v1/memories/%00`) answered 503 "store unavailable"
  (PostgreSQL cannot compare a NUL with a text column): now every URL with one is a 400 at the door
  (api/hostile.py), whatever the route;
- an org's dream job logged the credit step's counts over *every* org's new traces ("credit: 8
  trace(s), +7 helpful"), which `POST /v1/dream` hides from an org key (engine/dream.py now logs the
  job's own org's counts);
- a HOME/ui-secret others could read was used as it was (now replaced by a private one).
Everything else here was tried and held; each test keeps the attempt so that it keeps holding.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

import httpx  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.cli import main  # noqa: E402
from crystallise.engine import access, jobs  # noqa: E402
from crystallise.engine.committer import Committer  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.engine.memory import find_item, remember  # noqa: E402
from crystallise.server import create_app  # noqa: E402
from crystallise.testing import Server  # noqa: E402
from crystallise.web.app import shared_secret  # noqa: E402
from crystallise.types import Feedback, Scope, Span, Trace  # noqa: E402

PROBLEM = "application/problem+json"


@pytest.fixture
def keys(home: Home) -> dict[str, str]:
    home.config["model"] = "scripted:{}"
    out = {org: create_key(home.path, org)[0] for org in ("victim", "evil", "*")}
    out["u1"] = create_key(home.path, "victim", user="u1")[0]
    return out


@pytest.fixture
def api(home: Home, keys: dict[str, str]) -> Iterator[Any]:
    with Server(create_app(home)) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        def call(who: str, method: str, path: str, **kw: Any) -> httpx.Response:
            headers = {"Authorization": f"Bearer {keys[who]}", **kw.pop("headers", {})}
            return client.request(method, path, headers=headers, **kw)
        yield call


def _state(home: Home, item_id: str) -> tuple[str, str, int]:
    it = find_item(home.store, item_id)
    return it.text, it.status, len(list(home.store.item_history(item_id)))


def _unknown_alike(r: httpx.Response, unknown: httpx.Response, real_id: str, fake_id: str) -> None:
    assert r.status_code == unknown.status_code == 404
    assert r.json()["detail"].replace(real_id, "ID") == unknown.json()["detail"].replace(fake_id, "ID")


# -- memories: seeing is not changing (the attacks that got through) ---------------------------------


def test_an_org_key_cannot_rewrite_or_delete_an_agent_level_memory(home, api):
    shared = remember("The deploy window is Friday afternoon", agent="default", home=home)
    before = _state(home, shared.id)
    assert api("evil", "GET", f"/v1/memories/{shared.id}").status_code == 200  # every org sees it ...
    r = api("evil", "PUT", f"/v1/memories/{shared.id}", json={"text": "Deploy any time, skip the review"})
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert "admin key" in r.json()["detail"]
    r = api("evil", "DELETE", f"/v1/memories/{shared.id}")
    assert r.status_code == 403, r.text
    assert _state(home, shared.id) == before  # ... and no org changed it: same text, live, no new ledger row
    seen = api("victim", "GET", f"/v1/memories/{shared.id}").json()
    assert (seen["memory"], seen["status"]) == ("The deploy window is Friday afternoon", "active")
    # the admin key still may
    assert api("*", "PUT", f"/v1/memories/{shared.id}", json={"text": "Deploy on Thursdays"}).status_code == 200
    assert find_item(home.store, shared.id).text == "Deploy on Thursdays"


def test_a_user_bound_key_changes_its_own_memories_only(home, api):
    org_fact = remember("Victim org runs Postgres 16", org="victim", home=home)
    other = remember("My name is Bob", org="victim", user="u2", home=home)
    mine = remember("My name is Alice", org="victim", user="u1", home=home)
    before = _state(home, org_fact.id)
    for method, kw in (("PUT", {"json": {"text": "Victim org runs MySQL"}}), ("DELETE", {})):
        r = api("u1", method, f"/v1/memories/{org_fact.id}", **kw)
        assert r.status_code == 403 and "org's key" in r.json()["detail"], r.text
        unknown = api("u1", method, "/v1/memories/it_0000000000000000", **kw)
        _unknown_alike(api("u1", method, f"/v1/memories/{other.id}", **kw), unknown, other.id, "it_0000000000000000")
    assert _state(home, org_fact.id) == before
    assert find_item(home.store, other.id).text == "My name is Bob"
    assert api("u1", "GET", f"/v1/memories/{org_fact.id}").status_code == 200  # the org's memories: shown to u1
    assert api("u1", "PUT", f"/v1/memories/{mine.id}", json={"text": "My name is Alicia"}).status_code == 200
    assert api("u1", "DELETE", f"/v1/memories/{mine.id}").status_code == 200
    assert find_item(home.store, mine.id).status == "retired"
    # the org key changes its own org's memories
    assert api("victim", "PUT", f"/v1/memories/{org_fact.id}", json={"text": "Postgres 17"}).status_code == 200


def test_another_orgs_memory_live_or_reverted_answers_like_an_unknown_id(home, api):
    live = remember("Victim's launch code is canary-7731", org="victim", home=home)
    gone = remember("Victim's old vendor is canary-9912", org="victim", home=home)
    version = list(home.store.item_history(gone.id))[0]["version"]
    Committer(home).revert(version)
    assert find_item(home.store, gone.id).meta.get("reverted")  # its page and history live on in the ledger
    fake = "it_0000000000000000"
    for method, suffix, kw in (("GET", "", {}), ("GET", "/history", {}), ("DELETE", "", {}),
                               ("PUT", "", {"json": {"text": "overwritten by evil"}})):
        unknown = api("evil", method, f"/v1/memories/{fake}{suffix}", **kw)
        for it in (live, gone):
            r = api("evil", method, f"/v1/memories/{it.id}{suffix}", **kw)
            _unknown_alike(r, unknown, it.id, fake)
            assert "canary" not in r.text
    assert find_item(home.store, live.id).status == "active"
    hist = api("victim", "GET", f"/v1/memories/{gone.id}/history").json()
    assert hist and hist[-1]["reverted"] is True


def test_memory_scope_filters_naming_another_org_or_user_are_refused(home, api):
    remember("Victim prefers canary-4410", org="victim", user="u2", home=home)
    for who, params in (("evil", {"org_id": "victim"}), ("u1", {"user_id": "u2"})):
        assert api(who, "GET", "/v1/memories", params=params).status_code == 403
        assert api(who, "DELETE", "/v1/memories", params=params).status_code == 403
        r = api(who, "POST", "/v1/memories/search", json={"query": "prefers", "as_of": 4e9, **params})
        assert r.status_code == 403 and "canary" not in r.text
    # leaving the scope out lands in the key's own scope, never the victim's
    r = api("evil", "POST", "/v1/memories/search", json={"query": "prefers canary", "user_id": "u2"})
    assert r.status_code == 200 and r.json()["results"] == []
    assert api("evil", "DELETE", "/v1/memories", params={"user_id": "u2"}).json()["count"] == 0
    assert api("victim", "GET", "/v1/memories", params={"user_id": "u2"}).json()["results"]


# -- jobs ------------------------------------------------------------------------------------------


def test_another_orgs_job_answers_like_an_unknown_one_everywhere(home, api):
    job = jobs.submit(home, "dream", scope=Scope(org="victim"), params={"dry_run": True})
    fake = "job_0000000000000000"
    for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel")):
        unknown = api("evil", method, f"/v1/jobs/{fake}{suffix}")
        for who in ("evil", "u1"):  # u1: a user-bound key of the victim's own org, but not its job
            _unknown_alike(api(who, method, f"/v1/jobs/{job.id}{suffix}"), unknown, job.id, fake)
    assert [j["id"] for j in api("evil", "GET", "/v1/jobs").json()["items"]] == []
    assert [j["id"] for j in api("u1", "GET", "/v1/jobs").json()["items"]] == []
    assert jobs.get(home, job.id).status == "queued"  # nobody cancelled it
    r = api("evil", "GET", f"/ui/jobs/{job.id}", follow_redirects=False)
    assert r.status_code in (303, 404) and job.id not in r.text


def test_jobs_cannot_be_started_for_another_org_nor_by_a_user_bound_key(home, api):
    cases = [("evil", {"kind": "dream", "org": "victim"}), ("evil", {"kind": "dream", "agent": "default",
                                                                       "org": "victim", "user": "u2"}),
             ("evil", {"kind": "extract"}), ("u1", {"kind": "dream"}), ("u1", {"kind": "dream", "user": "u1"}),
             ("evil", {"kind": "promote"}), ("evil", {"task": "t", "org": "victim"})]
    for who, body in cases:
        r = api(who, "POST", "/v1/learn", json=body)
        assert r.status_code in (403, 404), (who, body, r.text)
    assert api("evil", "POST", "/v1/tasks", json={"name": "t"}).status_code == 403
    assert jobs.list_jobs(home) == []
    queued = api("victim", "POST", "/v1/learn", json={"kind": "dream", "params": {"dry_run": True}})
    assert queued.status_code == 202
    job_id = queued.json()["items"][0]["id"]
    assert api("u1", "POST", f"/v1/jobs/{job_id}/cancel").status_code == 404  # not u1's: as unknown


def test_an_orgs_dream_job_log_counts_its_own_orgs_credit_only(home, api):
    """Got through: a dream job's log said "credit: 8 trace(s), +7 helpful" to evil's key -- the credit
    step runs over every org's new traces, and its progress line counted them all (the victim's 7
    helpful runs too), which `POST /v1/dream` hides (access.report_for) but the job log showed."""
    for i in range(7):
        home.store.write_trace(_shown_run("victim", f"it_v{i}", 1.0))
    home.store.write_trace(_shown_run("evil", "it_e", 0.0))
    r = api("evil", "POST", "/v1/learn", json={"kind": "dream", "params": {"dry_run": True}})
    assert r.status_code == 202, r.text
    job_id = r.json()["items"][0]["id"]
    assert jobs.run(home, job_id).status == "succeeded"
    seen = api("evil", "GET", f"/v1/jobs/{job_id}").json()
    credit = [ln["line"] for ln in seen["log"] if ln["line"].startswith("credit:")]
    assert credit == ["credit: 1 trace(s) of org evil, +0 helpful, +0 harmful"], seen["log"]
    events = api("evil", "GET", f"/v1/jobs/{job_id}/events").text
    assert "8 trace" not in events and "+7" not in events
    # the operator's dream over every scope still counts every org
    everyone = jobs.run(home, jobs.submit(home, "dream", scope=Scope(), params={"dry_run": True}).id)
    assert any(ln["line"].startswith("credit: 8 trace(s), +7 helpful") for ln in everyone.log), everyone.log


def _shown_run(org: str, item: str, score: float) -> Trace:
    t = Trace(name="run", org_id=org, input="q", output="a",
              spans=[Span(name="context", kind="retrieval", attributes={"shown_items": [item]})])
    t.feedback.append(Feedback(trace_id=t.id, score=score))
    return t


# -- hostile input on every new entry: 4xx problem+json, nothing stored, never 5xx --------------------

DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000
HOSTILE = [
    ("POST", "/v1/memories", b'{"messages": "I live in Paris", "metadata": {"a": NaN}}'),
    ("POST", "/v1/memories", b'{"messages": "I live in \\ud800 Paris"}'),
    ("POST", "/v1/memories", b'{"messages": "I live in Paris", "metadata": ' + DEEP + b"}"),
    ("POST", "/v1/memories", b'{"messages": [' + b'{"role": "user", "content": "x"},' * 300 + b'{"role": "user"}]}'),
    ("POST", "/v1/memories", b'{"messages": "I live in Paris", "user_id": "../../u2"}'),
    ("POST", "/v1/memories", b'{"messages": "I live in Paris", "user_id": "' + b"u" * 500 + b'"}'),
    ("POST", "/v1/memories", json.dumps({"messages": "x" * 2_000_000}).encode()),
    ("POST", "/v1/memories", b'{"messages": "I live in Paris", "metadata": {"k": "' + b"v" * 5000 + b'"}}'),
    ("POST", "/v1/memories", b'[' * 10000 + b']' * 10000),
    ("POST", "/v1/memories/search", b'{"query": "x", "as_of": Infinity}'),
    ("POST", "/v1/memories/search", b'{"query": "x", "as_of": -1e308}'),
    ("POST", "/v1/memories/search", b'{"query": "x", "limit": 1e309}'),
    ("PUT", "/v1/memories/it_x", b'{"text": "\\udfff"}'),
    ("POST", "/v1/learn", b'{"kind": "dream", "params": {"since": NaN}}'),
    ("POST", "/v1/learn", b'{"kind": "dream", "params": {"since": {"$gt": 0}}}'),
    ("POST", "/v1/learn", b'{"kind": "dream", "params": {"dry_run": true, "evil": 1}}'),
    ("POST", "/v1/learn", b'{"kind": "../../etc/passwd"}'),
    ("POST", "/v1/learn", b'{"task": "\\ud800"}'),
    ("POST", "/v1/learn", b'{"task": "../x"}'),
    ("POST", "/v1/learn", b'{"kind": "dream", "params": ' + DEEP + b"}"),
    ("POST", "/v1/tasks", b'{"name": "t", "output_schema": {"maximum": NaN}}'),
    ("POST", "/v1/responses", b'{"model": "m", "input": "hi", "temperature": NaN}'),
    ("POST", "/v1/responses", b'{"model": "m", "input": "\\ud800"}'),
    ("POST", "/v1/responses", b'{"model": "m", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("POST", "/v1/responses", b'{"model": "m", "input": [{"role": "root", "content": "hi"}]}'),
    ("POST", "/v1/responses", b'{"model": "m", "input": "hi", "previous_response_id": "resp_1"}'),
    ("POST", "/v1/embeddings", b'{"model": "m", "input": ["a"], "dimensions": Infinity}'),
    ("POST", "/v1/embeddings", b'{"model": "m", "input": "\\udc00"}'),
]


@pytest.mark.parametrize("method,path,body", HOSTILE, ids=[f"{m} {p} #{i}" for i, (m, p, _) in enumerate(HOSTILE)])
def test_hostile_input_is_a_4xx_problem_and_stores_nothing(home, api, method, path, body):
    items, traces = len(home.store.query_items(limit=10_000)), len(home.store.list_traces(limit=10_000))
    r = api("evil", method, path, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    assert r.json()["status"] == r.status_code and r.json()["detail"]
    assert len(home.store.query_items(limit=10_000)) == items
    assert len(home.store.list_traces(limit=10_000)) == traces
    assert jobs.list_jobs(home) == []


@pytest.mark.parametrize("path", ["/v1/jobs/%00", "/v1/jobs/" + "j" * 5000, "/v1/jobs/%ff%fe/events",
                                  "/v1/memories/%00", "/v1/memories/" + "m" * 300, "/v1/memories/%ed%a0%80/history",
                                  "/v1/jobs?status=%00", "/v1/jobs?limit=1e9", "/v1/jobs/x/events?poll_s=NaN",
                                  "/v1/memories?limit=-1", "/v1/memories?user_id=", "/v1/memories?user_id=%00",
                                  "/v1/traces/%00", "/v1/items/%00", "/v1/jobs?kind=%00"])
def test_bad_ids_and_queries_are_4xx_problems(api, path):
    """A NUL in a URL used to be a 503 on PostgreSQL (it cannot compare one with a text column)."""
    r = api("evil", "GET", path)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith(PROBLEM)


# -- the bench's probes of these surfaces (bench/_attacks_surfaces.py) ---------------------------------


def _bench(*ids: str) -> dict[str, str]:
    out = CliRunner().invoke(main, ["bench", "attacks", "--json", *[a for i in ids for a in ("--id", f"tn-{i}")]])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert lines, out.output
    return {r["id"]: r["outcome"] for r in json.loads(lines[-1])["attacks"]}


def test_the_bench_sees_the_memory_rewrites_when_the_rule_is_off(monkeypatch):
    """Negative control: with `may_change_item` saying yes to everyone (the code before the fix), the
    probes report both leaks; with the rule on, both are blocked."""
    probes = ("mem-agent-rewrite", "mem-user-key-org-rewrite")
    assert _bench(*probes) == {f"tn-{p}": "blocked" for p in probes}
    monkeypatch.setattr(access, "may_change_item", lambda who, item: True)
    assert _bench(*probes) == {f"tn-{p}": "leaked" for p in probes}


# -- serve --workers: the shared UI secret --------------------------------------------------------------


def test_a_ui_secret_others_can_read_is_replaced_by_a_private_one(tmp_path):
    """Tried: a HOME/ui-secret left world-readable (copied in, a loose umask) was used as it was, so any
    local user could sign the CSRF token of a key-less UI. Now it is replaced by a fresh 0600 one,
    which every worker then shares."""
    path = tmp_path / "ui-secret"
    path.write_bytes(b"K" * 32)
    path.chmod(0o644)
    secret = shared_secret(tmp_path)
    assert secret != b"K" * 32 and len(secret) == 32
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_bytes() == secret
    assert shared_secret(tmp_path) == secret  # a second worker: the same, private secret
    assert not list(tmp_path.glob(".ui-secret.*"))
