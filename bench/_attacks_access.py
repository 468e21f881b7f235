"""The tenancy family of `crystallise bench attacks` (issue 15): org `evil`'s key against org `victim`'s
data, over REST, the web UI, MCP, the proxy (plain and SSE), OTLP and ids, plus hostile input and change
sets that name themselves a person.

    tenancy_attack(lab, atk)   -> {"outcome": "blocked" | "leaked", "why", "requests", "server_errors",
                                   "stored_bad"}

A probe *leaks* when the attacker learns or changes something of the victim's: a response holds the
victim's canary, an id of the victim's answers differently from an unknown one (an existence oracle), the
victim's retry-safe write is lost to a squatted id, a change set calling itself a person commits, a bad
input is stored, or any request answers 5xx. Every request's status is recorded.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from crystallise.engine.committer import Committer
from crystallise.errors import CrystalliseError
from crystallise.governance import Actor
from crystallise.types import ChangeSet, Delta, Scope, Span, Trace, Verdict

from ._attacks_surfaces import SURFACE_PROBES

__all__ = ["PROBES", "tenancy_attack"]

VICTIM, EVIL = "victim", "evil"
JSON = {"content-type": "application/json"}


class Probe:
    """One probe's requests; `leaks` collects what gave the victim away (or broke)."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.canary = lab.world["canary"]
        self.client = httpx.Client(base_url=lab.url, timeout=60)
        self.statuses: list[str] = []
        self.leaks: list[str] = []
        self.server_errors = 0
        self.stored_bad = 0

    def call(self, who: str, method: str, path: str, *, look: bool = True, headers: Any = None,
             **kw: Any) -> httpx.Response:
        hdrs = {"Authorization": f"Bearer {self.lab.keys[who]}", **(headers or {})}
        r = self.client.request(method, path, headers=hdrs, **kw)
        self.statuses.append(f"{who} {method} {path.split('?')[0][:60]} -> {r.status_code}")
        if r.status_code >= 500:
            self.server_errors += 1
            self.leaks.append(f"{method} {path} answered {r.status_code}")
        if look and who == "evil" and self.canary in r.text:
            self.leaks.append(f"{method} {path} returned the victim's secret")
        return r

    def result(self) -> dict[str, Any]:
        self.client.close()
        base = {"requests": self.statuses[:14], "server_errors": self.server_errors, "stored_bad": self.stored_bad}
        if self.leaks:
            return {"outcome": "leaked", "why": "; ".join(self.leaks[:3]), **base}
        refused = [s for s in self.statuses if not s.endswith(("-> 200", "-> 201"))]
        return {"outcome": "blocked", "why": f"held: {', '.join(refused[:4]) or 'answered without the victim'}",
                **base}


def _tag() -> str:
    return secrets.token_hex(4)


def _victim_run(p: Probe, tid: str, span: str | None = None, fb: str | None = None) -> None:
    body: dict[str, Any] = {"name": "chat", "id": tid, "input": f"vault {p.canary}", "output": "ok"}
    if span:
        body["spans"] = [{"name": "step", "id": span}]
    if fb:
        body["feedback"] = [{"score": 1, "id": fb}]
    r = p.call("victim", "POST", "/v1/traces", json=body)
    if r.status_code != 201:
        p.leaks.append(f"the victim could not record its run {tid} ({r.status_code})")


def _same_answer(p: Probe, a: httpx.Response, b: httpx.Response, what: str) -> None:
    """An id of the victim's and an unknown id must answer alike: status, content type, body keys."""
    def shape(r: httpx.Response) -> tuple[int, str, tuple[str, ...]]:
        try:
            keys = tuple(sorted(r.json()))
        except ValueError:
            keys = ()
        return r.status_code, r.headers.get("content-type", ""), keys
    if shape(a) != shape(b):
        p.leaks.append(f"{what}: the victim's id answers {shape(a)}, an unknown one {shape(b)} (existence oracle)")


# -- ids ---------------------------------------------------------------------------------------------------


def ids_trace_post(p: Probe) -> None:
    tid = f"vic-{_tag()}"
    _victim_run(p, tid)
    theirs = p.call("evil", "POST", "/v1/traces", json={"name": "x", "id": tid})
    nobody = p.call("evil", "POST", "/v1/traces", json={"name": "x", "id": f"new-{_tag()}"})
    _same_answer(p, theirs, nobody, "POST /v1/traces with the victim's trace id")


