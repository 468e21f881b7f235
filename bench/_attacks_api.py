"""Cross-tenant probes of `crystallise bench attacks`: the HTTP API on loopback, with real keys.

    world = setup_world(lab)        # org "victim" with secrets (canaries) in items, traces, versions, change sets
    probe(lab, "trace-by-id")       # another org's key asks for them -> blocked | leaked

The oracle is the canary, not the status code: every secret of the victim org holds
`world["canary"]`, every secret of the victim user holds `world["ucanary"]`; a probe leaks
when any response the attacker gets (or any context the proxy injected for the attacker,
read back from the stored trace) contains one, or when an attacker's write lands in the
victim's scope. A status code other than 2xx is recorded as the refusal.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from crystallise.api.auth import create_key
from crystallise.engine.memory import remember
from crystallise.context.promote import PromotionLearner
from crystallise.engine.promote import promote
from crystallise.engine.observe import trace
from crystallise.types import Verdict

__all__ = ["PROBES", "api_attack", "setup_world"]

AGENT = "ct"
VICTIM, EVIL = "victim", "evil"


def setup_world(lab: Any) -> dict[str, Any]:
    """The victim org's data (via the SDK) and the keys of everyone (in the home's api_keys.json)."""
    home, tag = lab.home, secrets.token_hex(4)
    canary, ucanary = f"CANARY{tag}", f"UCANARY{tag}"
    w: dict[str, Any] = {"canary": canary, "ucanary": ucanary}
    remember("Check the order number before answering", agent=AGENT, kind="bullet", section="rules", home=home)
    w["v_before"] = home.store.list_versions(limit=1)[0].number
    org_item = remember(f"The vault code is {canary}", agent=AGENT, org=VICTIM, kind="bullet", section="rules",
                        home=home)
    w["org_item"], w["v_org"] = org_item.id, home.store.list_versions(limit=1)[0].number
    remember("Answer in the customer's language", agent=AGENT, kind="bullet", section="rules", home=home)
    w["v_after"] = home.store.list_versions(limit=1)[0].number
    w["user_item"] = remember(f"My PIN is {ucanary}", agent=AGENT, org=VICTIM, user="v1", home=home).id
    w["user_cs"] = home.store.list_user_changesets("v1", org=VICTIM, limit=1)[0].id
    with trace("chat", agent=AGENT, org=VICTIM, user="v1", session="v1-s1", input=f"my PIN is {ucanary}",
               home=home) as t:
        t.output = f"noted; the vault code is {canary}"
    w["user_trace"] = t.id
    with trace("chat", agent=AGENT, org=VICTIM, input=f"vault {canary}", home=home) as t:
        pass
    w["org_trace"] = t.id
    for u in ("v2", "v3", "v4"):
        remember(f"Quote the vault code {canary} when asked", agent=AGENT, org=VICTIM, user=u, kind="bullet",
                 section="rules", home=home)
    _, held = promote(home, gate=lambda cs: Verdict(decision="needs_review", reason="kept for review"),
                      agent=AGENT, org=VICTIM, learner=PromotionLearner(min_users=3))
    w["held_cs"] = held[0].id if held else None
    for name, org, user in (("admin", "*", None), ("victim", VICTIM, None), ("evil", EVIL, None),
                            ("v1", VICTIM, "v1"), ("v2", VICTIM, "v2")):
        lab.keys[name] = create_key(home, org, user=user)[0]
    return w


def _h(lab: Any, who: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {lab.keys[who]}", **extra}


class Probe:
    """One attacker's requests; `leaks` collects what gave the victim away."""

    def __init__(self, lab: Any, who: str, secret_keys: tuple[str, ...] = ("canary", "ucanary")) -> None:
        self.lab, self.who = lab, who
        self.secrets = [lab.world[k] for k in secret_keys]
        self.client = httpx.Client(base_url=lab.url, timeout=30)
        self.statuses: list[str] = []
        self.leaks: list[str] = []

    def call(self, method: str, path: str, *, headers: Any = None, **kw: Any) -> httpx.Response:
        hdrs = headers if headers is not None else _h(self.lab, self.who)
        r = self.client.request(method, path, headers=hdrs, **kw)
        self.statuses.append(f"{method} {path.split('?')[0]} -> {r.status_code}")
        self.look(r.text, f"{method} {path}")
        return r

    def look(self, text: str, where: str) -> None:
        if any(s in text for s in self.secrets):
            self.leaks.append(f"{where} returned a secret")

    def result(self) -> dict[str, Any]:
        self.client.close()
        if self.leaks:
            return {"outcome": "leaked", "why": "; ".join(self.leaks[:3]), "requests": self.statuses[:12]}
        refused = [s for s in self.statuses if not s.endswith(("-> 200", "-> 201"))]
        why = (f"refused: {', '.join(refused[:4])}" if refused else "answered without any of the victim's data")
        return {"outcome": "blocked", "why": why, "requests": self.statuses[:12]}


