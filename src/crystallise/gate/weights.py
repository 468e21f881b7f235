"""The gate for the weight layer: better on the target *and* not worse on what must be retained.

A LoRA adapter changes every answer a little, so "better on the target suite" is not enough.
`decide_adapter` takes the paired results on the target suite and on each retention suite
(the base model's general behaviour, earlier adapters' tasks) and applies, in order:

    1. fewer than policy.min_retention_cases retention cases           -> needs_review
    2. any retention suite whose accuracy drops by more than
       policy.max_forgetting (forgetting, in accuracy points / 100)    -> reject  (forgetting rule)
    3. the ordinary gate (`decide`) on the target suite                -> accept / reject / needs_review

so an adapter that improves the target but forgets is rejected, and the verdict says which
suite it broke and by how much:

    reject: forgetting rule: retention suite 'base-probes' 100.0% -> 55.0% (forgetting 45.0 points
    > allowed 5.0); target: 9 wins / 0 losses of 12 cases, McNemar exact p=0.002

`WeightsPolicy` is a `GatePolicy` (same fields, same meaning on the target suite) plus the
retention rule; its `max_regression_rate` defaults to 0.05 because a LoRA update may flip a
case or two of the target suite while gaining many more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crystallise.errors import ValidationError
from crystallise.gate.decide import GatePolicy, decide
from crystallise.gate.suite import CaseResult
from crystallise.types import Verdict

__all__ = ["WeightsPolicy", "decide_adapter", "suite_accuracy"]


@dataclass(frozen=True)
class WeightsPolicy(GatePolicy):
    """GatePolicy + the retention rule.

    max_forgetting        the largest allowed accuracy drop on any retention suite, as a
                          fraction (0.05 = 5 points); the tolerance of the forgetting rule.
    min_retention_cases   fewer retention cases than this -> needs_review (no measurement,
                          no verdict); 0 turns the rule's minimum off.

    >>> WeightsPolicy(max_forgetting=0.02).max_forgetting
    0.02
    """

    max_regression_rate: float = 0.05
    max_forgetting: float = 0.05
    min_retention_cases: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        mf = self.max_forgetting
        if isinstance(mf, bool) or not isinstance(mf, (int, float)) or not 0 <= mf <= 1:
            raise ValidationError(f"WeightsPolicy.max_forgetting must be in [0, 1], e.g. 0.05; got {mf!r}")
        mr = self.min_retention_cases
        if isinstance(mr, bool) or not isinstance(mr, int) or mr < 0:
            raise ValidationError(f"WeightsPolicy.min_retention_cases must be an integer >= 0; got {mr!r}")


def suite_accuracy(results: Sequence[CaseResult]) -> float:
    """Share of passed cases (0.0 for an empty suite)."""
    return sum(1 for r in results if r.passed) / len(results) if results else 0.0


def _check_pairs(name: str, old: Sequence[CaseResult], new: Sequence[CaseResult]) -> None:
    if sorted(r.case_id for r in old) != sorted(r.case_id for r in new):
        raise ValidationError(f"gate: retention suite {name!r}: old and new results must cover the same cases")


def decide_adapter(
    target_old: Sequence[CaseResult],
    target_new: Sequence[CaseResult],
    retention: Mapping[str, tuple[Sequence[CaseResult], Sequence[CaseResult]]],
    policy: WeightsPolicy = WeightsPolicy(),
) -> Verdict:
    """The verdict on an adapter: `retention` maps suite name -> (old results, new results).

    Pure and deterministic, like `decide`. `details["retention"]` holds each suite's accuracy
    before and after and its forgetting; `details["forgetting"]` the largest one.

    >>> from crystallise.gate import CaseResult
    >>> t_old = [CaseResult(f"t{i}", False, None) for i in range(10)]
    >>> t_new = [CaseResult(f"t{i}", True, None) for i in range(10)]
    >>> r_old = [CaseResult(f"r{i}", True, None) for i in range(10)]
    >>> r_new = [CaseResult(f"r{i}", i < 5, None) for i in range(10)]
    >>> decide_adapter(t_old, t_new, {"base": (r_old, r_new)}).decision
    'reject'
    """
    per_suite: dict[str, dict[str, Any]] = {}
    n_retention = 0
    for name, (old, new) in retention.items():
        _check_pairs(name, old, new)
        a_old, a_new = suite_accuracy(old), suite_accuracy(new)
        per_suite[name] = {"n": len(old), "old": a_old, "new": a_new, "forgetting": max(0.0, a_old - a_new),
                           "change": a_new - a_old}
        n_retention += len(old)
    worst = max(per_suite.items(), key=lambda kv: kv[1]["forgetting"], default=None)
    forgetting = worst[1]["forgetting"] if worst else 0.0
    target = decide(target_old, target_new, policy)
    details = dict(target.details)
    details.update({"retention": per_suite, "forgetting": forgetting, "retention_cases": n_retention,
                    "policy": asdict(policy),
                    "target_accuracy": {"old": suite_accuracy(target_old), "new": suite_accuracy(target_new)}})
    summary = target.reason.split(": ", 1)[1] if ": " in target.reason else target.reason
    if n_retention < policy.min_retention_cases:
        decision, reason = "needs_review", (
            f"needs_review: only {n_retention} retention case(s), the policy needs at least "
            f"{policy.min_retention_cases} (add a retention suite: base probes or earlier adapters' tasks); "
            f"target: {summary}")
    elif worst is not None and forgetting > policy.max_forgetting + 1e-12:
        name, s = worst
        decision, reason = "reject", (
            f"reject: forgetting rule: retention suite {name!r} {s['old']:.1%} -> {s['new']:.1%} "
            f"(forgetting {100 * forgetting:.1f} points > allowed {100 * policy.max_forgetting:.1f}); "
            f"target: {summary}")
    else:
        decision = target.decision
        kept = f"; retention kept (max forgetting {100 * forgetting:.1f} points)" if per_suite else ""
        reason = target.reason + kept
    return Verdict(decision=decision, reason=reason, n=target.n, old_passed=target.old_passed,
                   new_passed=target.new_passed, wins=target.wins, losses=target.losses,
                   statistic=target.statistic, p_value=target.p_value, old_cost=target.old_cost,
                   new_cost=target.new_cost, details=details)
