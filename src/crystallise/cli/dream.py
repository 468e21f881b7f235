"""`crystallise dream`: offline learning over the traces since the last dream (context/dream.py)."""

from __future__ import annotations

import datetime as dt

import click
from rich.table import Table

from crystallise.errors import ValidationError


def register(main: click.Group) -> None:
    from crystallise.cli import console, emit, open_home, out

    @main.command()
    @click.option("--since", default=None,
                  help="Re-read traces from here instead of the watermark: a trace seq (120), an ISO date/time "
                       "(2026-11-30T12:00) or a duration back from now (36h, 7d).")
    @click.option("--agent", default=None, help="Dream this agent's scope (default: every scope with new traces).")
    @click.option("--org", default=None, help="Dream this org's scope.")
    @click.option("--user", default=None, help="Dream this user's scope (with --org if the user is in one).")
    @click.option("--model", default=None, help="Model spec for the critiques (default: the home's model).")
    @click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
    @click.option("--history", "history", type=int, default=None, metavar="N",
                  help="Show the last N dream-run records instead of dreaming.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def dream(ctx: click.Context, since: str | None, agent: str | None, org: str | None, user: str | None,
              model: str | None, dry_run: bool, history: int | None, as_json: bool) -> None:
        """Credit, critique failures, curate, dedup and forget — one change set per scope."""
        from crystallise.engine.dream import dream as run_dream
        from crystallise.types import Scope

        home = open_home(ctx)
        if history is not None:
            if history < 1:
                raise ValidationError("--history N needs N >= 1")
            runs = home.store.list_dream_runs(limit=history)
            for r in runs:
                r["report"] = {k: v for k, v in (r.get("report") or {}).items() if not k.startswith("_")}
            if emit(runs, as_json):
                return
            table = Table("run", "when", "scope", "status", "traces", "add", "upd", "merge", "sup", "retire", "version")
            for r in runs:
                c = (r.get("report") or {}).get("counts", {})
                when = dt.datetime.fromtimestamp(r["started_at"]).strftime("%Y-%m-%d %H:%M")
                table.add_row(r["id"], when, r["scope_key"], r["status"], str((r.get("report") or {}).get("traces", 0)),
                              *(str(c.get(k, 0)) for k in ("add", "update", "merge", "supersede", "retire")),
                              str(r.get("version") or "—"))
            out.print(table)
            return
        scope = None
        if agent or org or user:
            scope = Scope(agent=agent or "default", org=org, user=user)

        def say(message: str) -> None:
            if not as_json:
                console.print(message, highlight=False)

        backend = home.backend(model) if model else None
        report = run_dream(home, scope, since=since, dry_run=dry_run, backend=backend, progress=say)
        if emit(report.to_dict(), as_json):
            return
        if not report.scopes:
            out.print("nothing to dream about: no scope has traces since its last dream")
            return
        table = Table("scope", "status", "traces", "failed", "add", "update", "merge", "supersede", "retire",
                      "tokens", "version")
        for s in report.scopes:
            table.add_row(s.key, s.status, str(s.traces), str(s.failures),
                          *(str(s.counts.get(k, 0)) for k in ("add", "update", "merge", "supersede", "retire")),
                          f"{s.tokens_before}→{s.tokens_after}", str(s.version or "—"))
        out.print(table)
        for s in report.scopes:
            for line in s.rejected[:5]:
                out.print(f"  [dim]{s.key}: not applied — {line}[/dim]", highlight=False)
        if dry_run:
            out.print("dry run: nothing was written")