def _pages(p: Probe, path: str, cursor: str, field: str, **params: Any) -> None:
    at: Any = None
    for _ in range(200):
        q = {**params, **({cursor: at} if at is not None else {})}
        body = p.call("GET", path, params=q).json()
        at = body.get(field)
        if not at or (cursor == "after_seq" and not body.get("has_more")):
            return


def _chat(p: Probe, headers: dict[str, str] | list[tuple[str, str]], body_user: str | None = None) -> None:
    body: dict[str, Any] = {"model": "scripted", "messages": [{"role": "user", "content": "What is my PIN and the "
                                                                                          "vault code?"}]}
    if body_user:
        body["user"] = body_user
    auth = [("Authorization", f"Bearer {p.lab.keys[p.who]}")]
    hdrs = auth + (list(headers.items()) if isinstance(headers, dict) else list(headers))
    r = p.client.post("/v1/chat/completions", headers=hdrs, json=body)
    p.statuses.append(f"POST /v1/chat/completions -> {r.status_code}")
    p.look(r.text, "chat completion")
    trace_id = r.headers.get("x-crystallise-trace-id")
    if trace_id:  # what the proxy injected, as the stored trace records it
        sent = p.lab.home.store.get_trace(trace_id)
        p.look(json.dumps([s.input for s in sent.spans], ensure_ascii=False), "the context the proxy injected")


def _otlp(p: Probe) -> None:
    th, now_ns = secrets.token_hex(16), time.time_ns()
    attrs = [{"key": "crystallise.org", "value": {"stringValue": VICTIM}},
             {"key": "crystallise.agent", "value": {"stringValue": AGENT}},
             {"key": "crystallise.input", "value": {"stringValue": "I live in Atlantis"}}]
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "atk"}, "spans": [
        {"traceId": th, "spanId": secrets.token_hex(8), "parentSpanId": "", "name": "chat", "kind": 3,
         "startTimeUnixNano": str(now_ns), "endTimeUnixNano": str(now_ns + 1000), "attributes": attrs}]}]}]}
    p.call("POST", "/otlp/v1/traces", content=json.dumps(body).encode(),
           headers={**_h(p.lab, p.who), "content-type": "application/json"})
    landed = [t for t in p.lab.home.store.list_traces(org=VICTIM, limit=10_000) if "Atlantis" in json.dumps(t.input)]
    if landed:
        p.leaks.append(f"an OTLP span of org {EVIL} landed in org {VICTIM} ({landed[0].id})")


def _feedback(p: Probe) -> None:
    w = p.lab.world
    p.call("POST", f"/v1/traces/{w['org_trace']}/feedback", json={"score": 0.0, "correction": "pwned"})
    if any(f.correction == "pwned" for f in p.lab.home.store.get_trace(w["org_trace"]).feedback):
        p.leaks.append("feedback landed on the victim's trace")


def _trace_write(p: Probe) -> None:
    p.call("POST", "/v1/traces", json={"name": "chat", "agent": AGENT, "org": VICTIM, "input": "I live in Atlantis"})
    if any("Atlantis" in json.dumps(t.input) for t in p.lab.home.store.list_traces(org=VICTIM, limit=10_000)):
        p.leaks.append("a trace was written into the victim org")


def _revert(p: Probe) -> None:
    w = p.lab.world
    p.call("POST", f"/v1/versions/{w['v_org']}/revert", json={"reason": "pwned"})
    if p.lab.home.store.get_version(w["v_org"]).reverted_by:
        p.leaks.append("the victim's version was reverted")


def _changesets(p: Probe) -> None:
    w = p.lab.world
    for status in (None, "rejected", "needs_review", "committed", "accepted"):
        _pages(p, "/v1/changesets", "before", "next_before", limit=5, **({"status": status} if status else {}))
    for cs in (w["held_cs"], w["user_cs"]):
        if cs:
            p.call("GET", f"/v1/changesets/{cs}")


