"""Training data from traces: verified runs only, redacted, every example tied to its trace.

    ds = export_dataset(store, scope=Scope(agent="support"), tasks=["triage"])
    ds.sft        [{"messages": [...], "trace_id", "task", "source", "redactions"}, ...]
    ds.pairs      [{"prompt": [...], "chosen", "rejected", "trace_id", ...}, ...]
    ds.write(out) out/sft.jsonl, out/pairs.jsonl, out/dataset.json (counts, sha256, scope)

*Verified* means the latest explicit feedback on the run gave the right answer: a correction
(the answer is the correction) or a score of 1 for the answer the model gave (the one rule of
`crystallise.evidence`, shared with the grades, the loop and the advisor). Runs with only
implicit signals, a failing score without a correction, an error, or revoked by an undo
(`crystallise revert --trace/--user`) are never exported.

*Preference pairs* come from corrections of a wrong answer: chosen = the correction,
rejected = what the model said.

*Scope*: an agent-level dataset holds the agent's runs outside any org; an org-level dataset
holds the org's runs (of every agent, or of `scope.agent` when `agent_only`). A tenant's data
never trains another tenant's adapter. Runs of a user inside the org are included, redacted;
each example keeps `user` so that what was learned from one user can be found and retrained
without it.

Redaction runs on every string that reaches the file (prompt and answers), with the
`PiiRedactor` (the context layer's PII policy) unless another `Redactor` is passed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystallise.errors import ValidationError
from crystallise.evidence import is_revoked, verified
from crystallise.store.base import Store
from crystallise.types import Scope, Trace
from crystallise.context.pii import PiiPolicy
from crystallise.weights.redact import PiiRedactor, Redactor

__all__ = ["Dataset", "dump_jsonl", "export_dataset", "read_jsonl", "sha256_text", "verified_answer"]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dump_jsonl(rows: Iterable[dict[str, Any]]) -> str:
    """One JSON object per line, keys sorted (stable diffs and hashes)."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; ValidationError naming the line of a bad one."""
    if not Path(path).is_file():
        raise ValidationError(f"no such file: {path} (export one with `crystallise weights export`)")
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValidationError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValidationError(f"{path}, line {n}: each line must be a JSON object")
        rows.append(row)
    return rows


def verified_answer(t: Trace) -> tuple[Any, str] | None:
    """(right answer, "correction" | "accepted"), or None: `crystallise.evidence.verified`."""
    return verified(t)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _prompt(t: Trace, system: str | None) -> list[dict[str, str]]:
    """The chat prompt: the run's own messages when it recorded them (OpenAI wrapper), else its input."""
    value = t.input
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        msgs = [{"role": str(m["role"]), "content": _text(m.get("content", ""))} for m in value]
        msgs = [m for m in msgs if m["role"] in ("system", "user", "assistant")]
    else:
        msgs = [{"role": "user", "content": _text(value)}]
    if system and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


@dataclass
class Dataset:
    scope: dict[str, Any]
    sft: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    redactor: str = "regex"

    @property
    def trace_ids(self) -> list[str]:
        return sorted({r["trace_id"] for r in self.sft} | {r["trace_id"] for r in self.pairs})

    def info(self) -> dict[str, Any]:
        sft, pairs = dump_jsonl(self.sft), dump_jsonl(self.pairs)
        redactions: dict[str, int] = {}
        for r in self.sft + self.pairs:
            for k, v in r.get("redactions", {}).items():
                redactions[k] = redactions.get(k, 0) + v
        return {"scope": self.scope, "sft": {"examples": len(self.sft), "sha256": sha256_text(sft)},
                "pairs": {"examples": len(self.pairs), "sha256": sha256_text(pairs)},
                "traces": len(self.trace_ids), "skipped": self.skipped, "redactor": self.redactor,
                "redactions": redactions}

    def write(self, out: Path) -> dict[str, Any]:
        """Write sft.jsonl, pairs.jsonl and dataset.json (the summary, with each file's sha256)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sft.jsonl").write_text(dump_jsonl(self.sft), encoding="utf-8")
        (out / "pairs.jsonl").write_text(dump_jsonl(self.pairs), encoding="utf-8")
        info = self.info()
        (out / "dataset.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return info


def _in_scope(t: Trace, scope: Scope, agent_only: bool) -> bool:
    if scope.org:
        return t.org_id == scope.org and (not agent_only or t.agent_id == scope.agent)
    return t.agent_id == scope.agent and t.org_id is None


def export_dataset(
    store: Store,
    scope: Scope,
    *,
    tasks: Sequence[str] | None = None,
    redactor: Redactor | None = None,
    system: str | None = None,
    agent_only: bool = False,
    limit: int = 1_000_000,
) -> Dataset:
    """SFT examples and preference pairs from the verified runs of `scope` (see the module docstring)."""
    if scope.user:
        raise ValidationError(
            "weights are trained per agent or per org, never per user (a user's data must stay deletable): "
            "drop --user, or export the org the user belongs to")
    if redactor is None:  # the home's policy when its store redacts, the built-in one otherwise: never none
        policy = getattr(store, "redactor", None)
        redactor = PiiRedactor(policy if isinstance(policy, PiiPolicy) else None)
    red = redactor
    ds = Dataset(scope={"level": "org" if scope.org else "agent", "agent": scope.agent, "org": scope.org},
                 redactor=getattr(red, "name", type(red).__name__))
    skipped: dict[str, int] = {}
    traces = store.list_traces(agent=None if scope.org and not agent_only else scope.agent, org=scope.org,
                               limit=limit, with_children=True)
    for t in traces:
        if not _in_scope(t, scope, agent_only) or (tasks and t.name not in tasks):
            continue
        if is_revoked(t):  # `crystallise revert --trace/--user` took it back: never evidence again
            skipped["revoked"] = skipped.get("revoked", 0) + 1
            continue
        found = verified_answer(t)
        if found is None:
            skipped["unverified"] = skipped.get("unverified", 0) + 1
            continue
        answer, source = found
        counts: dict[str, int] = {}

        def clean(s: str, counts: dict[str, int] = counts) -> str:
            text, c = red.redact(s)
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
            return text

        prompt = [{"role": m["role"], "content": clean(m["content"])} for m in _prompt(t, system)]
        chosen = clean(_text(answer))
        meta = {"trace_id": t.id, "task": t.name, "source": source, "user": t.user_id, "agent": t.agent_id,
                "org": t.org_id}
        ds.sft.append({"messages": [*prompt, {"role": "assistant", "content": chosen}], **meta,
                       "redactions": dict(counts)})
        if source == "correction" and t.output is not None:
            rejected = clean(_text(t.output))
            if rejected.strip() != chosen.strip():
                ds.pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, **meta,
                                 "redactions": dict(counts)})
    ds.skipped = skipped
    return ds
