"""Tenancy probes of the newer surfaces (jobs, the memory API, the Responses and embeddings routes), part
of the `tenancy-access` family (`bench/_attacks_access.py` runs them with its `Probe`).

Org `evil`'s key and `v1`'s user-bound key (org `victim`) against the victim's memories and jobs. Found
by these probes and fixed (engine/access.py `may_change_item`): an org key rewrote and retired
agent-level memories every org is served, and a user-bound key its org's shared memories; an org's
dream job logged the credit counts of every org's runs (engine/dream.py); a NUL in a URL answered 503
on PostgreSQL (api/hostile.py refuses it at the door).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import httpx

from crystallise.engine import jobs
from crystallise.engine.memory import find_item, remember
from crystallise.errors import NotFoundError
from crystallise.types import Feedback, Scope, Span, Trace

__all__ = ["SURFACE_PROBES"]

VICTIM = "victim"
JSON = {"content-type": "application/json"}
UNKNOWN_ITEM, UNKNOWN_JOB = "it_0000000000000000", "job_0000000000000000"


def _shape(r: httpx.Response) -> tuple[int, str, tuple[str, ...]]:
    try:
        keys = tuple(sorted(r.json()))
    except ValueError:
        keys = ()
    return r.status_code, r.headers.get("content-type", ""), keys


def _alike(p: Any, theirs: httpx.Response, unknown: httpx.Response, what: str) -> None:
    if _shape(theirs) != _shape(unknown):
        p.leaks.append(f"{what}: the victim's id answers {_shape(theirs)}, an unknown one {_shape(unknown)}")


def _state(p: Any, item_id: str) -> tuple[str, str] | None:
    try:
        it = find_item(p.lab.home.store, item_id)
    except NotFoundError:
        return None
    return it.text, it.status


def _unchanged(p: Any, item_id: str, before: tuple[str, str] | None, who: str) -> None:
    if _state(p, item_id) != before:
        p.leaks.append(f"{who}'s key changed memory {item_id}: {before} -> {_state(p, item_id)}")


def _writes(p: Any, who: str, item_id: str) -> list[httpx.Response]:
    return [p.call(who, "PUT", f"/v1/memories/{item_id}", json={"text": f"rewritten by {who}"}),
            p.call(who, "DELETE", f"/v1/memories/{item_id}")]


def mem_agent_rewrite(p: Any) -> None:
    """An org key rewrites and retires an agent-level memory (every org is served it)."""
    it = remember(f"The deploy window is Friday {secrets.token_hex(3)}", agent="ct", home=p.lab.home)
    before = _state(p, it.id)
    for r in _writes(p, "evil", it.id):
        if r.status_code < 400:
            p.leaks.append(f"evil's key {r.request.method} an agent-level memory: {r.status_code}")
    _unchanged(p, it.id, before, "evil")


def mem_user_key_org_rewrite(p: Any) -> None:
    """A user-bound key (v1) rewrites and retires its org's shared memory."""
    it = remember(f"Victim runs Postgres {secrets.token_hex(3)}", agent="ct", org=VICTIM, home=p.lab.home)
    before = _state(p, it.id)
    for r in _writes(p, "v1", it.id):
        if r.status_code < 400:
            p.leaks.append(f"v1's user-bound key {r.request.method} an org-level memory: {r.status_code}")
    _unchanged(p, it.id, before, "v1")


def mem_other_org_id(p: Any) -> None:
    """The victim's memory ids (live and history) vs an unknown id, read and written by evil."""
    it = remember(f"Victim's vendor is {p.canary}", agent="ct", org=VICTIM, home=p.lab.home)
    before = _state(p, it.id)
    for method, suffix, kw in (("GET", "", {}), ("GET", "/history", {}), ("DELETE", "", {}),
                               ("PUT", "", {"json": {"text": "evil"}})):
        theirs = p.call("evil", method, f"/v1/memories/{it.id}{suffix}", **kw)
        _alike(p, theirs, p.call("evil", method, f"/v1/memories/{UNKNOWN_ITEM}{suffix}", **kw),
               f"{method} /v1/memories/ID{suffix}")
    _unchanged(p, it.id, before, "evil")


def mem_other_user_id(p: Any) -> None:
    """v1's user-bound key on v2's memory vs an unknown id."""
    it = remember(f"My PIN is {p.canary}", agent="ct", org=VICTIM, user="v2", home=p.lab.home)
    before = _state(p, it.id)
    for method, suffix, kw in (("GET", "", {}), ("GET", "/history", {}), ("DELETE", "", {}),
                               ("PUT", "", {"json": {"text": "v1 was here"}})):
        theirs = p.call("v1", method, f"/v1/memories/{it.id}{suffix}", **kw)
        if p.canary in theirs.text:
            p.leaks.append(f"{method} /v1/memories/ID{suffix} showed v1 v2's memory")
        _alike(p, theirs, p.call("v1", method, f"/v1/memories/{UNKNOWN_ITEM}{suffix}", **kw),
               f"v1 {method} /v1/memories/ID{suffix}")
    _unchanged(p, it.id, before, "v1")


