"""Small builders shared by the loop, SDK and CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

from crystallise.home import Home


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