def ids_span(p: Probe) -> None:
    sid = f"sp-{_tag()}"
    _victim_run(p, f"vic-{_tag()}", span=sid)
    theirs = p.call("evil", "POST", "/v1/traces", json={"name": "x", "spans": [{"name": "s", "id": sid}]})
    nobody = p.call("evil", "POST", "/v1/traces", json={"name": "x", "spans": [{"name": "s", "id": f"n{_tag()}"}]})
    _same_answer(p, theirs, nobody, "a span id of the victim's")


def ids_feedback_in_trace(p: Probe) -> None:
    fid = f"fb-{_tag()}"
    _victim_run(p, f"vic-{_tag()}", fb=fid)
    theirs = p.call("evil", "POST", "/v1/traces", json={"name": "x", "feedback": [{"score": 1, "id": fid}]})
    nobody = p.call("evil", "POST", "/v1/traces", json={"name": "x", "feedback": [{"score": 1, "id": f"n{_tag()}"}]})
    _same_answer(p, theirs, nobody, "a feedback id of the victim's (in a trace)")


def ids_feedback_post(p: Probe) -> None:
    fid = f"fb-{_tag()}"
    _victim_run(p, f"vic-{_tag()}", fb=fid)
    own = f"evil-{_tag()}"
    p.call("evil", "POST", "/v1/traces", json={"name": "x", "id": own})
    theirs = p.call("evil", "POST", f"/v1/traces/{own}/feedback", json={"score": 0, "id": fid})
    nobody = p.call("evil", "POST", f"/v1/traces/{own}/feedback", json={"score": 0, "id": f"n{_tag()}"})
    _same_answer(p, theirs, nobody, "POST feedback with the victim's feedback id")


def ids_get(p: Probe) -> None:
    tid = f"vic-{_tag()}"
    _victim_run(p, tid)
    _same_answer(p, p.call("evil", "GET", f"/v1/traces/{tid}"), p.call("evil", "GET", f"/v1/traces/n{_tag()}"),
                 "GET a trace by id")


def ids_feedback_foreign_trace(p: Probe) -> None:
    tid = f"vic-{_tag()}"
    _victim_run(p, tid)
    theirs = p.call("evil", "POST", f"/v1/traces/{tid}/feedback", json={"score": 0, "correction": "pwned"})
    nobody = p.call("evil", "POST", f"/v1/traces/n{_tag()}/feedback", json={"score": 0, "correction": "pwned"})
    _same_answer(p, theirs, nobody, "feedback on the victim's trace")


def ids_squat(p: Probe) -> None:
    tid = f"next-{_tag()}"  # an id the victim is about to use (a client-side sequence, say)
    p.call("evil", "POST", "/v1/traces", json={"name": "x", "id": tid, "output": "squatted"})
    _victim_run(p, tid)
    got = p.call("victim", "GET", f"/v1/traces/{tid}")
    if got.status_code != 200 or got.json().get("output") != "ok":
        p.leaks.append("the victim's run was lost to a squatted id")
    if p.call("victim", "POST", "/v1/traces", json={"name": "chat", "id": tid}).status_code != 409:
        p.leaks.append("the victim's retry was not idempotent")


def ids_undo(p: Probe) -> None:
    tid = f"vic-{_tag()}"
    _victim_run(p, tid)
    theirs = p.call("evil", "POST", "/v1/undo", json={"traces": [tid], "dry_run": True})
    nobody = p.call("evil", "POST", "/v1/undo", json={"traces": [f"n{_tag()}"], "dry_run": True})
    _same_answer(p, theirs, nobody, "undo of the victim's trace")


def ids_legacy(p: Probe) -> None:
    """A trace the SDK wrote before ids were per org (stored unqualified)."""
    tid = p.lab.world["org_trace"]
    _same_answer(p, p.call("evil", "GET", f"/v1/traces/{tid}"), p.call("evil", "GET", f"/v1/traces/n{_tag()}"),
                 "GET an id of the victim's written before the fix")
    theirs = p.call("evil", "POST", "/v1/traces", json={"name": "x", "id": tid})
    nobody = p.call("evil", "POST", "/v1/traces", json={"name": "x", "id": f"n{_tag()}"})
    _same_answer(p, theirs, nobody, "POST with an id of the victim's written before the fix")


