"""`crystallise bench NAME ...`: benchmarks are modules in the repository's `bench/` folder.

Each `bench/<name>.py` exposes a click command called `command`; this group finds
and loads them, so benchmarks stay out of the installed library but run through
the same CLI. The folder is `$CRYSTALLISE_BENCH_DIR`, else `bench/` next to the
source tree (an editable install), else `./bench`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import click

from crystallise.errors import ConfigError


def bench_dir() -> Path:
    candidates = [os.environ.get("CRYSTALLISE_BENCH_DIR"),
                  str(Path(__file__).resolve().parents[3] / "bench"), str(Path.cwd() / "bench")]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise ConfigError("no bench/ folder found: run from a crystallise checkout or set CRYSTALLISE_BENCH_DIR")


class BenchGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            return sorted(p.stem for p in bench_dir().glob("*.py") if not p.stem.startswith("_"))
        except ConfigError:
            return []

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        path = bench_dir() / f"{name}.py"
        if not path.is_file():
            return None
        spec = importlib.util.spec_from_file_location(f"crystallise_bench_{name}", path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, "command", None)


def register(main: click.Group) -> None:
    @main.group(cls=BenchGroup)
    def bench() -> None:
        """Benchmarks (bench/*.py); figures go in docs/benchmarks.md."""