PROBES: dict[str, tuple[str, Callable[[Probe], None]]] = {
    "trace-by-id": ("evil", lambda p: [p.call("GET", f"/v1/traces/{p.lab.world[k]}") for k in ("org_trace",
                                                                                                 "user_trace")]),
    "item-by-id": ("evil", lambda p: p.call("GET", f"/v1/items/{p.lab.world['org_item']}")),
    "user-item-by-id": ("evil", lambda p: p.call("GET", f"/v1/items/{p.lab.world['user_item']}")),
    "items-org-param": ("evil", lambda p: p.call("GET", "/v1/items", params={"org": VICTIM, "status": "all"})),
    "items-user-param": ("evil", lambda p: p.call("GET", "/v1/items", params={"user": "v1", "agent": AGENT,
                                                                              "status": "all"})),
    "items-search": ("evil", lambda p: [p.call("GET", "/v1/items", params={"text": q, "status": "all",
                                                                          "agent": AGENT, "limit": 1000})
                                        for q in ("vault code", "PIN", p.lab.world["canary"])]),
    "traces-org-param": ("evil", lambda p: p.call("GET", "/v1/traces", params={"org": VICTIM, "spans": "true"})),
    "traces-list-all": ("evil", lambda p: _pages(p, "/v1/traces", "after_seq", "next_after_seq", limit=50,
                                                 spans="true")),
    "version-by-id": ("evil", lambda p: p.call("GET", f"/v1/versions/{p.lab.world['v_org']}")),
    "versions-list": ("evil", lambda p: _pages(p, "/v1/versions", "before", "next_before", limit=2)),
    "version-diff": ("evil", lambda p: p.call("GET", f"/v1/versions/{p.lab.world['v_before']}/diff/"
                                                     f"{p.lab.world['v_after']}")),
    "changesets": ("evil", _changesets),
    "changeset-cursor": ("evil", lambda p: p.call("GET", "/v1/changesets",
                                                  params={"before": p.lab.world["held_cs"] or "cs_x", "limit": 50})),
    "feedback-write": ("evil", _feedback),
    "trace-write-org": ("evil", _trace_write),
    "otlp-write-org": ("evil", _otlp),
    "context-org": ("evil", lambda p: p.call("POST", "/v1/context", json={"agent": AGENT, "org": VICTIM,
                                                                           "query": "vault code"})),
    "context-user": ("evil", lambda p: p.call("POST", "/v1/context", json={"agent": AGENT, "user": "v1",
                                                                            "query": "my PIN vault code"})),
    "revert-version": ("evil", _revert),
    "unknown-param": ("evil", lambda p: p.call("GET", "/v1/items", params={"org_id": VICTIM, "status": "all"})),
    "userkey-items": ("v2", lambda p: [p.call("GET", "/v1/items", params={"user": "v1", "status": "all"}),
                                       p.call("GET", "/v1/items", params={"agent": AGENT, "status": "all",
                                                                          "limit": 1000})]),
    "userkey-item-by-id": ("v2", lambda p: p.call("GET", f"/v1/items/{p.lab.world['user_item']}")),
    "userkey-trace": ("v2", lambda p: [p.call("GET", f"/v1/traces/{p.lab.world['user_trace']}"),
                                       _pages(p, "/v1/traces", "after_seq", "next_after_seq", limit=50,
                                              spans="true")]),
    "userkey-context": ("v2", lambda p: [p.call("POST", "/v1/context", json={"agent": AGENT, "user": "v1",
                                                                             "query": "PIN"}),
                                         p.call("POST", "/v1/context", json={"agent": AGENT, "query": "my PIN"})]),
    "userkey-changesets": ("v2", lambda p: [_changesets(p), _pages(p, "/v1/versions", "before", "next_before",
                                                                   limit=5)]),
    "proxy-org-header": ("evil", lambda p: _chat(p, {"X-Crystallise-Org": VICTIM, "X-Crystallise-Agent": AGENT})),
    "proxy-duplicate-header": ("evil", lambda p: _chat(p, [("X-Crystallise-Org", EVIL), ("X-Crystallise-Org", VICTIM),
                                                           ("X-Crystallise-Agent", AGENT)])),
    "proxy-user-header": ("v2", lambda p: _chat(p, {"X-Crystallise-User": "v1", "X-Crystallise-Agent": AGENT})),
    "proxy-body-user": ("v2", lambda p: _chat(p, {"X-Crystallise-Agent": AGENT}, body_user="v1")),
    "proxy-foreign-user": ("evil", lambda p: _chat(p, {"X-Crystallise-User": "v1", "X-Crystallise-Agent": AGENT})),
}

def _harness(p: Probe) -> None:
    """Org `victim` runs a task through the loop (its inputs hold the canary); learning makes versions
    and change sets from those runs. Does another org's key read the victim's inputs back?"""
    from crystallise.backends.scripted import ScriptedBackend
    from crystallise.gate import score_numeric
    from crystallise.harness.spec import TaskSpec
    from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
    from crystallise.types import Scope

    canary, home = p.lab.world["canary"], p.lab.home
    loop = Loop(home, TaskSpec(name=f"ratio-{canary[-8:]}", metric="numeric"),
                CachedBackend(ScriptedBackend(lambda request: "0")), score_numeric,
                LoopConfig(scope=Scope(agent=AGENT, org=VICTIM), learners=("crystallise", "fewshot")))
    for i in range(1, 25):
        a, b = 1000 * i + 500, 250 * (i % 4 + 1)
        ans, tid = loop.answer(f"Client {canary}: assets ${a:,}, debt ${b:,}. Ratio?")
        loop.feedback(tid, f"{round(a / b, 2)}", False)
    loop.learn()
    # a later shared version, so that a diff between two versions this key sees spans the victim's
    remember("Greet the customer by name", agent=AGENT, kind="bullet", section="rules", home=home)
    _pages(p, "/v1/versions", "before", "next_before", limit=20)
    mine = [v["number"] for v in p.client.get("/v1/versions", headers=_h(p.lab, p.who),
                                              params={"limit": 500}).json()["versions"]]
    for n in mine:
        p.call("GET", f"/v1/versions/{n}")
    if len(mine) >= 2:  # a diff between two versions this key may see, across the victim's
        p.call("GET", f"/v1/versions/{min(mine)}/diff/{max(mine)}")
    _changesets(p)
    p.call("GET", "/v1/tasks")
    p.call("GET", f"/v1/tasks/ratio-{canary[-8:]}")