def _otlp_doc(th: str, text: str, extra: list[dict[str, Any]] | None = None) -> bytes:
    now = time.time_ns()
    attrs = [{"key": "crystallise.input", "value": {"stringValue": text}}, *(extra or [])]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": th, "spanId": secrets.token_hex(8), "name": "chat", "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 1000), "attributes": attrs}]}]}]}).encode()


def ids_otlp_squat(p: Probe) -> None:
    th = secrets.token_hex(16)
    p.call("evil", "POST", "/otlp/v1/traces", content=_otlp_doc(th, "squat"), headers=JSON)
    r = p.call("victim", "POST", "/otlp/v1/traces", content=_otlp_doc(th, f"vault {p.canary}"), headers=JSON)
    if r.status_code != 200 or r.json().get("partialSuccess"):
        p.leaks.append(f"the victim's OTLP export was rejected after evil used its trace id: {r.text[:200]}")
    got = p.call("victim", "GET", f"/v1/traces/otel_{th}")
    if got.status_code != 200 or p.canary not in got.text:
        p.leaks.append("the victim's OTLP trace is not where its own key finds it")


def ids_otlp_oracle(p: Probe) -> None:
    th = secrets.token_hex(16)
    p.call("victim", "POST", "/otlp/v1/traces", content=_otlp_doc(th, f"vault {p.canary}"), headers=JSON)
    _same_answer(p, p.call("evil", "GET", f"/v1/traces/otel_{th}"), p.call("evil", "GET", "/v1/traces/otel_x"),
                 "GET the victim's OTLP trace id")
    theirs = p.call("evil", "POST", "/otlp/v1/traces", content=_otlp_doc(th, "probe"), headers=JSON)
    nobody = p.call("evil", "POST", "/otlp/v1/traces", content=_otlp_doc(secrets.token_hex(16), "probe"),
                    headers=JSON)
    if theirs.status_code != nobody.status_code or theirs.json() != nobody.json():
        p.leaks.append(f"OTLP with the victim's trace id answers {theirs.text[:120]}, a new one {nobody.text[:120]}")


def ids_mcp_feedback(p: Probe) -> None:
    try:
        from mcp import Client

        from crystallise.mcp import Binding, create_mcp_server
    except ImportError as e:
        p.statuses.append(f"not run: {e} (the `mcp` extra)")
        return
    tid = f"vic-{_tag()}"
    _victim_run(p, tid)
    texts: list[str] = []

    async def call(trace_id: str) -> None:
        async with Client(create_mcp_server(p.lab.home, binding=Binding(agent="ct", org=EVIL))) as c:
            try:
                result = await c.call_tool("feedback", {"score": 0.0, "correction": "pwned", "trace_id": trace_id})
                texts.append(str(getattr(result, "content", result)).replace(trace_id, "ID"))
            except Exception as e:  # noqa: BLE001 - the SDK raises a tool error: its text is what is compared
                texts.append(str(e).replace(trace_id, "ID"))

    asyncio.run(call(p.lab.home.store.list_traces(org=VICTIM, limit=100_000)[-1].id))
    asyncio.run(call(f"n{_tag()}"))
    p.statuses.append("mcp feedback x2")
    if len(texts) == 2 and texts[0] != texts[1]:
        p.leaks.append(f"MCP feedback: the victim's trace answers {texts[0][:120]!r}, "
                       f"an unknown one {texts[1][:120]!r}")
    if any(f.correction == "pwned" for t in p.lab.home.store.list_traces(org=VICTIM, limit=100_000,
                                                                            with_children=True) for f in t.feedback):
        p.leaks.append("MCP feedback landed on the victim's trace")


# -- tasks, UI, dream, diff ---------------------------------------------------------------------------------


