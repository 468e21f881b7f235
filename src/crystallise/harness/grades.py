"""Grades on the verifiability gradient: the evidence behind a task's grade, and the pure rules that move it.

Everything here is a plain function over plain data (STYLE.md: pure core); the loop
gathers the inputs from the store and the artifact repository and commits the moves.

    answers  = answer_records(traces, "ratio")            # one per task span: served_by, fallback, truth
    shadows  = shadow_records(shadow_traces)               # trace id -> what the LLM said beside the code
    ev       = evidence(spec, answers, shadows, artifacts, metric, policy)
    move     = decide(ev, policy)                          # GradeMove | None
    next_moves(ev, policy)   # ['G4 → G5 after 500 code answers with no fallback; currently 212', ...]

The rules (`decide`), with the defaults of `GradePolicy`:

    G5  any verified disagreement, or any answer the code could not give  -> soften to G4
    G4  drift: >= 3 of the 20 most recent verified code answers wrong, over 10 %, and
        significantly more often than the program's earlier answers (one-sided Fisher exact
        test, p <= 0.01; a program with no earlier record is held to the 10 %)
                                                                          -> soften to the LLM grade
        too wrong: over 10 % of the window's verified code answers wrong (>= 3), unless shadow
        checks show the LLM doing worse on those same inputs              -> soften to the LLM grade
        the code fails (raises, breaks the schema) on > 50 % of >= 20 tries -> soften to the LLM grade
        (opt-in) shadow disagreement rate above a threshold                 -> soften to the LLM grade
        500 code answers in a row, no fallback, no verified disagreement    -> crystallise to G5
    G2+ a verified answer the learned output schema rejects                -> drop the schema (soften)
    <G3 an eval suite of >= 20 cases with verifiers                        -> G3

Abstaining is what G4 is for (the LLM answers inputs the program was not verified on), so
abstentions do not soften G4; they do stop the G5 streak, and at G5 any one softens to G4.
A program that is right more often than the LLM on the same inputs is not softened for a
steady error rate (the gate let it in for being better); it is softened when its error rate
rises, which is what drift looks like.

"The LLM grade" is the highest grade below G4 whose artifacts exist: G3 with an eval
suite of `min_eval_cases`, else G2 with a constrained output schema, else G1 with
verified examples, else G0. Softening keeps `code.py` in the repository (it is evidence
and `crystallise revert` can bring it back) but the runtime serves code only at G4/G5.

Rates are taken over a window of the most recent answers (`policy.window`); the code
figures count only answers given by the current program (its hash is on each span),
so a re-crystallised program starts with a clean record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from crystallise.errors import ValidationError
from crystallise.harness.runtime import constrains_text
from crystallise.harness.answers import AnswerRecord, ShadowRecord, answer_records, shadow_records, truth_of
from crystallise.harness.spec import GRADES, TaskSpec

__all__ = [
    "DEFAULT_POLICY",
    "AnswerRecord",
    "GradeMove",
    "GradePolicy",
    "ShadowRecord",
    "TaskArtifacts",
    "TaskEvidence",
    "answer_records",
    "decide",
    "evidence",
    "llm_grade",
    "next_moves",
    "shadow_records",
    "truth_of",
]

@dataclass(frozen=True)
class GradePolicy:
    """When a task moves along the gradient, and how much serving is shadow-checked.

    window                   answers (most recent first) the rates are computed over.
    recent                   the disagreement rule also looks at this many most recent verified code
                             answers, so drift is caught before it fills the long window (0: off).
    max_disagreement_rate    G4 softens above this share of verified code answers being wrong ...
    min_disagreements        ... once at least this many disagreed (one unlucky answer is no drift).
    drift_alpha              significance of "recent answers are wrong more often than earlier ones".
    max_fallback_rate        G4 softens when the code fails (raises, breaks the schema) more often than this ...
    min_code_attempts        ... over at least this many inputs the code was tried on.
    promote_after            G4 -> G5 after this many code answers in a row, no fallback, no disagreement.
    g5_max_disagreements     G5 -> G4 when more verified disagreements than this (0: any one).
    g5_max_fallbacks         G5 -> G4 when the code failed to answer more often than this (0: any one).
    max_shadow_disagreement_rate   opt-in: soften G4 when unverified shadow checks disagree this often
                             (None: shadow disagreements inform, verified feedback decides).
    min_shadow_checks        ... over at least this many shadow checks.
    shadow_rate              share of code answers the LLM answers too, off the hot path.
    min_eval_cases           an eval suite this large makes a task G3.
    min_new_cases            verified disagreements wait until this many can be recorded as eval cases
                             in one version (a grade move records them at once).

    >>> GradePolicy(promote_after=50).promote_after
    50
    """

    window: int = 200
    recent: int = 20
    max_disagreement_rate: float = 0.10
    min_disagreements: int = 3
    drift_alpha: float = 0.01
    max_fallback_rate: float = 0.5
    min_code_attempts: int = 20
    promote_after: int = 500
    g5_max_disagreements: int = 0
    g5_max_fallbacks: int = 0
    max_shadow_disagreement_rate: float | None = None
    min_shadow_checks: int = 10
    shadow_rate: float = 0.05
    min_eval_cases: int = 20
    min_new_cases: int = 5

    def __post_init__(self) -> None:
        for name in ("max_disagreement_rate", "max_fallback_rate", "shadow_rate", "drift_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValidationError(f"GradePolicy.{name} must be in [0, 1], e.g. 0.1; got {value!r}")
        rate = self.max_shadow_disagreement_rate
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1):
            raise ValidationError(f"GradePolicy.max_shadow_disagreement_rate must be None or in [0, 1]; got {rate!r}")
        for name in ("window", "recent", "min_new_cases", "min_disagreements", "min_code_attempts", "promote_after",
                     "min_eval_cases",
                     "min_shadow_checks", "g5_max_disagreements", "g5_max_fallbacks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"GradePolicy.{name} must be an integer >= 0; got {value!r}")
        if self.window < 1:
            raise ValidationError("GradePolicy.window must be at least 1 answer")


DEFAULT_POLICY = GradePolicy()

# ---------------------------------------------------------------- evidence


@dataclass(frozen=True)
class TaskArtifacts:
    """What the artifact repository holds for a task (counts, not contents)."""

    examples: int = 0
    eval_cases: int = 0
    eval_case_ids: frozenset[str] = frozenset()
    verifiers: tuple[str, ...] = ()  # verifier kinds used by the suite
    code_sha: str | None = None  # of tasks/<name>/code.py, whether served or not
    verified_cases: int = 0  # inputs with a known right answer, over the whole history
    learned_schema: bool = False  # tasks/<name>/schema.json: the output schema was learned (G2), not given


@dataclass
class TaskEvidence:
    """A task's grade and the evidence for it over the window (see `evidence`)."""

    task: str
    grade: str
    window: int = 0  # answers in the window
    served: dict[str, int] = field(default_factory=lambda: {"code": 0, "llm": 0, "none": 0})
    coverage: float = 0.0  # share of the window's answers served by code
    code_attempts: int = 0  # answers of the current program where the code ran
    fallbacks: dict[str, int] = field(default_factory=lambda: {"abstain": 0, "exception": 0, "schema": 0})
    fallback_rate: float = 0.0
    fallback_ids: list[str] = field(default_factory=list)
    verified: int = 0  # answers in the window whose outcome is known
    accuracy: float | None = None  # share of those that were right
    code_verified: int = 0  # code answers of the current program whose outcome is known
    disagreements: int = 0  # ... that feedback says were wrong
    disagreement_rate: float = 0.0
    disagreement_ids: list[str] = field(default_factory=list)
    first_disagreement_seq: int | None = None  # where drift began, as far as the window shows
    recent_code_verified: int = 0  # the policy's most recent verified code answers ...
    recent_disagreements: int = 0  # ... and how many of them disagreed
    shadow_verified: int = 0  # shadow checks whose right answer feedback gave ...
    shadow_llm_right: int = 0  # ... how often the LLM was right on them ...
    shadow_code_right: int = 0  # ... and how often the code was
    shadow_checks: int = 0
    shadow_disagreements: int = 0
    shadow_disagreement_rate: float = 0.0
    streak: int = 0  # most recent code answers in a row at this grade: no fallback, no disagreement
    streak_ids: list[str] = field(default_factory=list)  # their trace ids (the newest 1000)
    verified_cases: int = 0
    eval_cases: int = 0
    verifiers: list[str] = field(default_factory=list)
    examples: int = 0
    schema: bool = False  # the output schema constrains the answer beyond "a string"
    learned_schema: bool = False  # ... and it was learned (G2), so it may be dropped again
    schema_violations: int = 0  # verified answers in the window the schema rejects
    schema_violation_ids: list[str] = field(default_factory=list)
    code: bool = False  # tasks/<name>/code.py exists (served only at G4/G5)
    code_sha: str | None = None
    new_cases: list[dict[str, Any]] = field(default_factory=list)  # disagreements to record as eval cases

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evidence(
    spec: TaskSpec,
    answers: Sequence[AnswerRecord],
    shadows: Mapping[str, ShadowRecord],
    artifacts: TaskArtifacts,
    metric: Callable[[Any, Any], bool],
    policy: GradePolicy = GradePolicy(),
    *,
    schema_check: Callable[[Any], bool] | None = None,
) -> TaskEvidence:
    """The evidence for `spec`'s grade from its recorded answers (oldest first).

    `metric(output, truth)` says whether an answer was right; `schema_check(truth)` whether
    a verified answer fits the output schema (only asked when the schema constrains it).

    >>> recs = [AnswerRecord(f"t{i}", i, "G4", "code", output="1", code_sha="c", truth="1") for i in range(3)]
    >>> ev = evidence(TaskSpec("x", grade="G4"), recs, {}, TaskArtifacts(code_sha="c"), lambda a, b: a == b)
    >>> ev.coverage, ev.streak, ev.disagreements
    (1.0, 3, 0)
    """
    window = list(answers)[-policy.window:]
    ev = TaskEvidence(task=spec.name, grade=spec.grade, window=len(window), examples=artifacts.examples,
                      eval_cases=artifacts.eval_cases, verifiers=list(artifacts.verifiers),
                      verified_cases=artifacts.verified_cases, code=artifacts.code_sha is not None,
                      code_sha=artifacts.code_sha, learned_schema=artifacts.learned_schema,
                      schema=constrains_text(spec.output_schema) or not spec.text_output)
    right = 0
    judged_code: list[bool] = []
    for r in window:
        ev.served[r.served_by] = ev.served.get(r.served_by, 0) + 1
        ok = _judged(r, metric)
        if ok is not None:
            ev.verified += 1
            right += int(ok)
        if ev.learned_schema and schema_check is not None and r.truth is not None and not schema_check(r.truth):
            ev.schema_violations += 1
            ev.schema_violation_ids.append(r.trace_id)
        if not _current_program(r, artifacts.code_sha):
            continue
        tried = r.served_by == "code" or r.fallback is not None
        ev.code_attempts += int(tried)
        if r.fallback is not None:
            ev.fallbacks[r.fallback] = ev.fallbacks.get(r.fallback, 0) + 1
            ev.fallback_ids.append(r.trace_id)
        shadow = shadows.get(r.trace_id)
        if r.served_by == "code" and shadow is not None:
            ev.shadow_checks += 1
            ev.shadow_disagreements += int(not shadow.agree)
            if r.truth is not None:
                ev.shadow_verified += 1
                ev.shadow_llm_right += int(shadow.llm_output is not None and bool(metric(shadow.llm_output, r.truth)))
                ev.shadow_code_right += int(bool(metric(r.output, r.truth)))
            if not shadow.agree and r.truth is not None and r.trace_id not in artifacts.eval_case_ids:
                ev.new_cases.append({"id": r.trace_id, "input": r.input, "expected": r.truth,
                                     "code_output": r.output, "llm_output": shadow.llm_output,
                                     "code_right": bool(metric(r.output, r.truth))})
        if r.served_by == "code" and ok is not None:
            judged_code.append(ok)
            ev.code_verified += 1
            if not ok:
                ev.disagreements += 1
                ev.disagreement_ids.append(r.trace_id)
                if ev.first_disagreement_seq is None:
                    ev.first_disagreement_seq = r.seq
                if r.truth is not None and r.trace_id not in artifacts.eval_case_ids and not any(
                        c["id"] == r.trace_id for c in ev.new_cases):
                    ev.new_cases.append({"id": r.trace_id, "input": r.input, "expected": r.truth,
                                         "code_output": r.output, "llm_output": None, "code_right": False})
    recent = judged_code[-policy.recent:] if policy.recent else []
    ev.recent_code_verified, ev.recent_disagreements = len(recent), recent.count(False)
    ev.coverage = ev.served.get("code", 0) / len(window) if window else 0.0
    ev.accuracy = right / ev.verified if ev.verified else None
    ev.fallback_rate = sum(ev.fallbacks.values()) / ev.code_attempts if ev.code_attempts else 0.0
    ev.disagreement_rate = ev.disagreements / ev.code_verified if ev.code_verified else 0.0
    ev.shadow_disagreement_rate = ev.shadow_disagreements / ev.shadow_checks if ev.shadow_checks else 0.0
    ev.streak, ev.streak_ids = _streak(answers, spec.grade, artifacts.code_sha, metric)
    return ev


