"""The cheapest program: a table of verified input -> output.

It answers only inputs it has seen verified and abstains on everything else, so it
can never be wrong on a new input — it just rarely helps unless inputs repeat (the learner
proposes one only then).
Conflicting outputs for one input are left out (the evidence disagrees).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from crystallise.harness.synth.base import Candidate, Problem

__all__ = ["LookupStrategy"]


class LookupStrategy:
    name = "lookup"

    def synthesise(self, cases: Sequence[tuple[Any, Any]], *, min_repeats: int = 1) -> str | None:
        table: dict[str, Any] = {}
        conflicted: set[str] = set()
        for x, y in cases:
            key = json.dumps(x, sort_keys=True, ensure_ascii=False)
            if key in table and table[key] != y:
                conflicted.add(key)
            table.setdefault(key, y)
        for key in conflicted:
            table.pop(key)
        if not table:
            return None
        body = json.dumps(dict(sorted(table.items())), indent=1, ensure_ascii=False)
        return (
            '"""Crystallised by the lookup strategy: verified input -> output; abstains elsewhere."""\n'
            "import json\n\n"
            f"TABLE = json.loads({body!r})\n\n\n"
            "def unit(value):\n"
            "    return \"table\" if json.dumps(value, sort_keys=True, ensure_ascii=False) in TABLE else None\n\n\n"
            "def solve(value):\n"
            "    return TABLE.get(json.dumps(value, sort_keys=True, ensure_ascii=False))\n"
        )

    def propose(self, problem: Problem) -> Candidate | None:
        """A table, only when some input repeats (otherwise it would answer nothing new).

        It is verified by construction — it answers exactly the inputs it holds, with their
        verified answer — so the learner gives it all learning cases, not just the fit ones."""
        keys = [json.dumps(c.input, sort_keys=True, ensure_ascii=False) for c in problem.fit]
        if len(set(keys)) == len(keys):
            return None
        src = self.synthesise([(c.input, c.output) for c in problem.fit])
        if src is None:
            return None
        return Candidate(self.name, src, notes={"entries": len(set(keys))})
