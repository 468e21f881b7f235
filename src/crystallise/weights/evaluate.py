"""Evaluating models on suites: the target suite, the retention suites, batched generation.

    model, tok = load_with_adapter(base, adapter_dir)           # None: the base alone
    results = evaluate(model, tok, suite, max_new_tokens=16)     # [CaseResult, ...], verified per case

A weights suite is an `EvalSuite` whose case inputs are chat messages
(`[{"role": "user", "content": ...}]`) and whose verifier is any of `gate.verifiers`.

    probe_suite(model, tok)   the `base-probes` retention suite: the eval half of `probes.PROBES`,
                              expected = the given model's (the base's) greedy answer; passes when
                              the answer's word-overlap F1 with it is >= 0.5 (PROBE_VERIFIER)
    probe_replay(model, tok)  the replay half as SFT records with the base's answers
    held_out(rows)            split SFT records by a hash of their trace id: 1 in 4 for the gate
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crystallise.gate import Case, CaseResult, EvalSuite, verify
from crystallise.weights._deps import pick_device, require
from crystallise.weights.base import BaseModel, generate
from crystallise.weights.probes import eval_prompts, replay_prompts

__all__ = [
    "PROBE_SUITE",
    "evaluate",
    "held_out",
    "load_with_adapter",
    "probe_replay",
    "probe_suite",
    "suite_from_rows",
]

PROBE_SUITE = "base-probes"
PROBE_TOKENS = 16
# "Same behaviour as the base": word-overlap F1 >= 0.5 with the base's answer. Exact match of 16
# greedy tokens is too brittle (any update flips a late token); a collapsed or off-topic answer fails.
PROBE_VERIFIER = {
    "kind": "python",
    "name": "base-agreement",
    "source": (
        "def check(output, expected):\n"
        "    a, b = str(output).lower().split(), str(expected).lower().split()\n"
        "    if not a or not b:\n"
        "        return a == b\n"
        "    pool, common = list(b), 0\n"
        "    for w in a:\n"
        "        if w in pool:\n"
        "            pool.remove(w)\n"
        "            common += 1\n"
        "    if not common:\n"
        "        return False\n"
        "    p, r = common / len(a), common / len(b)\n"
        "    return 2 * p * r / (p + r) >= 0.5\n"
    ),
}


def load_with_adapter(base: BaseModel, adapter_dir: Path | None, device: str | None = None) -> tuple[Any, Any]:
    """The base with the PEFT adapter in `adapter_dir` applied (eval mode), or the shared base if None."""
    if adapter_dir is None:
        return base.shared(device)
    peft = require("peft")
    model, tok = base.load(pick_device(device))
    model = peft.PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    return model, tok


def _messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, list):
        return value
    return [{"role": "user", "content": str(value)}]


def evaluate(model: Any, tok: Any, suite: EvalSuite, *, max_new_tokens: int = 16, batch_size: int = 8
             ) -> list[CaseResult]:
    """Greedy answers to every case, verified; in suite order."""
    if not len(suite):
        return []
    outputs = generate(model, tok, [_messages(c.input) for c in suite.cases], max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
    return [CaseResult(c.id, verify(c.verifier, out, c.expected), out) for c, out in zip(suite.cases, outputs)]


def probe_suite(model: Any, tok: Any) -> EvalSuite:
    """The base-probes suite with `model`'s answers as expected (call it with the base)."""
    prompts = eval_prompts()
    answers = generate(model, tok, [_messages(p) for p in prompts], max_new_tokens=PROBE_TOKENS)
    cases = [Case(f"probe-{hashlib.sha256(p.encode()).hexdigest()[:10]}", _messages(p), a,
                  verifier=PROBE_VERIFIER, tags=["probe"], created_by="weights") for p, a in zip(prompts, answers)]
    return EvalSuite(PROBE_SUITE, cases)


def probe_replay(model: Any, tok: Any) -> list[dict[str, Any]]:
    """SFT records of the replay probes, answered by `model` (the base): general behaviour to keep."""
    prompts = replay_prompts()
    answers = generate(model, tok, [_messages(p) for p in prompts], max_new_tokens=PROBE_TOKENS)
    return [{"messages": [*_messages(p), {"role": "assistant", "content": a}], "trace_id": None,
             "source": "base-probe"} for p, a in zip(prompts, answers) if a.strip()]


def held_out(rows: Sequence[dict[str, Any]], share: int = 4) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, gate) split of SFT records by a hash of the trace id (else the prompt): 1 in `share` to the gate."""
    train, gate = [], []
    for r in rows:
        key = str(r.get("trace_id") or r["messages"][:-1])
        (gate if int(hashlib.sha256(key.encode()).hexdigest()[8:16], 16) % share == 0 else train).append(r)
    return train, gate


def suite_from_rows(name: str, rows: Sequence[dict[str, Any]], verifier: dict[str, Any] | None = None) -> EvalSuite:
    """An eval suite from SFT records: input = the prompt messages, expected = the verified answer."""
    cases = []
    seen: set[str] = set()
    for r in rows:
        cid = str(r.get("trace_id") or hashlib.sha256(repr(r["messages"]).encode()).hexdigest()[:16])
        if cid in seen:
            continue
        seen.add(cid)
        cases.append(Case(cid, r["messages"][:-1], r["messages"][-1]["content"],
                          verifier=verifier or {"kind": "exact"}, source_trace=r.get("trace_id"),
                          created_by="weights"))
    return EvalSuite(name, cases)