def _judged(r: AnswerRecord, metric: Callable[[Any, Any], bool]) -> bool | None:
    """Was the answer right? From the verified truth, else the explicit score; None when unknown."""
    if r.truth is not None:
        return r.output is not None and bool(metric(r.output, r.truth))
    if r.outcome is not None:
        return r.outcome >= 0.5
    return None


def _current_program(r: AnswerRecord, sha: str | None) -> bool:
    return sha is not None and (r.code_sha is None or r.code_sha == sha) and r.grade in ("G4", "G5")


def _streak(answers: Sequence[AnswerRecord], grade: str, sha: str | None,
            metric: Callable[[Any, Any], bool]) -> tuple[int, list[str]]:
    """Code answers in a row, newest back, at `grade` by the current program with no fallback or disagreement."""
    n, ids = 0, []
    for r in reversed(answers):
        if r.grade != grade or not _current_program(r, sha) or r.served_by != "code" or r.fallback:
            break
        if _judged(r, metric) is False:
            break
        n += 1
        if len(ids) < 1000:
            ids.append(r.trace_id)
    return n, ids


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class GradeMove:
    """A decided change of grade: the version the loop commits, with the evidence that caused it."""

    from_grade: str
    to_grade: str
    kind: str  # "soften" (up the gradient, towards the LLM) | "crystallise" (down, towards code)
    rule: str  # which rule fired: disagreement | fallback | shadow | streak | schema | suite
    reason: str  # one line for the commit trailer and `tasks show`
    drop_schema: bool = False
    provenance: tuple[str, ...] = ()  # the trace ids that are the evidence


