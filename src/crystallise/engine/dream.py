"""Offline dreaming: learn in batch from the traces since a watermark, per scope.

    report = dream(home)                                   # every scope with new traces
    report = dream(home, scope=Scope(agent="support", org="acme"), dry_run=True)
    crystallise dream --org acme --agent support --json    # the same from the CLI

One run, in order:

    0. resume     a run of this scope killed after proposing: finished if its change set
                  committed (recovery included), abandoned (nothing applied) otherwise
    1. credit     every trace since `dream:usage` (all scopes): items it showed earn helpful /
                  harmful, logged once per (trace, item) — idempotent (context/credit.py)
    2. per scope, over the traces whose own scope it is (a user's runs teach that user; an
       org's runs without a user teach the org; runs with neither teach the agent), since the
       scope's watermark `dream/<level>/<owner>` (or `since`):
         critiques  a Reflexion-style critique of each failed run (the home's model) -> deltas
         curation   add / update / merge / supersede / retire against the scope's items
         dedup      embedding + lexical duplicates merged (provenance and counts of both)
         forgetting harm > help, unused for a window, over the token budget by lowest value
       -> one change set -> the gate -> the Committer (agent/org: a version; user: the user ledger)
    3. finish     the run record, the processed traces and the watermark, in one transaction,
                  only after the change set committed

Idempotent: a re-run over the same traces proposes nothing — the watermark skips them, the
processed-trace records skip them under `since`, and every delta is keyed on its cause
(`meta.dream_causes`). Resumable: a kill -9 anywhere leaves the store and repository
consistent (the Committer journals and recovers) and the next run finishes the work without
duplicating a delta (bench/faults.py `dream`). The run records (`Store.list_dream_runs`) say
what each run read, did and committed; they live in the store, not git, because user-level
runs must be deletable with the user and the API lists them by scope.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from crystallise.context.credit import failed, usage_rows
from crystallise.context.critique import Critic, Critique, LLMCritic
from crystallise.context.curate import DreamPolicy, Embed, Plan, evidence_gate
from crystallise.context.items import content_words, same_scope, validate_scope
from crystallise.context.reflect import shown_items
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.engine.scope import quotes_run, review_only
from crystallise.errors import ArtifactError, BackendError, NotFoundError, UserError, ValidationError
from crystallise.governance.review import PendingReview
from crystallise.types import ChangeSet, Item, Scope, Trace, Verdict, new_id, now

try:  # pragma: no cover - always there on POSIX
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["DreamReport", "ScopeReport", "dream", "evidence_gate", "parse_since", "scope_key"]

USAGE_WATERMARK = "dream:usage"
STATUSES = ("active", "quarantined", "retired", "candidate")
KINDS = ("add", "update", "merge", "supersede", "retire")
BATCH = 500
Gate = Callable[[ChangeSet], Verdict]
Progress = Callable[[str], None]


@dataclass
class ScopeReport:
    """What one scope's dream did: read, proposed, committed."""

    scope: dict[str, Any]
    key: str
    run_id: str = ""
    status: str = "nothing"  # nothing | committed | held | rejected | dry_run | failed
    since_seq: int = 0
    until_seq: int = 0
    traces: int = 0
    failures: int = 0
    critiqued: int = 0
    critique_errors: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    retired: dict[str, int] = field(default_factory=dict)
    tokens_before: int = 0
    tokens_after: int = 0
    changeset_id: str | None = None
    version: int | None = None
    verdict: str = ""
    rejected: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def changes(self) -> int:
        return sum(self.counts.values())


@dataclass
class DreamReport:
    """A dream run over one or more scopes (`to_dict` is what `--json` prints and the API returns)."""

    id: str
    dry_run: bool
    started_at: float
    finished_at: float = 0.0
    credit: dict[str, int] = field(default_factory=dict)
    # the same counts per org of the credited traces ("" for traces of no org): an org key is shown its own
    credit_by_org: dict[str, dict[str, int]] = field(default_factory=dict)
    scopes: list[ScopeReport] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for s in self.scopes:
            total.update(s.counts)
        return {k: total.get(k, 0) for k in KINDS}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "totals": self.totals()}


# -- scopes, since, lock -------------------------------------------------------------------------


