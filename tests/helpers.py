"""Small builders shared by the loop, SDK and CLI tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from crystallise.engine.home import Home


def ratio_records(n: int, start: int = 1) -> list[dict]:
    """Formula-like records: a fixed template, a ratio of two dollar amounts, 2 decimals."""
    out = []
    for i in range(start, start + n):
        a, b = 1000 * i + 500, 250 * (i % 4 + 1)
        out.append({
            "context": f"Use formula Asset Ratio to answer. Question: a firm has ${a:,} of assets and ${b:,} "
                       f"of debt. Answer:",
            "target": f"{round(a / b, 2)}",
        })
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def new_home(tmp_path: Path, store_url: str | None = None) -> Home:
    return Home.init(tmp_path / "home", store_url=store_url)


def program_files(task: str, source: str) -> dict[str, str]:
    """tasks/<task>/program.json and code.py for an LLM-written `def solve(x)` (the tree holds it as a
    source part: it runs in the sandbox, on the input with surrounding blanks stripped)."""
    from crystallise.harness.programs import FORMAT, render

    tree = {"format": FORMAT, "parts": [{"strategy": "coder", "units": None, "hybrid": False, "body": {
        "kind": "grouped", "mode": "none", "groups": [{
            "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
            "codec": {"kind": "any", "true": "True", "false": "False"}, "fn": {"kind": "source", "source": source}}]}}]}
    return {f"tasks/{task}/code.py": render(tree),
            f"tasks/{task}/program.json": json.dumps({"program": tree}, indent=1, sort_keys=True) + "\n"}


def program_deltas(read, task: str, source: str) -> list:
    """Deltas that set a task's program to `source` (see program_files); `read` gives the current files."""
    from crystallise.types import Delta

    return [Delta(op="set", target="artifact", path=path, before=read(path), after=text)
            for path, text in program_files(task, source).items()]


def wait_for(what: str, fn: Any, timeout: float = 120.0, every: float = 0.25) -> Any:
    """`fn()`'s first truthy value, polled every `every` s; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
