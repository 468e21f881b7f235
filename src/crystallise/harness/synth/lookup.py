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
        """The table's rendering (a readable module), or None when no entry survives."""
        body = self.body(cases)
        if body is None:
            return None
        from crystallise.harness.programs.rendering import render_body

        return render_body(body)

    def body(self, cases: Sequence[tuple[Any, Any]]) -> dict[str, Any] | None:
        """The table as a program body (`harness/programs`, kind "lookup"), or None."""
        table: dict[str, Any] = {}
        conflicted: set[str] = set()
        from crystallise.harness.programs.interp import ProgramError, _json_value

        for x, y in cases:
            try:
                key = json.dumps(x, sort_keys=True, ensure_ascii=False, allow_nan=False)
                _json_value(y, "answer")  # NaN/Infinity have no place in a program
            except (ProgramError, TypeError, ValueError):
                continue
            if key in table and table[key] != y:
                conflicted.add(key)
            table.setdefault(key, y)
        for key in conflicted:
            table.pop(key)
        if not table:
            return None
        return {"kind": "lookup", "table": dict(sorted(table.items()))}

    def propose(self, problem: Problem) -> Candidate | None:
        """A table, only when some input repeats (otherwise it would answer nothing new).

        It is verified by construction — it answers exactly the inputs it holds, with their
        verified answer — so the learner gives it all learning cases, not just the fit ones."""
        keys = [json.dumps(c.input, sort_keys=True, ensure_ascii=False) for c in problem.fit]
        if len(set(keys)) == len(keys):
            return None
        body = self.body([(c.input, c.output) for c in problem.fit])
        if body is None:
            return None
        return Candidate(self.name, body, notes={"entries": len(set(keys))})
