"""Canary: a new harness version first serves a share of traffic; online signals decide the rest.

The gate compares old and new on recorded cases; a canary compares them on live traffic, where
a change can meet inputs no recorded case had. With `LoopConfig(canary=CanaryPolicy(...))`:

  1. an accepted harness change set also writes `tasks/<name>/canary.json`
         {"changeset": "cs_…", "control": "<sha of the version before>", "share": 0.2, "policy": {…}}
     so the canary, like everything else, is part of a version;
  2. serving routes each input by a stable hash: `share` of it to the new version (candidate),
     the rest to the commit before it (control); the task span records `canary.arm`;
  3. `decide_canary` (pure) compares the arms over the traces since, on explicit outcomes and
     failures (errors, code exceptions):
        either arm below `min_per_arm` outcomes           -> continue
        candidate success lower, Fisher exact p <= alpha  -> rollback
        candidate failure rate higher, p <= alpha         -> rollback
        candidate has `graduate_after` outcomes           -> graduate
  4. rollback = `crystallise revert` of the version, with the statistics as the reason;
     graduate = a version that removes canary.json (all traffic on the new version), with the
     statistics as its verdict.

    >>> decide_canary({"candidate": ArmStats(30, 12, 0), "control": ArmStats(90, 80, 0)}, CanaryPolicy())[0]
    'rollback'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from crystallise.errors import ValidationError

__all__ = ["ArmStats", "CanaryPolicy", "arm_for", "canary_path", "collect", "decide_canary", "start_delta"]


@dataclass(frozen=True)
class CanaryPolicy:
    share: float = 0.2  # of traffic on the new version while the canary runs
    min_per_arm: int = 20  # outcomes needed in each arm before deciding anything
    graduate_after: int = 100  # candidate outcomes without a regression -> all traffic
    alpha: float = 0.05  # one-sided Fisher exact test

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ValidationError(f"canary share must be between 0 and 1 (exclusive), got {self.share}")
        if self.min_per_arm < 1 or self.graduate_after < self.min_per_arm:
            raise ValidationError("canary needs min_per_arm >= 1 and graduate_after >= min_per_arm")
        if not 0.0 < self.alpha < 1.0:
            raise ValidationError(f"canary alpha must be between 0 and 1, got {self.alpha}")


@dataclass
class ArmStats:
    n: int = 0  # answers with an explicit outcome
    ok: int = 0  # of those, successful
    failures: int = 0  # answers that errored or whose code raised (with or without an outcome)
    answers: int = 0  # all answers served by the arm

    @property
    def rate(self) -> float:
        return self.ok / self.n if self.n else 0.0


def canary_path(task: str) -> str:
    return f"tasks/{task}/canary.json"


def start_delta(task: str, changeset_id: str, control_sha: str | None, policy: CanaryPolicy) -> dict[str, Any]:
    """The canary.json content that starts a canary for `changeset_id` against `control_sha`."""
    return {"changeset": changeset_id, "control": control_sha, "share": policy.share, "policy": asdict(policy)}


def arm_for(key: str, share: float) -> str:
    """A stable split: the same input always goes to the same arm."""
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "candidate" if h < share else "control"


def read_state(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    state = json.loads(text)
    return state if isinstance(state, dict) and state.get("changeset") else None


def collect(traces: Iterable[Any], changeset_id: str) -> dict[str, ArmStats]:
    """Per-arm stats over traces whose task span was routed by this canary."""
    stats = {"candidate": ArmStats(), "control": ArmStats()}
    for t in traces:
        arm = None
        failed = t.status == "error"
        for s in t.spans:
            c = s.attributes.get("canary")
            if isinstance(c, dict) and c.get("changeset") == changeset_id:
                arm = c.get("arm")
                failed = failed or str(s.attributes.get("fallback_reason") or "").startswith("code failed")
        if arm not in stats:
            continue
        a = stats[arm]
        a.answers += 1
        a.failures += int(failed)
        if t.outcome is not None:
            a.n += 1
            a.ok += int(t.outcome >= 0.5)
    return stats


def decide_canary(stats: dict[str, ArmStats], policy: CanaryPolicy) -> tuple[str, str, dict[str, Any]]:
    """(continue | rollback | graduate, reason, details) — a pure function of the arm stats."""
    from scipy.stats import fisher_exact

    cand, ctrl = stats["candidate"], stats["control"]
    details = {"candidate": asdict(cand), "control": asdict(ctrl)}
    if cand.n < policy.min_per_arm or ctrl.n < policy.min_per_arm:
        return "continue", f"waiting for outcomes ({cand.n}/{ctrl.n} of {policy.min_per_arm} per arm)", details
    _, p_ok = fisher_exact([[cand.ok, cand.n - cand.ok], [ctrl.ok, ctrl.n - ctrl.ok]], alternative="less")
    _, p_fail = fisher_exact([[cand.failures, cand.answers - cand.failures],
                              [ctrl.failures, ctrl.answers - ctrl.failures]], alternative="greater")
    details |= {"p_success_lower": p_ok, "p_failures_higher": p_fail}
    line = (f"success {cand.rate:.0%} of {cand.n} vs {ctrl.rate:.0%} of {ctrl.n}, "
            f"failures {cand.failures}/{cand.answers} vs {ctrl.failures}/{ctrl.answers}")
    if p_ok <= policy.alpha:
        return "rollback", f"canary regression: {line} (Fisher exact p={p_ok:.2g})", details
    if p_fail <= policy.alpha:
        return "rollback", f"canary failures rose: {line} (Fisher exact p={p_fail:.2g})", details
    if cand.n >= policy.graduate_after:
        return "graduate", f"canary graduated: {line}, no regression (p={p_ok:.2g})", details
    return "continue", f"no regression yet: {line}", details