def scope_key(scope: Scope) -> str:
    """The owner a scope's items belong to, as a watermark-safe name ('/' never occurs in ids).

    >>> scope_key(Scope(agent="a", org="acme", user="u1")), scope_key(Scope(agent="a"))
    ('user/acme/u1', 'agent/a')
    """
    if scope.level == "user":
        return f"user/{scope.org or '-'}/{scope.user}"
    if scope.level == "org":
        return f"org/{scope.org}"
    return f"agent/{scope.agent}"


def own_scope(trace: Trace) -> Scope:
    return Scope(agent=trace.agent_id, org=trace.org_id, user=trace.user_id)


def _owns(scope: Scope, trace: Trace) -> bool:
    return scope_key(own_scope(trace)) == scope_key(scope)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


MAX_SEQ = 2**63 - 1  # trace seqs are 64-bit integers in both stores


def parse_since(since: Any, *, at: float | None = None) -> tuple[str, float] | None:
    """`since` as ("seq", n) or ("time", epoch seconds); None means "from the watermark".

    Accepts an int (a trace seq), a float or datetime (a time), or a string: "seq:120",
    "120", an ISO date/time ("2026-11-30", "2026-11-30T12:00"), or a duration back from now
    ("36h", "7d", "2w").

    >>> parse_since("seq:5"), parse_since(7), parse_since("2d", at=200000.0)
    (('seq', 5), ('seq', 7), ('time', 27200.0))
    """
    if since is None:
        return None
    if isinstance(since, bool):
        raise ValidationError(f"since must be a trace seq, a time or a duration, not {since!r}")
    if isinstance(since, int):
        if not 0 <= since <= MAX_SEQ:
            raise ValidationError(f"since seq must be between 0 and {MAX_SEQ} (a trace seq), not {since}")
        return ("seq", since)
    if isinstance(since, float):
        return ("time", since)
    if isinstance(since, dt.datetime):
        return ("time", since.timestamp())
    if isinstance(since, str):
        text = since.strip().lower()
        if text.startswith("seq:"):
            text = text[4:]
        if text.isdigit():
            return parse_since(int(text))
        m = _DURATION.fullmatch(text)
        if m:
            unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
            return ("time", (at if at is not None else now()) - float(m.group(1)) * unit)
        try:
            when = dt.datetime.fromisoformat(since.strip())
        except ValueError:
            pass
        else:
            return ("time", (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp())
    raise ValidationError(
        f"since {since!r} is not understood: give a trace seq (120 or seq:120), an ISO date/time "
        "(2026-11-30 or 2026-11-30T12:00) or a duration back from now (36h, 7d)"
    )


@contextlib.contextmanager
def _dream_lock(home: Home) -> Iterator[None]:
    """One dream at a time per home (the OS drops the lock of a killed process)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = home.path / "dream.lock"
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `crystallise dream` is running on {home.path}: wait for it to finish "
                            f"(lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- the run -----------------------------------------------------------------------------------------


def dream(
    home: Home,
    scope: Scope | None = None,
    since: Any = None,
    dry_run: bool = False,
    *,
    backend: Any = None,
    critic: Critic | None = None,
    gate: Gate | None = None,
    policy: DreamPolicy | None = None,
    embed: Embed | None = None,
    at: float | None = None,
    progress: Progress | None = None,
    on_step: Callable[[str], None] | None = None,
) -> DreamReport:
    """Dream over `scope` (None: every scope with new traces) and return what it did.

    `since` overrides the watermark (see `parse_since`); `dry_run` writes nothing (credit
    included) and reports what would change. The critic defaults to an `LLMCritic` on
    `backend` (default: the home's model); `gate` to `evidence_gate`; `policy` to the
    home's `config.json` `"dream"`; `embed` to the home's embedder; `at` (now) is the
    time the forgetting policy measures windows from. `on_step(point)` is called at the named
    points "before-commit" and "after-commit" of each scope (tests and bench/faults.py kill a run there).

    >>> report = dream(home, Scope(agent="support"), dry_run=True)      # doctest: +SKIP
    >>> report.totals()                                                  # doctest: +SKIP
    {'add': 2, 'update': 0, 'merge': 1, 'supersede': 0, 'retire': 3}
    """
    if scope is not None:
        if not isinstance(scope, Scope):
            raise ValidationError(f"scope must be a crystallise.types.Scope, not {type(scope).__name__}")
        scope = validate_scope(scope.agent, scope.org, scope.user)
    window = parse_since(since, at=at)
    policy = policy or DreamPolicy.from_config(home.config)
    say = progress or (lambda _msg: None)
    report = DreamReport(id=new_id("dr_"), dry_run=dry_run, started_at=now())
    with _dream_lock(home):
        committer = None if dry_run else Committer(home)  # recovery of a version killed mid-commit runs here
        pending, touched = _credit(home, dry_run, report, say, owner=scope.org if scope is not None else None)
        scopes = [scope] if scope is not None else _scopes_with_work(home, touched)
        if not scopes:
            say("dream: no scope has new traces")
        the_critic = critic
        for s in scopes:
            if the_critic is None:
                the_critic = LLMCritic(backend if backend is not None else _critic_backend(home, say))
            run = _ScopeRun(home, s, window, dry_run, the_critic, gate, policy, embed, at, pending, report.id, say,
                            on_step)
            report.scopes.append(run.go(committer))
    report.finished_at = now()
    return report


def _critic_backend(home: Home, say: Progress) -> Any:
    """The critic role's model (docs/models.md); the answer model, said so, when it is not available."""
    backend, spec = home.role_backend("critic")
    if backend is not None:
        return backend
    say(f"dream: {spec}; the answer model critiques instead")
    return home.backend()


def _credit(home: Home, dry_run: bool, report: DreamReport, say: Progress,
            owner: str | None = None) -> tuple[Counter[str], set[str]]:
    """Credit every trace since the usage watermark; returns (pending in-memory credit for a dry run, items).
    The progress line counts `owner`'s traces only when the dream is an org's (its job log is that org key's
    to read, engine/access.py `report_for`); the report keeps every org's (`credit_by_org`)."""
    store = home.store
    mark = store.get_watermark(USAGE_WATERMARK)
    pending: Counter[str] = Counter()
    touched: set[str] = set()
    totals = {"traces": 0, "new": 0, "helpful": 0, "harmful": 0}
    by_org: dict[str, dict[str, int]] = {}
    while True:
        batch = store.list_traces(after_seq=mark, limit=BATCH, with_children=True)
        if not batch:
            break
        top = max(t.seq or 0 for t in batch)
        groups: dict[str, list[Trace]] = {}
        for t in batch:
            groups.setdefault(t.org_id or "", []).append(t)
        for n, (org, traces) in enumerate(sorted(groups.items())):
            rows = usage_rows(traces)
            if dry_run:
                have = store.usage_pairs([t.id for t in traces])
                fresh = [r for r in rows if (r[0], r[1]) not in have]
                for _, item_id, outcome, _ in fresh:
                    pending[f"{item_id}:{'helpful' if outcome > 0 else 'harmful'}"] += outcome != 0
                counts = {"new": len(fresh), "helpful": sum(r[2] > 0 for r in fresh),
                          "harmful": sum(r[2] < 0 for r in fresh)}
            else:  # the watermark moves with the batch's last group (a crash between re-credits nothing)
                counts = store.record_usage(rows, watermark=(USAGE_WATERMARK, top) if n == len(groups) - 1
                                            else None)
            touched |= {r[1] for r in rows}
            mine = by_org.setdefault(org, {"traces": 0, "new": 0, "helpful": 0, "harmful": 0})
            mine["traces"] += len(traces)
            totals["traces"] += len(traces)
            for k in ("new", "helpful", "harmful"):
                totals[k] += counts[k]
                mine[k] += counts[k]
        mark = top
    report.credit = totals
    report.credit_by_org = by_org
    shown = totals if owner is None else by_org.get(owner, {"traces": 0, "helpful": 0, "harmful": 0})
    if shown["traces"]:
        whose = "" if owner is None else f" of org {owner}"
        say(f"credit: {shown['traces']} trace(s){whose}, +{shown['helpful']} helpful, +{shown['harmful']} harmful")
    return pending, touched


def _scopes_with_work(home: Home, touched: set[str]) -> list[Scope]:
    """Scopes with traces past their watermark, plus the agent/org owners of items just credited."""
    store = home.store
    marks = store.watermarks_with_prefix("dream/")
    found: dict[str, Scope] = {}
    for agent, org, user, top in store.trace_scopes():
        s = Scope(agent=agent, org=org, user=user)
        key = scope_key(s)
        if top > marks.get(f"dream/{key}", 0):
            found.setdefault(key, s)
    for item in store.items_by_ids(sorted(touched)).values() if touched else []:
        if item.level in ("agent", "org"):
            s = Scope(agent=item.agent_id, org=item.org_id if item.level == "org" else None)
            found.setdefault(scope_key(s), s)
    return [found[k] for k in sorted(found)]


class _ScopeRun:
    """One scope's part of a dream run (see the module docstring)."""

    def __init__(self, home: Home, scope: Scope, window: tuple[str, float] | None, dry_run: bool, critic: Critic,
                 gate: Gate | None, policy: DreamPolicy, embed: Embed | None, at: float | None,
                 pending: Counter[str], batch_id: str, say: Progress,
                 on_step: Callable[[str], None] | None = None) -> None:
        self.home, self.store, self.scope = home, home.store, scope
        self.key = scope_key(scope)
        self.mark = f"dream/{self.key}"
        self.window, self.dry_run, self.critic, self.policy = window, dry_run, critic, policy
        self.gate = gate or (lambda cs: evidence_gate(cs, policy))
        self.embed = embed
        self.at = at if at is not None else now()
        self.pending = pending
        self.batch_id = batch_id
        self.say = say
        self.step = on_step or (lambda point: None)
        self.report = ScopeReport(scope=scope.to_dict(), key=self.key, run_id=new_id("dsr_"))
        self.started = now()

    def go(self, committer: Any) -> ScopeReport:
        r = self.report
        try:
            if not self.dry_run:
                self._resume()
            self._plan_and_commit(committer)
        except (ArtifactError, BackendError) as error:  # a stale plan, an unreachable model: this scope only
            r.status, r.error = "failed", f"{type(error).__name__}: {error}"
            self.say(f"{self.key}: failed — {r.error}")
            if not self.dry_run:
                self._save("failed")
        return r

    # -- 0. resume -------------------------------------------------------------------------------
    def _resume(self) -> None:
        for run in self.store.list_dream_runs(scope_key=self.key, status="planned", limit=100):
            try:
                cs = self.store.get_changeset(run["changeset_id"]) if run.get("changeset_id") else None
            except NotFoundError:
                cs = None
            saved = run.get("report") or {}
            traces = saved.get("_trace_ids", [])
            if cs is not None and cs.status in ("committed", "needs_review"):
                run["status"] = "committed" if cs.status == "committed" else "held"
                if cs.status == "committed" and cs.scope.level != "user":
                    run["version"] = next((v.number for v in self.store.list_versions(limit=100_000)
                                           if v.changeset_id == cs.id), None)
                run["finished_at"] = now()
                self.store.finish_dream_run(run, watermark=self.mark, value=int(run["until_seq"]), trace_ids=traces)
                self.report.resumed.append(f"{run['id']}: {run['status']} (finished after an interrupted run)")
                self.say(f"{self.key}: finished interrupted run {run['id']} ({run['status']})")
            else:
                run["status"], run["finished_at"] = "abandoned", now()
                self.store.save_dream_run(run)
                self.report.resumed.append(f"{run['id']}: abandoned (its change set never committed; re-planned)")

    # -- 1-2. read, critique, curate ------------------------------------------------------------------
    def _traces(self) -> list[Trace]:
        r = self.report
        start = self.store.get_watermark(self.mark)
        after_time = None
        if self.window is not None:
            kind, value = self.window
            start, after_time = (int(value), None) if kind == "seq" else (0, value)
        r.since_seq = start
        s = self.scope
        filters = {"user": s.user} if s.level == "user" else {"org": s.org} if s.level == "org" else {"agent": s.agent}
        out: list[Trace] = []
        mark = start
        failures = 0
        last_owned = start  # processed ones included: the watermark passes them too
        while True:
            batch = self.store.list_traces(after_seq=mark, limit=BATCH, with_children=True, **filters)
            if not batch:
                break
            mark = max(t.seq or 0 for t in batch)
            mine = [t for t in batch if _owns(s, t) and (after_time is None or t.started_at >= after_time)]
            done = self.store.dream_processed(self.key, [t.id for t in mine]) if mine else set()
            for t in mine:
                if t.id in done:
                    last_owned = max(last_owned, t.seq or 0)
                    continue
                if failed(t):
                    if failures >= self.policy.max_critiques:  # the rest waits for the next run
                        r.until_seq = last_owned
                        return out
                    failures += 1
                out.append(t)
                last_owned = max(last_owned, t.seq or 0)
        r.until_seq = max(last_owned, self.store.get_watermark(self.mark))
        return out

    def _items(self) -> list[Item]:
        s = self.scope
        found = self.store.query_items(agent=s.agent, org=s.org, user=s.user, levels=(s.level,), status=STATUSES,
                                       limit=1_000_000)
        items = [it for it in found if same_scope(it, s)]
        if self.pending:  # a dry run: the credit it would have written
            import dataclasses

            items = [dataclasses.replace(it, helpful=it.helpful + self.pending.get(f"{it.id}:helpful", 0),
                                         harmful=it.harmful + self.pending.get(f"{it.id}:harmful", 0))
                     for it in items]
        return items

    def _context_for(self, trace: Trace, plan: Plan) -> tuple[list[Item], list[str]]:
        """The scope's items the trace showed, then a few related ones (by shared words with its input)."""
        shown = [i for i in shown_items(trace) if i in plan.view]
        chosen = [plan.view[i] for i in shown if plan.view[i].status == "active"]
        words = content_words(str(trace.input)[:3000])
        related = sorted((it for it in plan.active() if it.id not in shown),
                         key=lambda it: (-len(words & content_words(it.text)), it.id))
        chosen += [it for it in related[: max(0, 8 - len(chosen))] if words & content_words(it.text)]
        return chosen[:12], shown

    def _plan(self) -> tuple[Plan, list[Trace]]:
        r = self.report
        traces = self._traces()
        r.traces = len(traces)
        plan = Plan(self.scope, self._items(), self.policy)
        r.tokens_before = plan.tokens()
        to_critique = sum(1 for t in traces if failed(t))
        if to_critique:
            self.say(f"{self.key}: {len(traces)} trace(s), critiquing {to_critique} failed run(s)")
        for t in traces:
            if not failed(t):
                continue
            r.failures += 1
            if plan.done(f"critique:{t.id}"):
                continue  # applied by a run that was killed before it finished: never twice
            self.say(f"{self.key}: critique {r.failures}/{to_critique}")  # one model call each: minutes in all
            items, shown = self._context_for(t, plan)
            critique: Critique = self.critic.critique(t, items)
            if critique.error:
                r.critique_errors += 1
                r.rejected.append(f"{t.id}: no critique ({critique.error})")
                continue
            r.critiqued += 1
            plan.apply_critique(critique, shown)
        if self.embed is None:
            self.embed = self.home.embedder().embed
        self.say(f"{self.key}: curating {len(plan.active())} item(s): dedup, forgetting")
        plan.dedup(self.embed)
        live = [it.id for it in plan.active()]
        plan.forget(self.store.last_used(live) if live else {}, self.at)
        r.tokens_after = plan.tokens()
        r.counts = {k: plan.counts.get(k, 0) for k in KINDS}
        r.retired = dict(plan.retired)
        r.rejected += plan.rejected
        return plan, traces

    # -- 3. commit and finish --------------------------------------------------------------------------
    def _plan_and_commit(self, committer: Any) -> None:
        r = self.report
        plan, traces = self._plan()
        self.say(f"{self.key}: {r.traces} trace(s), {r.failures} failed, {r.critiqued} critiqued; "
                 + ", ".join(f"{k} {v}" for k, v in r.counts.items() if v) if r.changes else
                 f"{self.key}: {r.traces} trace(s), {r.failures} failed, nothing to change")
        if self.dry_run:
            r.status = "dry_run"
            return
        trace_ids = [t.id for t in traces]
        self._hold_quotations(plan, traces)
        if not plan.deltas:
            r.status = "nothing"
            self._finish("nothing", trace_ids)
            return
        cs = ChangeSet(
            learner="dream", layer="context", deltas=list(plan.deltas.values()), scope=self.scope,
            summary=(f"dream {self.key}: " + ", ".join(f"{k} {v}" for k, v in r.counts.items() if v))[:200],
            provenance=list(plan.provenance),
            evidence={"dream_run": r.run_id, "counts": r.counts, "retired": r.retired, "causes": plan.causes,
                      "retirements": plan.retirements[:200], "review": plan.review[:200], "traces": len(traces),
                      "since_seq": r.since_seq,
                      "until_seq": r.until_seq, "tokens": {"before": r.tokens_before, "after": r.tokens_after}},
        )
        cs.verdict = self.gate(cs)
        r.changeset_id, r.verdict = cs.id, cs.verdict.reason
        self._save("planned", trace_ids)  # before the commit: a killed run is finished or abandoned by the next
        self.step("before-commit")
        if cs.verdict.decision != "accept":
            cs.status = "rejected" if cs.verdict.decision == "reject" else "needs_review"
            self.store.save_changeset(cs)
            self._finish("rejected" if cs.verdict.decision == "reject" else "held", trace_ids)
            return
        try:
            version = committer.commit(cs)
        except PendingReview:
            self._finish("held", trace_ids)
            return
        self.step("after-commit")
        r.version = version.number or None
        self._finish("committed", trace_ids)

    def _hold_quotations(self, plan: Plan, traces: list[Trace]) -> ChangeSet | None:
        """Take out of the plan the org/agent-level lessons that repeat the words of a run nobody
        answers for (engine/scope.review_only, .quotes_run): they are that run's text becoming an
        item, so they wait in review as their own change set, never live by themselves (issue 15)."""
        if self.scope.level == "user":
            return None
        unvouched = {t.id: t for t in traces if review_only(t)}
        held = []
        for key, delta in list(plan.deltas.items()):
            text = (delta.after or {}).get("text") if delta.op in ("add", "update", "merge", "supersede") else None
            causes = [c.split(":", 1)[1] for c in plan.causes.get(key, []) if ":" in c]
            if isinstance(text, str) and any(c in unvouched and quotes_run(text, unvouched[c]) for c in causes):
                held.append(plan.deltas.pop(key))
        if not held:
            return None
        reason = (f"{len(held)} lesson(s) repeat the words of runs with no authenticated user: "
                  "released by review only (nobody answers for these words)")
        cs = ChangeSet(learner="dream", layer="context", deltas=held, scope=self.scope, status="needs_review",
                       summary=f"dream {self.key}: {len(held)} lesson(s) quoting unvouched runs"[:200],
                       provenance=[t for t in plan.provenance if t in unvouched],
                       evidence={"dream_run": self.report.run_id, "held": "quotes unvouched runs"},
                       verdict=Verdict(decision="needs_review", reason=reason))
        if not self.dry_run:
            self.store.save_changeset(cs)
        self.report.rejected.append(f"held for review: {reason} (change set {cs.id})")
        return cs

    def _row(self, status: str, trace_ids: Sequence[str] = ()) -> dict[str, Any]:
        r, s = self.report, self.scope
        saved = {k: v for k, v in asdict(r).items()}
        saved["_trace_ids"] = list(trace_ids)
        return {"id": r.run_id, "batch_id": self.batch_id, "scope_key": self.key, "level": s.level,
                "agent_id": s.agent, "org_id": s.org, "user_id": s.user, "status": status,
                "since_seq": r.since_seq, "until_seq": r.until_seq, "changeset_id": r.changeset_id,
                "version": r.version, "report": saved, "started_at": self.started,
                "finished_at": None if status == "planned" else now()}

    def _save(self, status: str, trace_ids: Sequence[str] = ()) -> None:
        self.store.save_dream_run(self._row(status, trace_ids))

    def _finish(self, status: str, trace_ids: Sequence[str]) -> None:
        self.report.status = status
        self.store.finish_dream_run(self._row(status, trace_ids), watermark=self.mark, value=self.report.until_seq,
                                    trace_ids=trace_ids)