def llm_grade(ev: TaskEvidence, policy: GradePolicy = GradePolicy(), *, schema: bool | None = None) -> str:
    """The highest grade below G4 the task's artifacts support (where softening lands).

    >>> llm_grade(TaskEvidence("x", "G4", examples=3))
    'G1'
    """
    if ev.eval_cases + len(ev.new_cases) >= max(1, policy.min_eval_cases):  # counting the cases about to be added
        return "G3"
    if ev.schema if schema is None else schema:
        return "G2"
    return "G1" if ev.examples else "G0"


def decide(ev: TaskEvidence, policy: GradePolicy = GradePolicy()) -> GradeMove | None:
    """The move the evidence calls for, or None (see the module docstring for the rules).

    Pure and deterministic: the same evidence always gives the same move.

    >>> ev = TaskEvidence("x", "G4", code=True, code_verified=20, disagreements=5)
    >>> decide(ev).to_grade, decide(ev).rule
    ('G0', 'disagreement')
    """
    g = ev.grade
    if g not in GRADES:
        raise ValidationError(f"task {ev.task}: unknown grade {g!r}; use one of {', '.join(GRADES)}")
    fell_back = sum(ev.fallbacks.values())
    if g == "G5":
        if ev.disagreements > policy.g5_max_disagreements:
            return GradeMove("G5", "G4", "soften", "disagreement",
                             f"soften G5 → G4: {_n(ev.disagreements, 'verified disagreement')} with the code "
                             f"(G5 allows {policy.g5_max_disagreements})", provenance=tuple(ev.disagreement_ids))
        if fell_back > policy.g5_max_fallbacks:
            return GradeMove("G5", "G4", "soften", "fallback",
                             f"soften G5 → G4: the code gave no answer {_n(fell_back, 'time')} "
                             f"({_reasons(ev)}); G4 lets the LLM answer those", provenance=tuple(ev.fallback_ids))
        return None
    if g == "G4":
        down = llm_grade(ev, policy)
        rule = _disagreement_rule(ev, policy)
        if rule is not None:
            return GradeMove("G4", down, "soften", "disagreement", f"soften G4 → {down}: {rule}",
                             provenance=tuple(ev.disagreement_ids))
        failed = ev.fallbacks.get("exception", 0) + ev.fallbacks.get("schema", 0)
        tried = ev.code_attempts >= max(1, policy.min_code_attempts)
        if tried and failed / ev.code_attempts > policy.max_fallback_rate:
            return GradeMove("G4", down, "soften", "fallback",
                             f"soften G4 → {down}: the code failed on {failed} of {ev.code_attempts} inputs "
                             f"({failed / ev.code_attempts:.0%} > {policy.max_fallback_rate:.0%}; {_reasons(ev)})",
                             provenance=tuple(ev.fallback_ids))
        limit = policy.max_shadow_disagreement_rate
        if (limit is not None and ev.shadow_checks >= max(1, policy.min_shadow_checks)
                and ev.shadow_disagreement_rate > limit):
            return GradeMove("G4", down, "soften", "shadow",
                             f"soften G4 → {down}: {ev.shadow_disagreements} of {ev.shadow_checks} shadow checks "
                             f"disagreed ({ev.shadow_disagreement_rate:.0%} > {limit:.0%})")
        if policy.promote_after > 0 and ev.streak >= policy.promote_after:
            return GradeMove("G4", "G5", "crystallise", "streak",
                             f"crystallise G4 → G5: {ev.streak} code answers in a row with no fallback and no "
                             f"verified disagreement (policy: {policy.promote_after})",
                             provenance=tuple(ev.streak_ids))
        return None
    if g in ("G2", "G3") and ev.learned_schema and ev.schema_violations > 0:
        down = g if g == "G3" else llm_grade(ev, policy, schema=False)
        return GradeMove(g, down, "soften", "schema",
                         f"soften {g} → {down}: the output schema rejects {_n(ev.schema_violations, 'verified answer')}"
                         "; schema dropped", drop_schema=True, provenance=tuple(ev.schema_violation_ids))
    if g < "G3" and policy.min_eval_cases > 0 and ev.eval_cases >= policy.min_eval_cases:
        return GradeMove(g, "G3", "crystallise", "suite",
                         f"crystallise {g} → G3: an eval suite of {ev.eval_cases} recorded cases with verifiers "
                         f"({', '.join(ev.verifiers) or 'exact'}) gates every change")
    return None