def _victim_task(p: Probe) -> str:
    """A task whose victim-org namespace holds the canary (its learned code, examples and eval cases)."""
    name = f"vt-{_tag()}"
    home = p.lab.home
    spec = json.dumps({"name": name, "description": "ratio", "grade": "G1"})
    files = {f"tasks/{name}/spec.json": spec,
             f"orgs/{VICTIM}/tasks/{name}/spec.json": '{"grade": "G4"}',
             f"orgs/{VICTIM}/tasks/{name}/code.py": f"def solve(x):\n    return '{p.canary}'\n",
             f"orgs/{VICTIM}/tasks/{name}/examples.jsonl": json.dumps({"input": f"client {p.canary}"}) + "\n",
             f"orgs/{VICTIM}/tasks/{name}/evals.jsonl": json.dumps({"id": "c1", "input": p.canary,
                                                                    "expected": "1"}) + "\n"}
    deltas = [Delta(op="set", target="artifact", path=k, before=home.repo.read(k), after=v) for k, v in files.items()]
    Committer(home).commit(ChangeSet(learner="crystallise", layer="harness", deltas=deltas,
                                     scope=Scope(agent="ct", org=VICTIM),
                                     verdict=Verdict(decision="accept", reason="bench")))
    return name


def tasks_api(p: Probe) -> None:
    name = _victim_task(p)
    listed = p.call("evil", "GET", "/v1/tasks")
    if any(t.get("org") == VICTIM for t in listed.json().get("tasks", [])):
        p.leaks.append("GET /v1/tasks lists the victim org's namespace")
    for q in ("", f"?org={VICTIM}"):
        p.call("evil", "GET", f"/v1/tasks/{name}{q}")


def tasks_ui(p: Probe) -> None:
    name = _victim_task(p)
    p.client.cookies.set("crystallise_key", p.lab.keys["evil"])
    for path in (f"/ui/tasks/{name}", f"/ui/tasks/{name}?org={VICTIM}", "/ui/tasks", "/ui/"):
        r = p.client.get(path)
        p.statuses.append(f"evil UI {path[:50]} -> {r.status_code}")
        if p.canary in r.text:
            p.leaks.append(f"{path} shows the victim's task files")
        if r.status_code >= 500:
            p.server_errors += 1
            p.leaks.append(f"{path} answered {r.status_code}")


def ui_feedback_id(p: Probe) -> None:
    """Evil's UI feedback on its own run `T` (stored `T@evil`) must land there, never on the operator's
    no-org run that is stored as plain `T`; and the UI shows evil its ids as it gave them."""
    tid = f"op-{_tag()}"
    p.lab.home.store.write_trace(Trace(id=tid, name="chat", agent_id="ct", input="q", output="a"))
    p.call("evil", "POST", "/v1/traces", json={"name": "x", "id": tid})
    p.client.cookies.set("crystallise_key", p.lab.keys["evil"])
    try:
        page = p.client.get(f"/ui/traces/{tid}")
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        r = p.client.post(f"/ui/traces/{tid}/feedback", data={"csrf": found.group(1) if found else "", "rating": "bad"})
        listing = p.client.get("/ui/traces")
    finally:
        p.client.cookies.clear()
    for what, resp in (("trace page", page), ("feedback", r), ("trace list", listing)):
        p.statuses.append(f"evil UI {what} -> {resp.status_code}")
        if resp.status_code >= 500:
            p.server_errors += 1
            p.leaks.append(f"UI {what} answered {resp.status_code}")
    if p.lab.home.store.get_trace(tid).feedback:
        p.leaks.append("evil's UI feedback landed on the operator's no-org run of the same name")
    if not p.lab.home.store.get_trace(f"{tid}@{EVIL}").feedback:
        p.leaks.append(f"evil's own UI feedback was lost ({r.status_code})")
    if f"{tid}@{EVIL}" in page.text + listing.text:
        p.leaks.append("the UI shows evil its ids with the org qualifier the store adds")


def dream_counts(p: Probe) -> None:
    p.lab.home.config.setdefault("model", "scripted:{}")  # a dream critiques failed runs: the double, offline
    for _ in range(3):
        t = Trace(name="run", agent_id="ct", org_id=VICTIM, input="q",
                  spans=[Span(name="ctx", kind="retrieval", attributes={"shown_items": [p.lab.world["org_item"]]})])
        p.lab.home.store.write_trace(t)
    r = p.call("evil", "POST", "/v1/dream", json={"agent": "ct", "dry_run": True})
    body = r.json() if r.status_code == 200 else {}
    if r.status_code != 200:
        p.leaks.append(f"the dream did not run ({r.status_code} {r.text[:200]}): nothing was measured")
    mine = sum(1 for t in p.lab.home.store.list_traces(org=EVIL, limit=100_000))
    if "credit_by_org" in body or (body.get("credit") or {}).get("traces", 0) > mine:
        p.leaks.append(f"POST /v1/dream shows evil credit counts over other orgs' traces: {body.get('credit')}")


