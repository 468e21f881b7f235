"""`crystallise bench NAME ...`: benchmarks are the modules of the repository's `bench` package.

Each `bench/<name>.py` exposes a click command called `command`; this group finds
and imports them, so benchmarks stay out of the installed library but run through
the same CLI. The folder is `$CRYSTALLISE_BENCH_DIR`, else `bench/` next to the
source tree (an editable install), else `./bench`; `load_bench` puts its parent on
`sys.path` once and imports `bench.<name>` like any module.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import click

from crystallise.errors import ConfigError


def bench_dir() -> Path:
    candidates = [os.environ.get("CRYSTALLISE_BENCH_DIR"),
                  str(Path(__file__).resolve().parents[3] / "bench"), str(Path.cwd() / "bench")]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise ConfigError("no bench/ folder found: run from a crystallise checkout or set CRYSTALLISE_BENCH_DIR")


def load_bench(name: str) -> ModuleType:
    """`bench.<name>`, imported from `bench_dir()` (the one place that puts the bench package on the path)."""
    folder = bench_dir().resolve()
    if folder.name != "bench" or not (folder / "__init__.py").is_file():
        raise ConfigError(f"{folder} is not the bench package: point CRYSTALLISE_BENCH_DIR at a checkout's bench/")
    root = str(folder.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    package = importlib.import_module("bench")
    found = Path(package.__file__ or "").resolve().parent
    if found != folder:
        raise ConfigError(f"`import bench` found {found}, not {folder}: another `bench` package is on sys.path")
    return importlib.import_module(f"bench.{name}")


class BenchGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            return sorted(p.stem for p in bench_dir().glob("*.py") if not p.stem.startswith("_"))
        except ConfigError:
            return []

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name.startswith("_") or not (bench_dir() / f"{name}.py").is_file():
            return None
        return getattr(load_bench(name), "command", None)


def register(main: click.Group) -> None:
    @main.group(cls=BenchGroup)
    def bench() -> None:
        """Benchmarks (bench/*.py); figures go in docs/benchmarks.md."""
