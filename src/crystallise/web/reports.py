"""Bench reports for the UI: the folders `crystallise bench stream --out DIR` writes.

    reports/
    ├── demo/                      result.json, curve.png, report.md (train-curve.png when offline)
    └── nightly/formula-2026-11/   ... nested up to MAX_DEPTH levels

    find_reports(Path("reports"))          -> [Report(name="demo", result={...}, images=["curve.png"])]
    report_file(Path("reports"), "demo", "curve.png")   -> the file, never anything outside the folder

A folder is a report when it holds a `result.json` object. Names are paths relative to the
reports directory; anything that resolves outside it (`..`, symlinks out) is not found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystallise.errors import NotFoundError

__all__ = ["MAX_DEPTH", "Report", "find_reports", "load_report", "report_file"]

MAX_DEPTH = 3
_SHOWN = (".png", ".md", ".json", ".svg")


@dataclass
class Report:
    name: str
    path: Path
    result: dict[str, Any]
    images: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    modified: float = 0.0
    markdown: str | None = None


def _inside(root: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _read(root: Path, folder: Path, name: str) -> Report | None:
    result_file = folder / "result.json"
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(result, dict):
        return None
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in _SHOWN and _inside(root, p))
    md = folder / "report.md"
    return Report(name=name, path=folder, result=result, images=[f for f in files if f.endswith((".png", ".svg"))],
                  files=files, modified=result_file.stat().st_mtime,
                  markdown=md.read_text(encoding="utf-8", errors="replace") if md.is_file() else None)


def find_reports(root: Path) -> list[Report]:
    """Every report folder under `root`, newest first (by the time result.json was written)."""
    if not root.is_dir():
        return []
    found: list[Report] = []
    frontier = [(root, 0)]
    while frontier:
        folder, depth = frontier.pop()
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        for child in children:
            if not _inside(root, child):
                continue
            report = _read(root, child, child.relative_to(root).as_posix())
            if report is not None:
                found.append(report)
            if depth + 1 < MAX_DEPTH:
                frontier.append((child, depth + 1))
    return sorted(found, key=lambda r: (-r.modified, r.name))


def _folder(root: Path, name: str) -> Path:
    folder = root / name
    if not name or name.startswith("/") or ".." in Path(name).parts or not _inside(root, folder) \
            or not (folder / "result.json").is_file():
        raise NotFoundError(f"no report {name!r} under {root}: the reports page lists them")
    return folder


def load_report(root: Path, name: str) -> Report:
    report = _read(root, _folder(root, name), name)
    if report is None:
        raise NotFoundError(f"report {name!r} has no readable result.json: re-run the benchmark with --out")
    return report


def report_file(root: Path, name: str, filename: str) -> Path:
    """One file of a report folder (an image or report.md); NotFoundError for anything else."""
    folder = _folder(root, name)
    path = folder / filename
    if "/" in filename or filename.startswith(".") or Path(filename).suffix not in _SHOWN \
            or not path.is_file() or not _inside(folder, path):
        raise NotFoundError(f"report {name!r} has no file {filename!r}")
    return path