def _disagreement_rule(ev: TaskEvidence, policy: GradePolicy) -> str | None:
    """Why G4 code disagrees too much with feedback (drift, or too wrong), or None."""
    least, limit = max(1, policy.min_disagreements), policy.max_disagreement_rate
    k, n = ev.recent_disagreements, ev.recent_code_verified
    if k >= least and n and k / n > limit:
        older_k, older_n = ev.disagreements - k, ev.code_verified - n
        if older_n < n:  # no earlier record to compare with: held to the policy's rate
            return (f"{k} of the {n} most recent verified code answers disagreed with feedback "
                    f"({k / n:.0%} > {limit:.0%})")
        from scipy.stats import fisher_exact  # slow to import; off the import path

        p = float(fisher_exact([[k, n - k], [older_k, older_n - older_k]], alternative="greater")[1])
        if p <= policy.drift_alpha:
            return (f"{k} of the {n} most recent verified code answers disagreed with feedback ({k / n:.0%}), "
                    f"up from {older_k} of {older_n} before (drift, Fisher exact p={p:.2g})")
    k, n = ev.disagreements, ev.code_verified
    if k >= least and n and k / n > limit:
        if ev.shadow_verified >= max(1, policy.min_shadow_checks) and ev.shadow_llm_right < ev.shadow_code_right:
            return None  # wrong too often, but the LLM is wrong more often on the same inputs
        return f"{k} of the {n} verified code answers disagreed with feedback ({k / n:.0%} > {limit:.0%})"
    return None