def mem_scope_filters(p: Any) -> None:
    """List, search (as_of too) and delete_all naming the victim's org, or v2 for v1's key."""
    remember(f"Victim prefers {p.canary}", agent="ct", org=VICTIM, user="v2", home=p.lab.home)
    for who, params in (("evil", {"org_id": VICTIM, "agent_id": "ct"}), ("v1", {"user_id": "v2", "agent_id": "ct"})):
        for r in (p.call(who, "GET", "/v1/memories", params=params),
                  p.call(who, "POST", "/v1/memories/search", json={"query": "prefers", "as_of": 4e9, **params}),
                  p.call(who, "DELETE", "/v1/memories", params=params)):
            if r.status_code < 400 or p.canary in r.text:
                p.leaks.append(f"{who}: {r.request.method} {r.request.url.path} with {params} -> {r.status_code}")


def jobs_other_org(p: Any) -> None:
    """The victim's job id: GET, SSE events, cancel, /ui/jobs, by evil and by v1 (not its job)."""
    job = jobs.submit(p.lab.home, "dream", scope=Scope(agent="ct", org=VICTIM), params={"dry_run": True})
    for who in ("evil", "v1"):
        for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel")):
            _alike(p, p.call(who, method, f"/v1/jobs/{job.id}{suffix}"),
                   p.call(who, method, f"/v1/jobs/{UNKNOWN_JOB}{suffix}"), f"{who} {method} /v1/jobs/ID{suffix}")
        listed = p.call(who, "GET", "/v1/jobs", params={"limit": 500})
        if job.id in listed.text:
            p.leaks.append(f"GET /v1/jobs listed the victim's job to {who}")
    if job.id in p.call("evil", "GET", f"/ui/jobs/{job.id}", follow_redirects=False).text:
        p.leaks.append("/ui/jobs/ID showed evil the victim's job")
    after = jobs.get(p.lab.home, job.id)
    if after.status == "cancelled" or after.cancel_requested:
        p.leaks.append("the victim's job was cancelled by another key")
    jobs.cancel(p.lab.home, job.id)  # leave the bench's queue as it was


def jobs_start_for_victim(p: Any) -> None:
    """evil queues learning in the victim's org; v1's user-bound key queues any."""
    before = len(jobs.list_jobs(p.lab.home, limit=1000))
    for who, body in (("evil", {"kind": "dream", "agent": "ct", "org": VICTIM}),
                      ("evil", {"kind": "dream", "agent": "ct", "org": VICTIM, "user": "v2"}),
                      ("evil", {"kind": "extract"}), ("v1", {"kind": "dream", "agent": "ct"}),
                      ("v1", {"kind": "dream", "agent": "ct", "user": "v1"})):
        r = p.call(who, "POST", "/v1/learn", json=body)
        if r.status_code < 400:
            p.leaks.append(f"{who} queued {body}: {r.status_code}")
    if p.call("evil", "POST", "/v1/tasks", json={"name": f"t{secrets.token_hex(3)}"}).status_code < 400:
        p.leaks.append("evil's org key defined a task every org shares")
    if len(jobs.list_jobs(p.lab.home, limit=1000)) != before:
        p.leaks.append("a refused request queued a job")


def jobs_dream_credit_log(p: Any) -> None:
    """evil's dream job: does its log (GET /v1/jobs/{id}, SSE) count the victim's runs?"""
    home = p.lab.home
    for i in range(3):
        t = Trace(name="run", agent_id="ct", org_id=VICTIM, input="q", output="a",
                  spans=[Span(name="context", kind="retrieval", attributes={"shown_items": [f"it_v{i}"]})])
        t.feedback.append(Feedback(trace_id=t.id, score=1.0))
        home.store.write_trace(t)
    r = p.call("evil", "POST", "/v1/learn", json={"kind": "dream", "agent": "ct", "params": {"dry_run": True}})
    if r.status_code != 202:
        p.statuses.append(f"not run: evil's dream was refused ({r.status_code})")
        return
    job_id = r.json()["items"][0]["id"]
    jobs.run(home, job_id)
    shown = p.call("evil", "GET", f"/v1/jobs/{job_id}").json()
    evil_runs = len(home.store.list_traces(org="evil", limit=100_000))
    for line in (ln["line"] for ln in shown.get("log", []) if ln["line"].startswith("credit:")):
        counted = int(line.split()[1]) if line.split()[1:2] and line.split()[1].isdigit() else -1
        if "of org evil" not in line or not 0 <= counted <= evil_runs:
            p.leaks.append(f"evil's dream job log counts other orgs' runs (evil has {evil_runs}): {line!r}")


