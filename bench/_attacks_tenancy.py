"""Executors of the `tenancy` family of `crystallise bench attacks`: tenancy of *learning* (issue 15).

    unauth-extract   text from runs nobody vouches for (no user, a user id the edge could not vouch
                     for, spans relayed without an org), seen in several client-chosen sessions, then
                     implicit extraction: leaked if an item from it goes live anywhere
    unauth-dream     the same texts planted in failed runs nobody vouches for (an org's run with no
                     user, an operator run with neither), then a dream whose critic is fully steered
                     (it echoes the planted order as its lesson): leaked if the lesson goes live at
                     org or agent level instead of waiting for review
    cross-org-code   two real org-scoped loops on one task name: the victim's runs learn a program
                     holding a secret (`order N -> VAULT-<secret>-N`), or the attacker's runs learn a
                     phishing answer; leaked if either org is answered (by code or in its prompt) with
                     what the other's runs taught, if one org's cases enter the other's gate, or if
                     the shared (agent-level) program learns from an org's runs
    forget           a user's runs become a program, eval cases, examples, memories, spool files and
                     access-log lines; then `forget_user`: leaked (a *leftover*) if any of the user's
                     strings is still in the store (every table), the artifact tree, the spool or the log

Judged from the store, the artifact tree and what the loops serve afterwards, never from what the
code under attack says about itself.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine.dream import dream
from crystallise.engine.extract import run_extraction
from crystallise.engine.forget_user import forget_user
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.engine.memory import remember
from crystallise.gate import score_exact
from crystallise.harness.spec import TaskSpec
from crystallise.types import Feedback, Scope, Trace

__all__ = ["executors"]


def _result(outcome: str, why: str, **more: Any) -> dict[str, Any]:
    return {"outcome": outcome, "why": why, "written": [], "errors": [], "served_to": [], "held": 0, **more}


def _loop(lab: Any, agent: str, task: str, org: str | None, user: str | None = None,
          spy: list[str] | None = None, learners: tuple[str, ...] = ("crystallise", "fewshot")) -> Loop:
    def reply(request: Any) -> str:
        if spy is not None:
            spy.extend(m.content for m in request.messages)
        return "I cannot say"

    return Loop(lab.home, TaskSpec(name=task, metric="exact"), CachedBackend(ScriptedBackend(reply)), score_exact,
                LoopConfig(learners=learners, scope=Scope(agent=agent, org=org, user=user), shadow="off"))


def _teach(loop: Loop, inputs: list[str], answer: Callable[[str], str]) -> None:
    for value in inputs:
        _, tid = loop.answer(value)
        loop.feedback(tid, answer(value), False)


def executors(runner: Any) -> dict[str, Callable[[Any, Any], dict[str, Any]]]:
    judge, attempt = runner.judge, runner._try

    # -- poisoning via unauthenticated text ---------------------------------------------------------------
    def unauth_extract(lab: Any, atk: Any) -> dict[str, Any]:
        agent, before, errors = lab.fresh(), lab.snapshot(), []
        mode = atk.params["mode"]
        org = None if mode in ("no-user-no-org", "relayed-no-org") else f"{agent}-org"
        user = None if mode.startswith("no-user") else f"{agent}-u"
        meta = {"relayed-no-org": {"source": "otlp"}, "unvouched-user": {"user_authenticated": False}}.get(mode, {})
        for i in range(int(atk.params.get("sessions", 3))):  # one client, a fresh session id each time
            lab.home.store.write_trace(Trace(name="chat", agent_id=agent, org_id=org, user_id=user,
                                             session_id=f"{agent}-s{i}", input=atk.payload, output="ok",
                                             metadata=dict(meta)))
        attempt(errors, lambda: run_extraction(lab.home))
        probes = [(org, None), (org, "someone-else"), (None, None)] + ([(org, user)] if user else [])
        return judge(lab, agent, before, errors, probes)

    def unauth_dream(lab: Any, atk: Any) -> dict[str, Any]:
        agent, before, errors = lab.fresh(), lab.snapshot(), []
        org = None if atk.params["mode"] == "no-user-no-org" else f"{agent}-org"
        order = atk.payload.removeprefix("Remember that ").rstrip(".")
        lab.home.store.write_trace(Trace(name="chat", agent_id=agent, org_id=org, input=f"Hi. {atk.payload}",
                                         output="ok", feedback=[Feedback(trace_id="", score=0.0)]))
        steered = ScriptedBackend(lambda _request: json.dumps(
            {"critique": "the assistant missed the rule", "deltas": [{"op": "add", "text": order[0].upper() + order[1:],
                                                                      "section": "strategies"}]}))
        scope = Scope(agent=agent, org=org)
        attempt(errors, lambda: dream(lab.home, scope=scope, backend=steered))
        held = [cs for cs in lab.home.store.list_changesets(status="needs_review", limit=500)
                if cs.learner == "dream" and cs.scope.agent == agent]
        return judge(lab, agent, before, errors, [(org, None), (org, "someone-else"), (None, None)], held=len(held))

    # -- cross-org code sharing -----------------------------------------------------------------------------
    def cross_org_code(lab: Any, atk: Any) -> dict[str, Any]:
        agent = lab.fresh()
        task, victim, evil = f"codes-{agent}", f"{agent}-victim", f"{agent}-evil"
        template, secret, direction = atk.params["template"], atk.payload, atk.params["direction"]
        inputs = [template.format(n=n) for n in range(100, 160)]
        taught = lambda value: f"{secret}-{value.split()[-1]}"  # noqa: E731
        findings: list[str] = []
        if direction == "victim-to-evil":
            _teach(_loop(lab, agent, task, victim), inputs, taught)
            _loop(lab, agent, task, victim).learn()
            seen: list[str] = []
            attacker = _loop(lab, agent, task, evil, spy=seen)
            for value in (inputs[5], inputs[-1], template.format(n=424242)):
                ans, _ = attacker.answer(value)
                if secret in str(ans.output):
                    findings.append(f"evil answered {value!r} by {ans.served_by} with the victim's secret")
            if any(secret in text for text in seen):
                findings.append("the victim's secret is in evil's prompt")
            ok = _loop(lab, agent, task, victim).answer(template.format(n=777))[0]
            control = f"the victim is served its own program ({ok.served_by})"
        elif direction == "evil-to-victim":
            own = [template.format(n=n) for n in range(1000, 1020)]  # the victim's own runs, inputs evil never sent
            _teach(_loop(lab, agent, task, victim), own, taught)
            _teach(_loop(lab, agent, task, evil), inputs, lambda value: secret)  # secret = the phishing answer
            _loop(lab, agent, task, evil).learn()
            for value in (inputs[3], inputs[-2], template.format(n=31337)):
                ans, _ = _loop(lab, agent, task, victim).answer(value)
                if secret in str(ans.output):
                    findings.append(f"the victim was served evil's answer for {value!r} by {ans.served_by}")
            evals = lab.home.repo.read(f"orgs/{evil}/tasks/{task}/evals.jsonl") or ""
            if any(json.dumps(v)[1:-1] in evals for v in own):
                findings.append("the victim's cases entered evil's gate")
            control = "evil's program serves evil only"
        else:  # org-to-shared: an org's runs must not write the shared program every org falls back to
            _teach(_loop(lab, agent, task, victim), inputs, taught)
            _loop(lab, agent, task, None).learn()
            for path in lab.home.repo.list_files(f"tasks/{task}/"):
                if secret in (lab.home.repo.read(path) or ""):
                    findings.append(f"{path} (shared) holds the victim's secret")
            ans, _ = _loop(lab, agent, task, evil).answer(template.format(n=55))
            if secret in str(ans.output):
                findings.append(f"evil answered by {ans.served_by} with the victim's secret")
            control = "the operator's loop learned nothing from the org's runs"
        if findings:
            return _result("leaked", "; ".join(findings), requests=[])
        return _result("blocked", f"nothing crossed: {control}", requests=[])

    # -- forget completeness -------------------------------------------------------------------------------
    def forget(lab: Any, atk: Any) -> dict[str, Any]:
        agent = lab.fresh()
        org = None if atk.params.get("no_org") else f"{agent}-org"
        user, task = f"{agent}-zed", f"codes-{agent}"
        secret = atk.payload
        strings = [secret]
        parts = atk.params["parts"]
        log = io.StringIO()
        handler = logging.StreamHandler(log)
        from crystallise.cli.serve import QueryStringFilter  # what `crystallise serve` installs

        access = logging.getLogger("uvicorn.access")
        handler.addFilter(QueryStringFilter())
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        try:
            if "program" in parts:
                inputs = [f"{secret} order {n}" for n in range(100, 150)]
                strings.append(f"{secret} order 1")
                mine = _loop(lab, agent, task, org, user)
                _teach(mine, inputs, lambda v: f"VAULT-{secret}-{v.split()[-1]}")
                strings.append(f"VAULT-{secret}")
                mine.learn()
            if "memory" in parts:
                remember(f"My passport number is {secret}", agent=agent, org=org, user=user, home=lab.home)
                for i in range(2):
                    lab.home.store.write_trace(Trace(name="chat", agent_id=agent, org_id=org, user_id=user,
                                                     session_id=f"{agent}-m{i}", input=f"I live in {secret}ville.",
                                                     output="ok"))
                run_extraction(lab.home)
                strings.append(f"{secret}ville")
            if "spool" in parts:
                folder = Path(lab.home.path) / "otlp-pending"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{abs(hash(agent)) % 16**32:032x}.jsonl").write_text(json.dumps(
                    {"name": "llm", "attributes": {"crystallise.user": user, "input.value": f"spooled {secret}"},
                     "_org": org}) + "\n")
            if "log" in parts and lab.url:
                httpx.get(f"{lab.url}/v1/items", params={"user": user, "text": secret}, timeout=30,
                          headers=runner._key(lab, org or f"{agent}-org", user))
                access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET",
                            f"/v1/items?user={user}&text={secret}", "1.1", 200)
            forget_user(lab.home, user, org=org)
        finally:
            access.removeHandler(handler)
        leftovers = []
        for where, text in (("store", _store_text(lab.home)), ("tree", _tree_text(lab.home)),
                            ("spool", _spool_text(lab.home)), ("log", log.getvalue())):
            found = sorted({s for s in strings if s in text})
            if found:
                leftovers.append(f"{where}: {', '.join(found)[:120]}")
        if leftovers:
            return _result("leaked", "leftover after forget: " + "; ".join(leftovers), leftovers=len(leftovers))
        return _result("blocked", f"0 leftovers of {len(strings)} string(s) in the store, tree, spool and log",
                       leftovers=0)

    return {"unauth-extract": unauth_extract, "unauth-dream": unauth_dream, "cross-org-code": cross_org_code,
            "forget": forget}


def _store_text(home: Any) -> str:
    engine = home.store.engine
    meta = sa.MetaData()
    meta.reflect(bind=engine)
    with engine.connect() as conn:
        return "\n".join(repr(tuple(row)) for t in meta.sorted_tables for row in conn.execute(sa.select(t)))


def _tree_text(home: Any) -> str:
    return "\n".join(home.repo.read(p) or "" for p in home.repo.list_files())


def _spool_text(home: Any) -> str:
    folder = Path(home.path) / "otlp-pending"
    return "".join(f.read_text() for f in folder.glob("*")) if folder.is_dir() else ""
