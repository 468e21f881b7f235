"""The gate: a pure function from paired old/new case results to a `Verdict`.

"Better, not just different." The rules, in order:

    1. fewer than policy.min_cases paired cases           -> needs_review
    2. losses / n > policy.max_regression_rate            -> reject  (no-regression rule)
    3. new beats old at p <= alpha (one-sided, paired)    -> accept
    4. same pass set, new mean cost < old mean cost       -> accept  (equal and cheaper)
    5. no case worse, some better, cheaper, and at least
       policy.dominance_min_cases cases                   -> accept  (better on some, worse on none,
                                                                      cheaper: before significance)
    6. anything else                                      -> reject  (not better)

wins = cases new passes and old fails; losses = the reverse. The verdict's `reason`
reads as a git commit trailer, e.g.
`accept: 12 wins / 0 losses of 40 cases, McNemar exact p=0.00024`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from crystallise.errors import ValidationError
from crystallise.gate.stats import mcnemar_exact, paired_bootstrap
from crystallise.gate.suite import CaseResult
from crystallise.types import Verdict

__all__ = ["GatePolicy", "decide", "min_cases_for"]

_MAX_IDS = 20  # case ids listed in Verdict.details per category
_STAT_NAMES = {"mcnemar": "mcnemar_exact", "bootstrap": "paired_bootstrap"}
_STAT_LABELS = {"mcnemar": "McNemar exact", "bootstrap": "paired bootstrap"}


@dataclass(frozen=True)
class GatePolicy:
    """How strict the gate is.

    alpha                significance level for "new is better" (one-sided).
    max_regression_rate  share of cases allowed to go pass -> fail (0.0: none at all).
    min_cases            fewer paired cases than this -> needs_review, not a guess. Default (None):
                         the smallest suite on which the exact test can reach alpha at all,
                         ceil(log2(1/alpha)) -- 5 at alpha 0.05 (5 wins, 0 losses: p = 1/32 = 0.031;
                         4 cases can at best give p = 1/16 > 0.05). Below that, an accept could only
                         be "equal and cheaper" on a handful of cases. See `min_cases_for`.
    test                 "mcnemar" (exact, pass/fail) or "bootstrap" (paired, on 0/1 passes;
                         anti-conservative on tiny suites, so raise min_cases with it).
    prefer_cheaper       accept an identical pass set when the new mean cost is lower.
    dominance_min_cases  accept a cheaper version that passes a superset of the old pass set
                         (wins, no losses) from this many paired cases on, even before the wins
                         are significant; 0 turns the rule off.
    bootstrap_resamples, seed   the bootstrap's resamples and RNG seed (deterministic).

    >>> GatePolicy(max_regression_rate=0.02, min_cases=20).test
    'mcnemar'
    >>> GatePolicy().min_cases, GatePolicy(alpha=0.01).min_cases
    (5, 7)
    """

    alpha: float = 0.05
    max_regression_rate: float = 0.0
    min_cases: int = None  # type: ignore[assignment]  # None -> min_cases_for(alpha), set in __post_init__
    test: Literal["mcnemar", "bootstrap"] = "mcnemar"
    prefer_cheaper: bool = True
    dominance_min_cases: int = 20
    bootstrap_resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise ValidationError(f"GatePolicy.alpha must be in (0, 1), e.g. 0.05; got {self.alpha!r}")
        rate = self.max_regression_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValidationError(f"GatePolicy.max_regression_rate must be in [0, 1], e.g. 0.02; got {rate!r}")
        if self.min_cases is None:
            object.__setattr__(self, "min_cases", min_cases_for(self.alpha))
        if isinstance(self.min_cases, bool) or not isinstance(self.min_cases, int) or self.min_cases < 0:
            raise ValidationError(f"GatePolicy.min_cases must be an integer >= 0; got {self.min_cases!r}")
        if isinstance(self.dominance_min_cases, bool) or not isinstance(self.dominance_min_cases, int) \
                or self.dominance_min_cases < 0:
            raise ValidationError(f"GatePolicy.dominance_min_cases must be an integer >= 0; got "
                                  f"{self.dominance_min_cases!r}")
        if self.test not in _STAT_NAMES:
            raise ValidationError(f"GatePolicy.test must be 'mcnemar' or 'bootstrap'; got {self.test!r}")


def min_cases_for(alpha: float) -> int:
    """The fewest paired cases on which the one-sided exact test can reach `alpha`: n wins, no losses
    gives p = 2**-n, so n = ceil(log2(1/alpha)).

    >>> min_cases_for(0.05), min_cases_for(0.5)
    (5, 1)
    """
    return max(1, math.ceil(math.log2(1 / alpha) - 1e-12))


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def _fmt_p(p: float) -> str:
    return f"{p:.1e}" if 0 < p < 1e-4 else f"{p:.2g}"


def _fmt_cost(c: float) -> str:
    return f"{c:.4g}"


def _index(results: Sequence[CaseResult], side: str) -> dict[str, CaseResult]:
    """case_id -> result; duplicate ids raise."""
    by_id: dict[str, CaseResult] = {}
    for r in results:
        if r.case_id in by_id:
            raise ValidationError(f"gate: duplicate case id {r.case_id!r} in the {side} results; run each case once")
        by_id[r.case_id] = r
    return by_id


def _pair(old: Sequence[CaseResult], new: Sequence[CaseResult]) -> list[tuple[CaseResult, CaseResult]]:
    """[(old_result, new_result), ...] in old's order; the two case sets must match."""
    a, b = _index(old, "old"), _index(new, "new")
    if a.keys() != b.keys():
        only_old = sorted(a.keys() - b.keys())
        only_new = sorted(b.keys() - a.keys())
        raise ValidationError(
            "gate: old and new results must cover the same cases; "
            f"only in old: {only_old[:5]}{' ...' if len(only_old) > 5 else ''} ({len(only_old)}), "
            f"only in new: {only_new[:5]}{' ...' if len(only_new) > 5 else ''} ({len(only_new)}); "
            "run both versions on the same suite"
        )
    return [(r, b[cid]) for cid, r in a.items()]


