"""Versions: `log`, `show`, `diff`, `revert` — git is the audit trail, the store the ledger."""

from __future__ import annotations

import datetime as dt

import click
from rich.table import Table

from crystallise.errors import NotFoundError


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def register(main: click.Group) -> None:
    from crystallise.cli import emit, open_home, out

    @main.command()
    @click.option("--limit", default=30, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def log(ctx: click.Context, limit: int, as_json: bool) -> None:
        """Versions, newest first, with their gate verdict and provenance."""
        home = open_home(ctx)
        versions = home.store.list_versions(limit=limit)
        if emit([v.to_dict() for v in versions], as_json):
            return
        table = Table("version", "when", "commit", "change", "verdict", "from traces")
        for v in versions:
            state = f" [dim](reverted by {v.reverted_by})[/dim]" if v.reverted_by else ""
            table.add_row(str(v.number), _when(v.created_at), v.commit[:8] or "—", v.message[:60] + state,
                          ((v.verdict or {}).get("reason") or "")[:70], str(len(v.provenance)))
        out.print(table)

    @main.command()
    @click.argument("version", type=int)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def show(ctx: click.Context, version: int, as_json: bool) -> None:
        """One version: its change set, verdict, provenance and the git patch."""
        home = open_home(ctx)
        v = home.store.get_version(version)
        cs = home.store.get_changeset(v.changeset_id)
        patch = home.repo.show(v.commit) if v.commit else "(user-level change: recorded in the store ledger only)"
        if emit({"version": v.to_dict(), "changeset": cs.to_dict(), "patch": patch}, as_json):
            return
        out.print(f"[bold]version {v.number}[/bold]  {v.message}")
        out.print(f"learner {cs.learner} ({cs.layer} layer), {len(cs.deltas)} delta(s), commit {v.commit or '—'}")
        if v.verdict:
            out.print(f"gate: {v.verdict.get('reason')}")
        if v.reverts:
            out.print(f"reverts version {v.reverts}")
        if v.reverted_by:
            out.print(f"[yellow]reverted by version {v.reverted_by}[/yellow]")
        more = " …" if len(v.provenance) > 5 else ""
        out.print(f"provenance: {len(v.provenance)} trace(s) {', '.join(v.provenance[:5])}{more}")
        click.echo(patch)

    @main.command()
    @click.argument("a", type=int)
    @click.argument("b", type=int)
    @click.pass_context
    def diff(ctx: click.Context, a: int, b: int) -> None:
        """What changed in the artifacts between versions A and B."""
        home = open_home(ctx)
        va, vb = home.store.get_version(a), home.store.get_version(b)
        if not va.commit or not vb.commit:
            raise NotFoundError("one of these versions changed user-level items only: it has no git commit to diff")
        click.echo(home.repo.diff(va.commit, vb.commit))

    @main.command()
    @click.argument("version", type=int, required=False)
    @click.option("--trace", "traces", multiple=True, help="Undo everything learned from this trace (repeatable).")
    @click.option("--user", default=None, help="Undo everything learned from this user's traces and memories.")
    @click.option("--reason", default="requested by the user", show_default=True)
    @click.option("--dry-run", is_flag=True, help="Say what an undo by --trace/--user would do; change nothing.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def revert(ctx: click.Context, version: int | None, traces: tuple[str, ...], user: str | None, reason: str,
               dry_run: bool, as_json: bool) -> None:
        """Undo a version, or everything learned from a trace or user, as one new version."""
        from crystallise.errors import ValidationError
        from crystallise.engine.undo import plan_undo, undo
        from crystallise.engine.committer import Committer
        from crystallise.governance.protect import Actor

        home = open_home(ctx)
        if version is not None:
            if traces or user:
                raise ValidationError("give a VERSION, or --trace/--user, not both")
            new = Committer(home).revert(version, reason=reason, actor=Actor.cli())
            if not emit(new.to_dict(), as_json):
                out.print(f"version {new.number} reverts version {version} (commit {new.commit[:8] or '—'})")
            return
        if dry_run:
            plan = plan_undo(home, traces=traces, user=user, reason=reason)
            if not emit(plan.to_dict(), as_json):
                out.print(f"would undo {plan.cause}: {plan.to_dict()}", highlight=False)
            return
        plan, new = undo(home, traces=traces, user=user, reason=reason, actor=Actor.cli())
        if emit({"plan": plan.to_dict(), "version": new.to_dict() if new else None}, as_json):
            return
        if new is None:
            out.print(f"nothing was learned from {plan.cause}; its {len(plan.traces)} trace(s) are marked revoked")
            return
        out.print(f"version {new.number} undoes {plan.cause}: versions {plan.versions or '—'}, "
                  f"files {len(plan.files)}, items retired {len(plan.retired)}, trimmed {len(plan.trimmed)}, "
                  f"eval cases voided {len(plan.voided_cases)}; {len(plan.traces)} trace(s) revoked")