def version_diff(p: Probe) -> None:
    name = _victim_task(p)
    mine = p.call("victim", "GET", "/v1/versions", params={"limit": 500}).json()["versions"]
    numbers = sorted(v["number"] for v in mine)
    if len(numbers) >= 2:
        own = p.call("victim", "GET", f"/v1/versions/{numbers[0]}/diff/{numbers[-1]}")
        if name not in own.text:
            p.leaks.append("the victim's own diff leaves out its own org's changes (empty for an org key)")
        p.call("evil", "GET", f"/v1/versions/{numbers[0]}/diff/{numbers[-1]}")
    theirs = [v["number"] for v in p.call("evil", "GET", "/v1/versions", params={"limit": 500}).json()["versions"]]
    if len(theirs) >= 2:
        p.call("evil", "GET", f"/v1/versions/{min(theirs)}/diff/{max(theirs)}")


# -- protection by principal -----------------------------------------------------------------------------


def _self_named(p: Probe, learner: str, delta: Callable[[Any], Delta], evidence: dict[str, Any] | None = None
                ) -> None:
    home = p.lab.home
    name = f"pt-{_tag()}"
    spec_path = f"tasks/{name}/spec.json"
    Committer(home).commit(ChangeSet(learner="define", layer="harness", verdict=Verdict("accept", "bench"),
                                     deltas=[Delta(op="set", target="artifact", path=spec_path, before=None,
                                                   after=json.dumps({"name": name, "metric": "numeric"}))]),
                           actor=Actor.host("bench"))
    d = delta(name)
    before = home.repo.read(d.path or "")
    cs = ChangeSet(learner=learner, layer="harness", deltas=[d], verdict=Verdict("accept", "the gate was fooled"),
                   evidence=evidence or {})
    try:
        Committer(home).commit(cs)
    except CrystalliseError as e:
        p.statuses.append(f"commit as {learner!r} -> refused ({type(e).__name__})")
    if home.repo.read(d.path or "") != before:
        p.leaks.append(f"a change set calling itself {learner!r} changed {d.path}")


def protect_grader(p: Probe, learner: str) -> None:
    _self_named(p, learner, lambda n: Delta(op="set", target="artifact", path=f"tasks/{n}/graders/g.py",
                                            before=None, after="def check(*a):\n    return True\n"))


def protect_metric(p: Probe, learner: str) -> None:
    def metric(n: str) -> Delta:
        path = f"tasks/{n}/spec.json"
        return Delta(op="set", target="artifact", path=path, before=p.lab.home.repo.read(path),
                     after=json.dumps({"name": n, "metric": "exact"}))
    _self_named(p, learner, metric)


def protect_forged_actor(p: Probe) -> None:
    _self_named(p, "human", lambda n: Delta(op="set", target="artifact", path=f"graders/{n}.py", before=None,
                                            after="X = 1\n"),
                evidence={"actor": {"name": "root", "via": "cli"}, "review": {"decision": "approve", "by": "root"}})


def protect_org_key_revert(p: Probe) -> None:
    """An org key reverts a version that defined a grader: an org key's request has no authority over graders."""
    home = p.lab.home
    path = f"orgs/{EVIL}/tasks/t{_tag()}/graders/g.py"
    v = Committer(home, actor=Actor.cli("operator")).commit(ChangeSet(
        learner="define", layer="harness", scope=Scope(agent="ct", org=EVIL), verdict=Verdict("accept", "bench"),
        deltas=[Delta(op="set", target="artifact", path=path, before=None, after="X = 1\n")]))
    p.call("evil", "POST", f"/v1/versions/{v.number}/revert", json={"reason": "drop the grader"})
    if home.repo.read(path) is None:
        p.leaks.append("an org key's revert deleted a grader")


# -- hostile input ---------------------------------------------------------------------------------------