def _counts(p: Any) -> tuple[int, int, int]:
    store = p.lab.home.store
    return (len(store.query_items(limit=100_000)), store.count_traces(),
            len(jobs.list_jobs(p.lab.home, limit=1000)))


def _bad(p: Any, method: str, path: str, body: bytes | None = None) -> None:
    """A hostile request to a new surface: 4xx problem+json, nothing stored (items, traces, jobs)."""
    before = _counts(p)
    r = p.call("evil", method, path, content=body, headers=JSON if body is not None else None)
    if r.status_code < 400:
        p.leaks.append(f"{method} {path[:40]}: a bad input was accepted ({r.status_code})")
    elif not r.headers.get("content-type", "").startswith("application/problem+json"):
        p.leaks.append(f"{method} {path[:40]}: refused without problem+json ({r.headers.get('content-type')})")
    if _counts(p) != before:
        p.stored_bad += 1
        p.leaks.append(f"{method} {path[:40]}: the bad input was stored ({before} -> {_counts(p)})")


_DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000
SURFACE_PROBES: dict[str, tuple[str, Callable[[Any], None]]] = {
    "mem-agent-rewrite": ("PUT/DELETE /v1/memories/{id} of an agent-level memory with an org key",
                          mem_agent_rewrite),
    "mem-user-key-org-rewrite": ("PUT/DELETE of the org's memory with a user-bound key", mem_user_key_org_rewrite),
    "mem-other-org-id": ("the victim's memory id (GET, history, PUT, DELETE) vs an unknown id", mem_other_org_id),
    "mem-other-user-id": ("another user's memory id with a user-bound key vs an unknown id", mem_other_user_id),
    "mem-scope-filters": ("list / search (as_of) / delete_all naming the victim's org or another user",
                          mem_scope_filters),
    "jobs-other-org": ("the victim's job id: GET, SSE, cancel, /ui/jobs, list", jobs_other_org),
    "jobs-dream-credit-log": ("evil's dream job: its log counting the victim's runs (credit step)",
                              jobs_dream_credit_log),
    "jobs-start-for-victim": ("POST /v1/learn for the victim's org, by a user-bound key; POST /v1/tasks",
                              jobs_start_for_victim),
    "bad-nul-url": ("a NUL in a URL (/v1/jobs/%00, /v1/memories/%00, ?user_id=%00)",
                    lambda p: [_bad(p, "GET", u) for u in ("/v1/jobs/%00", "/v1/memories/%00",
                                                           "/v1/memories?user_id=%00")]),
    "bad-memories-nan": ("POST /v1/memories with NaN metadata",
                         lambda p: _bad(p, "POST", "/v1/memories", b'{"messages": "I live in Paris", '
                                                                   b'"metadata": {"a": NaN}}')),
    "bad-memories-deep": ("POST /v1/memories with metadata nested 5000 deep",
                          lambda p: _bad(p, "POST", "/v1/memories", b'{"messages": "x", "metadata": ' + _DEEP + b"}")),
    "bad-memories-surrogate": ("PUT /v1/memories/{id} with a lone surrogate",
                               lambda p: _bad(p, "PUT", f"/v1/memories/{UNKNOWN_ITEM}", b'{"text": "\\udfff"}')),
    "bad-learn-params": ("POST /v1/learn with NaN, an object and an unknown parameter",
                         lambda p: [_bad(p, "POST", "/v1/learn", b) for b in (
                             b'{"kind": "dream", "params": {"since": NaN}}',
                             b'{"kind": "dream", "params": {"since": {"$gt": 0}}}',
                             b'{"kind": "dream", "params": {"dry_run": true, "evil": 1}}')]),
    "bad-responses": ("POST /v1/responses: a lone surrogate, Infinity, a made-up role",
                      lambda p: [_bad(p, "POST", "/v1/responses", b) for b in (
                          b'{"model": "m", "input": "\\ud800"}', b'{"model": "m", "input": "x", "top_p": Infinity}',
                          json.dumps({"model": "m", "input": [{"role": "root", "content": "x"}]}).encode())]),
    "bad-embeddings": ("POST /v1/embeddings with Infinity and a lone surrogate",
                       lambda p: [_bad(p, "POST", "/v1/embeddings", b) for b in (
                           b'{"model": "m", "input": ["a"], "dimensions": Infinity}',
                           b'{"model": "m", "input": "\\udc00"}')]),
}