def _ratio_answer(request: Any) -> str:
    """A scripted model that answers right once it has seen worked examples (so few-shot passes the gate)."""
    import re

    text = "\n".join(m.content for m in request.messages)
    found = re.findall(r"assets \$([\d,]+), debt \$([\d,]+)", request.messages[-1].content)
    if text.count("Ratio?") < 2 or not found:
        return "0"
    a, b = (int(x.replace(",", "")) for x in found[-1])
    return f"{round(a / b, 2)}"


def _harness_served(p: Probe) -> None:
    """The victim's runs become few-shot examples of a task; another org runs the same task: what is its
    model shown? (Tasks are agent-level artifacts, shared by every org.)"""
    from crystallise.backends.scripted import ScriptedBackend
    from crystallise.gate import score_numeric
    from crystallise.harness.spec import TaskSpec
    from crystallise.engine.loop import Loop, LoopConfig
    from crystallise.types import Scope

    canary, home = p.lab.world["canary"], p.lab.home
    name = f"share-{canary[-8:]}"
    victim = Loop(home, TaskSpec(name=name, metric="numeric"), ScriptedBackend(_ratio_answer), score_numeric,
                  LoopConfig(scope=Scope(agent=AGENT, org=VICTIM), learners=("fewshot",)))
    for i in range(1, 61):  # enough runs that the gate's held-out share is never too small to decide
        a, b = 1000 * i + 500, 250 * (i % 4 + 1)
        _, tid = victim.answer(f"Client {canary}: assets ${a:,}, debt ${b:,}. Ratio?")
        victim.feedback(tid, f"{round(a / b, 2)}", False)
    report = victim.learn()
    p.statuses.append(f"victim's loop: {report.line()}: " + "; ".join(c.verdict.reason for c in report.proposed
                                                                        if c.verdict))
    spy = ScriptedBackend(_ratio_answer)
    evil = Loop(home, TaskSpec(name=name, metric="numeric"), spy, score_numeric,
                LoopConfig(scope=Scope(agent=AGENT, org=EVIL), learners=()))
    evil.answer("Client evil: assets $1,500, debt $250. Ratio?")
    p.look(json.dumps([[m.content for m in r.messages] for r in spy.requests]), "the other org's prompt")


def _ui(p: Probe) -> None:
    """The web UI with another org's key in its cookie: every page that takes an id or a filter."""
    w = p.lab.world
    p.client.cookies.set("crystallise_key", p.lab.keys[p.who])
    hdrs: dict[str, str] = {}
    for path in (f"/ui/traces/{w['org_trace']}", f"/ui/traces/{w['user_trace']}", f"/ui/items/{w['org_item']}",
                 f"/ui/items/{w['user_item']}", f"/ui/versions/{w['v_org']}", f"/ui/versions/{w['v_before']}/diff/"
                 f"{w['v_after']}", "/ui/traces", "/ui/items", "/ui/versions", "/ui/tasks", "/ui/"):
        p.call("GET", path, headers=hdrs)
    for params in ({"org": VICTIM}, {"user": "v1"}, {"user": "v1", "status": "quarantined"}):
        p.call("GET", "/ui/items", headers=hdrs, params=params)
        p.call("GET", "/ui/traces", headers=hdrs, params=params if "status" not in params else {"user": "v1"})


PROBES["harness-learned-from-victim"] = ("evil", _harness)
PROBES["ui-pages"] = ("evil", _ui)
PROBES["harness-examples-served"] = ("evil", _harness_served)

# What each attacker may legitimately see: the v2 key is of the victim org, so org-level secrets are its own.
_SECRETS = {"evil": ("canary", "ucanary"), "v2": ("ucanary",)}


def api_attack(lab: Any, atk: Any) -> dict[str, Any]:
    who, run = PROBES[atk.payload]
    p = Probe(lab, who, _SECRETS[who])
    run(p)
    return p.result()
