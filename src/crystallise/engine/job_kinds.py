"""What each kind of job does: check its parameters and scope at submit time, then run the
engine function it wraps with the job's progress reporter.

    kind             wraps                                   scope                 who may queue it
    learn            Loop(...).learn()   (engine/loop.py)    agent / org           an org key (its org); admin
    dream            dream()             (engine/dream.py)   agent / org / user    org key: its org, its users;
                                                                                   agent level: admin
    extract          run_extraction()    (engine/extract.py) every new trace       admin
    skills           learn_skills()      (engine/skills.py)  agent / org           an org key (its org); admin
    promote          promote()           (engine/promote.py) agent / org           admin (proposals wait for review)
    weights-export   export_dataset()    (weights/dataset)   agent / org           admin
    weights-train    learn_adapter()     (engine/adapters)   agent / org           admin
    distill          star()              (engine/distill)    agent / org           admin

A user-bound key queues none of them: learning that reaches past one user's own memories is an
org's decision. Parameters are JSON; unknown ones are refused with the list of known ones. Each
runner returns the job's result: plain JSON with the versions committed and the change sets
proposed but not accepted (kept as evidence), so a person can follow either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crystallise.context.skill_learner import SkillLearner
from crystallise.engine import job_weights
from crystallise.engine.dream import dream
from crystallise.engine.extract import run_extraction
from crystallise.engine.home import Home
from crystallise.engine.jobctx import Reporter
from crystallise.engine.loop import KNOWN_LEARNERS, LEARNERS, Loop, LoopConfig
from crystallise.engine.promote import promote
from crystallise.engine.skills import learn_skills
from crystallise.engine.task_defs import metric_for
from crystallise.errors import NotFoundError, UserError, ValidationError
from crystallise.harness.spec import View
from crystallise.types import ChangeSet, Scope, Verdict, Version

__all__ = ["KINDS", "JobKind", "Refused", "check"]


class Refused(UserError):
    """The caller may not queue this job (answered 403)."""


@dataclass(frozen=True)
class JobKind:
    name: str
    params: dict[str, type | tuple[type, ...]]  # known parameter -> its JSON type(s)
    levels: tuple[str, ...]  # the scope levels it runs on ("global": one scope for the whole home)
    admin_only: bool
    run: Callable[[Home, Scope, dict[str, Any], Reporter], dict[str, Any]]
    about: str


def _versions(vs: list[Version | None]) -> list[int]:
    return [v.number for v in vs if v is not None and v.number]


def _not_accepted(css: list[ChangeSet]) -> list[dict[str, Any]]:
    return [{"changeset": c.id, "learner": c.learner, "status": c.status,
             "reason": c.verdict.reason if c.verdict else ""} for c in css
            if not (c.verdict and c.verdict.decision == "accept")]


def run_learn(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter) -> dict[str, Any]:
    spec = View.of(home.repo).spec(params["task"])
    if spec is None:
        raise NotFoundError(f"no task {params['task']!r}: define it with `crystallise tasks define` first")
    learners = tuple(params.get("learners") or LEARNERS)
    rep.progress(0.05, f"learn {spec.name} for {_scope_text(scope)}: learners {', '.join(learners)}")
    coder, coder_spec = home.role_backend("coder")  # the roles (docs/models.md): code by the coder,
    critic, critic_spec = home.role_backend("critic")  # reflection and prompt rewrites by the critic
    if coder is None:
        rep.progress(0.06, f"learn {spec.name}: {coder_spec}; model-free synthesis only")
    loop = Loop(home, spec, home.backend(), metric_for(spec),
                LoopConfig(scope=scope, learners=learners, coder_model=coder_spec if coder else None,
                           coder_problem=None if coder else coder_spec),
                reflect_backend=critic)
    report = loop.learn(progress=rep.steps(len(learners) + 2))
    rep.progress(0.98, f"learn {spec.name}: {report.line()}")
    return {"task": spec.name, "versions": _versions(list(report.committed)),
            "proposed": [c.id for c in report.proposed], "not_accepted": _not_accepted(report.proposed),
            "summary": report.line()}


def run_dream(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter) -> dict[str, Any]:
    report = dream(home, scope, since=params.get("since"), dry_run=bool(params.get("dry_run")),
                   progress=rep.steps(12))
    data = report.to_dict()
    versions = [s.get("version") for s in data.get("scopes", []) if s.get("version")]
    return {"dream": data.get("id"), "versions": versions, "totals": report.totals(),
            "scopes": [{k: s.get(k) for k in ("scope", "status", "changeset", "version")}
                       for s in data.get("scopes", [])]}


def run_extract(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter) -> dict[str, Any]:
    rep.progress(0.1, "extract: reading the traces recorded since the last extraction")
    totals = run_extraction(home, batch=int(params.get("batch", 500)))
    rep.progress(0.98, f"extract: {totals['traces']} traces read, {totals['changesets']} change sets committed")
    return {"totals": totals}


def run_skills(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter) -> dict[str, Any]:
    traces = home.store.list_traces(agent=scope.agent, org=scope.org, limit=int(params.get("limit", 10_000)),
                                    with_children=True)
    rep.progress(0.2, f"skills: {len(traces)} traces of {_scope_text(scope)}")
    learner = SkillLearner(min_traces=int(params.get("min_traces", 3)))
    results = learn_skills(home, traces, learner=learner, agent=scope.agent, org=scope.org)
    return {"versions": _versions([v for _, v in results]), "not_accepted": _not_accepted([c for c, _ in results])}


def run_promote(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter) -> dict[str, Any]:
    def gate(cs: ChangeSet) -> Verdict:  # a job never accepts a promotion for a person: it waits for review
        return Verdict(decision="needs_review", reason=f"{cs.evidence.get('distinct_users')} distinct users; "
                                                       "approve in `crystallise review`")

    rep.progress(0.2, f"promote: lessons held by several users of {_scope_text(scope)}")
    committed, held = promote(home, gate=gate, agent=scope.agent, org=scope.org)
    return {"versions": _versions(list(committed)), "not_accepted": _not_accepted(held)}


def run_weights(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter, *, train: bool) -> dict[str, Any]:
    return job_weights.run(home, scope, params, rep, train=train)


def run_distill(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter) -> dict[str, Any]:
    return job_weights.distill(home, scope, params, rep)


def _scope_text(scope: Scope) -> str:
    return "/".join(v for v in (scope.agent, scope.org, scope.user) if v)


KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("learn", {"task": str, "learners": list}, ("agent", "org"), False, run_learn,
            "a task's loop: credit, lifecycle, crystallise, few-shot, reflection; gated, committed"),
    JobKind("dream", {"since": (str, int), "dry_run": bool}, ("agent", "org", "user"), False, run_dream,
            "offline learning over a scope's new traces"),
    JobKind("extract", {"batch": int}, ("global",), True, run_extract,
            "implicit extraction of memories from every new trace"),
    JobKind("skills", {"min_traces": int, "limit": int}, ("agent", "org"), False, run_skills,
            "skills from procedures that keep succeeding"),
    JobKind("promote", {}, ("agent", "org"), True, run_promote,
            "lessons several users hold, proposed for review"),
    JobKind("weights-export", {"task": str}, ("agent", "org"), True,
            lambda h, s, p, r: run_weights(h, s, p, r, train=False), "verified runs -> an SFT dataset in the home"),
    JobKind("weights-train", {"task": str, "steps": int, "base": str}, ("agent", "org"), True,
            lambda h, s, p, r: run_weights(h, s, p, r, train=True), "train, gate and commit the scope's adapter"),
    JobKind("distill", {"task": str, "rounds": int, "steps": int, "base": str}, ("agent", "org"), True, run_distill,
            "STaR rounds over a task's verified runs, gated between rounds"),
)}


def check(kind: str, scope: Scope, params: Any, *, admin: bool, user_key: bool) -> tuple[JobKind, dict[str, Any]]:
    """The job kind and its checked parameters, or a clear ValidationError / Refused."""
    if kind not in KINDS:
        raise ValidationError(f"unknown job kind {kind!r}: use one of {', '.join(KINDS)}")
    jk = KINDS[kind]
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValidationError(f"job parameters must be a JSON object (for {kind}: {', '.join(jk.params) or 'none'})")
    unknown = sorted(set(params) - set(jk.params))
    if unknown:
        raise ValidationError(f"unknown parameter(s) {', '.join(unknown)} for a {kind} job: it takes "
                              f"{', '.join(jk.params) or 'none'}")
    for name, value in params.items():
        want = jk.params[name]
        if not isinstance(value, want) or isinstance(value, bool) and want is int:
            raise ValidationError(f"parameter {name!r} of a {kind} job has the wrong type: expected "
                                  f"{_type_name(want)}")
    if kind in ("learn", "weights-export", "weights-train", "distill") and "task" not in params:
        raise ValidationError(f"a {kind} job needs the task's name: params {{\"task\": \"NAME\"}}")
    if "learners" in params and (not params["learners"] or any(x not in KNOWN_LEARNERS for x in params["learners"])):
        raise ValidationError(f"learners must be a non-empty list of {', '.join(KNOWN_LEARNERS)}")
    if user_key:
        raise Refused("a user-bound key cannot start learning jobs: learning reaches past one user's memories "
                      "and is the org's decision; use the org's key")
    level = "global" if "global" in jk.levels else scope.level
    if level not in jk.levels:
        raise ValidationError(f"a {kind} job runs on {' or '.join(jk.levels)} scopes, not a {level} scope")
    if (jk.admin_only or level == "global" or (level == "agent" and kind != "promote")) and not admin:
        what = "every org's agents" if level in ("agent", "global") else "the whole deployment"
        raise Refused(f"a {kind} job on this scope changes what {what} see: it needs the admin key")
    return jk, params


def _type_name(want: type | tuple[type, ...]) -> str:
    names = {str: "string", int: "integer", bool: "boolean", list: "list", dict: "object"}
    types = want if isinstance(want, tuple) else (want,)
    return " or ".join(names.get(t, t.__name__) for t in types)
