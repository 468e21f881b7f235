"""G2: learn the structure of a text task's answers as an output schema, so replies are checked and repaired.

A task answered in free text often has answers of one shape: a number (`"1,234.5"`), or
one of a few labels (`"(A)"` ... `"(E)"`, `"True"` / `"False"`). When the verified answers
say so, the schema learner proposes that shape as the task's output schema:

    verified outputs            schema proposed
    "12.5", "1,040", "-3"   ->  {"type": "string", "pattern": "^-?[0-9][0-9,]*(\\.[0-9]+)?$"}
    "(A)", "(C)", "(A)" ... ->  {"type": "string", "enum": ["(A)", "(B)", "(C)"]}

The runtime then validates every LLM reply against it and asks once for a repair
(`TaskRuntime._repair_text`), and code answers that break it fall back to the LLM. The
learned schema is recorded in `tasks/<name>/schema.json` with the schema it replaced;
when a verified answer later breaks it, the lifecycle drops it again (`grades.decide`,
rule "schema"). Like every harness change it is gated: a schema that costs repair turns
and wins no case is rejected ("better, not just different").
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from crystallise.harness.learn import VerifiedCase, is_gate_case
from crystallise.harness.spec import TaskSpec, View, task_path
from crystallise.types import ChangeSet, Delta

__all__ = ["NUMBER_PATTERN", "SchemaLearner", "infer_schema"]

NUMBER_PATTERN = r"^-?[0-9][0-9,]*(\.[0-9]+)?$"
_NUMBER = re.compile(NUMBER_PATTERN)


def infer_schema(outputs: Sequence[Any], *, min_cases: int = 12, max_labels: int = 12) -> dict[str, Any] | None:
    """A string schema every output fits, when the outputs share a shape; None otherwise.

    >>> infer_schema(["1.5", "2", "1,000"] * 4)["pattern"] == NUMBER_PATTERN
    True
    >>> infer_schema(["yes", "no", "yes"] * 4)
    {'type': 'string', 'enum': ['no', 'yes']}
    >>> animals = "cat dog owl bee ant elk emu yak cow pig hen fox".split()
    >>> infer_schema([f"the {animal} sat" for animal in animals]) is None
    True
    """
    texts = [o.strip() for o in outputs if isinstance(o, str)]
    if len(texts) < min_cases or len(texts) < len(outputs):
        return None
    if all(_NUMBER.match(t) for t in texts):
        return {"type": "string", "pattern": NUMBER_PATTERN}
    counts = Counter(texts)
    if len(counts) <= max_labels and len(counts) * 3 <= len(texts):
        return {"type": "string", "enum": sorted(counts)}
    return None


class SchemaLearner:
    """Proposes a learned output schema (G2) for a text task whose verified answers share a shape."""

    name = "schema"
    layer = "harness"

    def __init__(self, *, min_cases: int = 12, max_labels: int = 12) -> None:
        self.min_cases = min_cases
        self.max_labels = max_labels

    def propose(self, view: View, spec: TaskSpec, cases: Sequence[VerifiedCase]) -> ChangeSet | None:
        if spec.output_schema != {"type": "string"}:
            return None  # a schema given by the user, or one already learned, is not replaced
        learn = [c for c in cases if not is_gate_case(c.input)]
        schema = infer_schema([c.output for c in learn], min_cases=self.min_cases, max_labels=self.max_labels)
        if schema is None:
            return None
        grade = spec.grade if spec.grade >= "G2" else "G2"
        new = TaskSpec(**{**spec.__dict__, "output_schema": schema, "grade": grade})
        spec_path, schema_path = task_path(spec.name, "spec.json"), task_path(spec.name, "schema.json")
        record = {"learned": True, "schema": schema, "replaces": spec.output_schema, "cases": len(learn),
                  "learner": self.name}
        kind = "enum" if "enum" in schema else "pattern"
        return ChangeSet(
            learner=self.name,
            layer="harness",
            deltas=[
                Delta(op="set", target="artifact", path=spec_path, before=view.read(spec_path), after=new.to_json(),
                      reason=f"output schema learned from {len(learn)} verified answers ({kind})"),
                Delta(op="set", target="artifact", path=schema_path, before=view.read(schema_path),
                      after=json.dumps(record, indent=1, sort_keys=True) + "\n", reason="how the schema was learned"),
            ],
            summary=f"{spec.name}: output schema ({kind}) from {len(learn)} verified answers ({spec.grade} → {grade})",
            provenance=[c.trace_id for c in learn],
            evidence={"task": spec.name, "schema": schema, "cases": len(learn)},
        )