def _bad(p: Probe, path: str, body: str | bytes, headers: dict[str, str] | None = None, who: str = "victim"
         ) -> None:
    before = p.lab.home.store.count_traces()
    r = p.call(who, "POST", path, content=body, headers={**JSON, **(headers or {})})
    if r.status_code < 400:
        p.leaks.append(f"{path}: a bad input was accepted ({r.status_code})")
    elif not r.headers.get("content-type", "").startswith("application/problem+json"):
        p.leaks.append(f"{path}: refused without problem+json ({r.headers.get('content-type')})")
    if p.lab.home.store.count_traces() != before:
        p.stored_bad += 1
        p.leaks.append(f"{path}: the bad input was stored")
    for who_reads in ("victim", "admin"):
        p.call(who_reads, "GET", "/v1/traces", params={"spans": "true", "limit": 1000}, look=False)


def _own_trace(p: Probe) -> str:
    tid = f"own-{_tag()}"
    p.call("victim", "POST", "/v1/traces", json={"name": "x", "id": tid})
    return tid


def _otlp_pb_nan(p: Probe) -> None:
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError as e:
        p.statuses.append(f"not run: {e} (the `otlp` extra)")
        return
    message = ExportTraceServiceRequest()
    span = message.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = secrets.token_bytes(16), secrets.token_bytes(8), "root"
    span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
    attr = span.attributes.add()
    attr.key, attr.value.double_value = "x", float("inf")
    _bad(p, "/otlp/v1/traces", message.SerializeToString(), {"content-type": "application/x-protobuf"})


def read_legacy_rows(p: Probe) -> None:
    """Rows the store took before the fix (NaN, Infinity, lone surrogates inside JSON payloads)."""
    p.lab.home.store.write_trace(Trace(name="old", agent_id="ct", org_id=VICTIM, input={"x": float("nan")},
                                       output="a\ud800b", metadata={"\udfff": float("-inf")},
                                       spans=[Span(name="s", attributes={"t": float("inf")})]))
    p.stored_bad = 0  # written on purpose, as an older release did: what is measured is the reads
    for who in ("victim", "admin"):
        p.call(who, "GET", "/v1/traces", params={"spans": "true", "limit": 1000}, look=False)
        p.call(who, "GET", "/ui/traces", look=False, headers={"Cookie": f"crystallise_key={p.lab.keys[who]}"})


