"""The verify stage (DESIGN.md §1.3): eval suites, verifiers and the gate.

Pure functions over plain data, no I/O:

    suite = EvalSuite.from_jsonl("math", text)            # tasks/<name>/evals.jsonl
    old = run_suite(suite, old_fn)                        # [CaseResult, ...]
    new = run_suite(suite, new_fn)
    verdict = decide(old, new, GatePolicy(alpha=0.05))    # accept | reject | needs_review
    verdict.reason  # 'accept: 12 wins / 0 losses of 40 cases, McNemar exact p=0.00024'

For LoRA adapters, `decide_adapter` adds the forgetting rule on retention suites (gate/weights.py).
"""

from crystallise.gate.decide import GatePolicy, decide
from crystallise.gate.stats import mcnemar_exact, paired_bootstrap
from crystallise.gate.suite import Case, CaseResult, EvalSuite, learner_may_add, run_suite
from crystallise.gate.verifiers import (
    DATA_VERIFIER_KINDS,
    VERIFIER_KINDS,
    score_exact,
    score_numeric,
    validate_spec,
    verify,
    verify_detail,
)
from crystallise.gate.weights import WeightsPolicy, decide_adapter, suite_accuracy

__all__ = [
    "Case",
    "CaseResult",
    "DATA_VERIFIER_KINDS",
    "EvalSuite",
    "GatePolicy",
    "VERIFIER_KINDS",
    "WeightsPolicy",
    "decide",
    "decide_adapter",
    "learner_may_add",
    "mcnemar_exact",
    "paired_bootstrap",
    "run_suite",
    "score_exact",
    "score_numeric",
    "suite_accuracy",
    "validate_spec",
    "verify",
    "verify_detail",
]