def _mean_cost(results: list[CaseResult]) -> float:
    return math.fsum(float(r.cost) for r in results) / len(results) if results else 0.0


def decide(old: Sequence[CaseResult], new: Sequence[CaseResult], policy: GatePolicy = GatePolicy()) -> Verdict:
    """Compare paired results of the old and the new version on the same cases.

    Pure: no I/O, deterministic (the bootstrap is seeded by the policy).

    >>> old = [CaseResult(f"c{i}", i < 5, None) for i in range(20)]
    >>> new = [CaseResult(f"c{i}", i < 11, None) for i in range(20)]
    >>> decide(old, new).reason
    'accept: 6 wins / 0 losses of 20 cases, McNemar exact p=0.016'
    """
    pairs = _pair(old, new)
    n = len(pairs)
    win_ids = [o.case_id for o, w in pairs if w.passed and not o.passed]
    loss_ids = [o.case_id for o, w in pairs if o.passed and not w.passed]
    wins, losses = len(win_ids), len(loss_ids)
    old_passed = sum(1 for o, _ in pairs if o.passed)
    new_passed = sum(1 for _, w in pairs if w.passed)
    old_cost = _mean_cost([o for o, _ in pairs])
    new_cost = _mean_cost([w for _, w in pairs])

    # the statistic: one-sided p that new is better
    details: dict[str, Any] = {}
    if policy.test == "bootstrap" and n > 0:
        boot = paired_bootstrap(
            [float(bool(o.passed)) for o, _ in pairs],
            [float(bool(w.passed)) for _, w in pairs],
            n_resamples=policy.bootstrap_resamples,
            seed=policy.seed,
        )
        p_value = boot["p_value"]
        details["bootstrap"] = boot
    else:
        p_value = mcnemar_exact(wins, losses)
    regression_rate = losses / n if n else 0.0
    details.update(
        {
            "win_ids": win_ids[:_MAX_IDS],
            "loss_ids": loss_ids[:_MAX_IDS],
            "regression_rate": regression_rate,
            "policy": asdict(policy),
        }
    )
    summary = (
        f"{_plural(wins, 'win')} / {_plural(losses, 'loss', 'losses')} of {_plural(n, 'case')}, "
        f"{_STAT_LABELS[policy.test]} p={_fmt_p(p_value)}"
    )
    costs = f"mean cost {_fmt_cost(old_cost)} -> {_fmt_cost(new_cost)}"

    # the rules, in order
    decision: Literal["accept", "reject", "needs_review"]
    if n < policy.min_cases:
        decision = "needs_review"
        reason = (
            f"needs_review: only {_plural(n, 'paired case')}, the policy needs at least {policy.min_cases} "
            f"(add cases to the suite or lower min_cases); {summary}"
        )
    elif regression_rate > policy.max_regression_rate:
        decision = "reject"
        verb = "passed now fails" if losses == 1 else "passed now fail"
        reason = (
            f"reject: no-regression rule: {_plural(losses, 'case')} that {verb} "
            f"({regression_rate:.1%} > allowed {policy.max_regression_rate:.1%}); {summary}"
        )
    elif wins > losses and p_value <= policy.alpha:
        decision = "accept"
        reason = f"accept: {summary}"
    elif wins == 0 and losses == 0 and policy.prefer_cheaper and new_cost < old_cost:
        decision = "accept"
        reason = f"accept: equal and cheaper: same {new_passed}/{n} cases pass, {costs}"
    elif (losses == 0 and policy.prefer_cheaper and new_cost < old_cost and policy.dominance_min_cases
          and n >= policy.dominance_min_cases):  # wins, not yet significant
        decision = "accept"
        reason = f"accept: no case worse and cheaper: {summary}, {costs}"
    else:
        decision = "reject"
        if wins == 0 and losses == 0:
            why = "not cheaper" if not new_cost < old_cost else "cheaper, but prefer_cheaper is off"
            reason = f"reject: not better: same {new_passed}/{n} cases pass and {why} ({costs})"
        else:
            reason = f"reject: not better: {summary} > alpha {policy.alpha:g}"

    return Verdict(
        decision=decision,
        reason=reason,
        n=n,
        old_passed=old_passed,
        new_passed=new_passed,
        wins=wins,
        losses=losses,
        statistic=_STAT_NAMES[policy.test],
        p_value=p_value,
        old_cost=old_cost,
        new_cost=new_cost,
        details=details,
    )