_CHAT = '{"model": "m", "stream": %s, "messages": [{"role": "user", "content": %s}]}'
PROBES: dict[str, tuple[str, Callable[[Probe], None]]] = {
    "ids-trace-post": ("POST a trace with the victim's trace id: 409 (oracle) or 201?", ids_trace_post),
    "ids-span": ("POST a trace re-using the victim's span id", ids_span),
    "ids-feedback-in-trace": ("POST a trace re-using the victim's feedback id", ids_feedback_in_trace),
    "ids-feedback-post": ("POST feedback with the victim's feedback id", ids_feedback_post),
    "ids-get": ("GET the victim's trace id vs an unknown id", ids_get),
    "ids-feedback-foreign-trace": ("POST feedback on the victim's trace vs an unknown one", ids_feedback_foreign_trace),
    "ids-squat": ("pre-record the victim's next id; the victim's run and its retry", ids_squat),
    "ids-undo": ("undo (dry run) of the victim's trace vs an unknown one", ids_undo),
    "ids-legacy": ("the victim's ids stored before ids were per org", ids_legacy),
    "ids-otlp-squat": ("OTLP: evil exports the victim's trace id first", ids_otlp_squat),
    "ids-otlp-oracle": ("OTLP: evil exports a trace id the victim used", ids_otlp_oracle),
    "ids-mcp-feedback": ("MCP feedback tool on the victim's trace id vs an unknown one", ids_mcp_feedback),
    "tasks-api": ("GET /v1/tasks and /v1/tasks/{name}?org=victim", tasks_api),
    "tasks-ui": ("/ui/tasks/{name} (and ?org=victim), /ui/tasks, /ui/ with evil's cookie", tasks_ui),
    "ui-feedback-id": ("UI feedback on evil's run T, where the operator has a no-org run T", ui_feedback_id),
    "dream-credit": ("POST /v1/dream: credit counts over the victim's traces?", dream_counts),
    "version-diff": ("a version diff: the victim sees its own org's changes, evil none", version_diff),
    "protect-human-grader": ("a change set calling itself 'human' adds a grader", lambda p: protect_grader(p, "human")),
    "protect-review-metric": ("a change set calling itself 'review' changes the metric",
                              lambda p: protect_metric(p, "review")),
    "protect-define-grader": ("a change set calling itself 'define' adds a grader",
                              lambda p: protect_grader(p, "define")),
    "protect-undo-metric": ("a change set calling itself 'undo' changes the metric",
                            lambda p: protect_metric(p, "undo")),
    "protect-forged-actor": ("a change set writing itself an actor and a review approval", protect_forged_actor),
    "protect-org-key-revert": ("an org key reverts a version that defined a grader", protect_org_key_revert),
    "bad-rest-surrogate": ("POST /v1/traces with a lone surrogate",
                           lambda p: _bad(p, "/v1/traces", '{"name": "x", "input": "\\ud800"}')),
    "bad-rest-nan": ("POST /v1/traces with NaN", lambda p: _bad(p, "/v1/traces", '{"name": "x", "output": NaN}')),
    "bad-rest-infinity": ("POST /v1/traces with Infinity in a span",
                          lambda p: _bad(p, "/v1/traces", '{"name": "x", "spans": [{"name": "s", '
                                                         '"attributes": {"t": Infinity}}]}')),
    "bad-rest-surrogate-key": ("POST /v1/traces with a lone surrogate in a key",
                               lambda p: _bad(p, "/v1/traces", '{"name": "x", "metadata": {"\\udfff": 1}}')),
    "bad-feedback-nan": ("POST feedback with score NaN",
                         lambda p: _bad(p, f"/v1/traces/{_own_trace(p)}/feedback", '{"score": NaN}')),
    "bad-otlp-json-nan": ("OTLP/JSON with doubleValue NaN",
                          lambda p: _bad(p, "/otlp/v1/traces", _otlp_doc(secrets.token_hex(16), "x", [
                              {"key": "v", "value": {"doubleValue": "NaN"}}]))),
    "bad-otlp-json-surrogate": ("OTLP/JSON with a lone surrogate",
                                lambda p: _bad(p, "/otlp/v1/traces", _otlp_doc(secrets.token_hex(16), "\ud800"))),
    "bad-otlp-protobuf-inf": ("OTLP/protobuf with an Infinity double", _otlp_pb_nan),
    "bad-proxy-surrogate": ("the proxy: a lone surrogate in a message",
                            lambda p: _bad(p, "/v1/chat/completions", _CHAT % ("false", '"\\ud800"'))),
    "bad-sse-nan": ("the proxy streaming (SSE): NaN in the body",
                    lambda p: _bad(p, "/v1/chat/completions",
                                   '{"model": "m", "stream": true, "temperature": NaN, '
                                   '"messages": [{"role": "user", "content": "hi"}]}')),
    "bad-mcp-infinity": ("MCP over HTTP: Infinity in a tool call",
                         lambda p: _bad(p, "/mcp", '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
                                                   '{"name": "remember", "arguments": {"text": "x", "n": Infinity}}}',
                                        {"accept": "application/json, text/event-stream"})),
    "bad-id-overlong": ("a 201-character trace id",
                        lambda p: _bad(p, "/v1/traces", json.dumps({"name": "x", "id": "t" * 201}))),
    "bad-id-control": ("a control character in a span id",
                       lambda p: _bad(p, "/v1/traces", json.dumps({"name": "x", "spans": [{"name": "s",
                                                                                          "id": "s\u0001"}]}))),
    "bad-id-at-sign": ("an id naming another org's namespace ('run@victim')",
                       lambda p: _bad(p, "/v1/traces", json.dumps({"name": "x", "id": "run@victim"}), who="evil")),
    "read-legacy-rows": ("rows stored before the fix (NaN, lone surrogates): GET /v1/traces, /ui/traces",
                         read_legacy_rows),
    **SURFACE_PROBES,  # jobs, the memory API, /v1/responses and /v1/embeddings
}


def tenancy_attack(lab: Any, atk: Any) -> dict[str, Any]:
    if "admin" not in lab.keys:
        raise RuntimeError("the tenancy family needs the cross-tenant world (setup_world) for its keys")
    p = Probe(lab)
    PROBES[atk.payload][1](p)
    return p.result()