def next_moves(ev: TaskEvidence, policy: GradePolicy = GradePolicy()) -> list[str]:
    """What would move the task, in words, with where it stands now.

    >>> next_moves(TaskEvidence("x", "G4", code=True, streak=212))[0]
    'G4 → G5 after 500 code answers in a row with no fallback; currently 212'
    """
    g, out = ev.grade, []
    down = llm_grade(ev, policy)
    if g == "G5":
        out.append(f"G5 → G4 on {_more(policy.g5_max_disagreements)} verified disagreement or "
                   f"{_more(policy.g5_max_fallbacks)} answer the code cannot give; "
                   f"currently {ev.disagreements} and {sum(ev.fallbacks.values())} in the window")
        return out
    if g == "G4":
        out.append(f"G4 → G5 after {policy.promote_after} code answers in a row with no fallback; "
                   f"currently {ev.streak}")
        out.append(f"G4 → {down} (soften) if verified disagreements exceed {policy.max_disagreement_rate:.0%} "
                   f"(at least {policy.min_disagreements}) and rise, or stay above it with the LLM no worse; "
                   f"currently {ev.recent_disagreements} of the {ev.recent_code_verified} most recent, "
                   f"{ev.disagreements} of {ev.code_verified} in the window")
        failed = ev.fallbacks.get("exception", 0) + ev.fallbacks.get("schema", 0)
        out.append(f"G4 → {down} (soften) if the code fails on over {policy.max_fallback_rate:.0%} of inputs "
                   f"(at least {policy.min_code_attempts} tried); currently {failed} of {ev.code_attempts}"
                   f" (abstained on {ev.fallbacks.get('abstain', 0)})")
        return out
    out.append(f"{g} → G4 when crystallised code reproduces held-out verified cases "
               f"(crystallise learner; {ev.verified_cases} verified cases so far)")
    if g < "G3":
        out.append(f"{g} → G3 when the eval suite holds {policy.min_eval_cases} cases; currently {ev.eval_cases}")
    if g < "G2" and not ev.schema:
        out.append(f"{g} → G2 when verified outputs share a structure a schema can hold (schema learner)")
    if g < "G1":
        out.append("G0 → G1 when verified examples help on the gate (fewshot or promptopt learner)")
    if ev.learned_schema and g in ("G2", "G3"):
        out.append(f"{g} softens (schema dropped) when a verified answer breaks the learned schema; "
                   f"currently {ev.schema_violations}")
    return out


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _more(limit: int) -> str:
    return "any" if limit == 0 else f"more than {limit}"


def _reasons(ev: TaskEvidence) -> str:
    return ", ".join(f"{k} {v}" for k, v in ev.fallbacks.items() if v) or "none"
