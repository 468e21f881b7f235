"""Looking at what was recorded and learned: `traces`, `items` (`tasks` live in `cli/tasks.py`)."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.table import Table


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: object, n: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(str(text).split())
    return text[: n - 1] + "…" if len(text) > n else text


def register(main: click.Group) -> None:
    from crystallise.cli import emit, open_home, out

    @main.group()
    def traces() -> None:
        """Recorded runs."""

    @traces.command("list")
    @click.option("--agent", default=None)
    @click.option("--user", default=None)
    @click.option("--name", default=None, help="Only traces of this task/run name.")
    @click.option("--limit", default=20, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def traces_list(ctx: click.Context, agent: str | None, user: str | None, name: str | None, limit: int,
                    as_json: bool) -> None:
        """The most recent traces (oldest of them first)."""
        store = open_home(ctx).store
        total = store.count_traces()
        rows = store.list_traces(agent=agent, user=user, name=name, after_seq=0, limit=1_000_000, with_children=True)
        rows = rows[-limit:]
        if emit([t.to_dict() for t in rows], as_json):
            return
        table = Table("trace", "when", "name", "agent/user", "status", "outcome", "input")
        for t in rows:
            table.add_row(t.id, _when(t.started_at), t.name, f"{t.agent_id}/{t.user_id or '-'}", t.status,
                          "—" if t.outcome is None else f"{t.outcome:g}", _short(t.input))
        out.print(table)
        out.print(f"{len(rows)} shown of {total}")

    @traces.command("show")
    @click.argument("trace_id")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def traces_show(ctx: click.Context, trace_id: str, as_json: bool) -> None:
        """One trace with its spans and feedback."""
        t = open_home(ctx).store.get_trace(trace_id)
        if emit(t.to_dict(), as_json):
            return
        out.print(f"[bold]{t.id}[/bold] {t.name} — {t.status}, agent {t.agent_id}, org {t.org_id or '-'}, "
                  f"user {t.user_id or '-'}, {t.metadata.get('latency_ms', '?')} ms")
        out.print(f"input:  {_short(t.input, 400)}")
        out.print(f"output: {_short(t.output, 400)}")
        for s in t.spans:
            extra = {k: v for k, v in s.attributes.items() if k in ("served_by", "llm_calls", "shown_items", "model")}
            out.print(f"  span {s.kind:<9} {s.name:<28} {s.attributes.get('latency_ms', '?')} ms {extra}"
                      + (f" [red]{s.error}[/red]" if s.error else ""))
        for f in t.feedback:
            out.print(f"  feedback ({f.source}/{f.kind}) score={f.score} label={f.label} "
                      f"correction={_short(f.correction, 80)}")

    @main.group()
    def items() -> None:
        """Learned context items."""

    @items.command("list")
    @click.option("--agent", default="default", show_default=True)
    @click.option("--org", default=None)
    @click.option("--user", default=None)
    @click.option("--status", default="active", show_default=True,
                  type=click.Choice(["active", "quarantined", "candidate", "retired", "all"]))
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def items_list(ctx: click.Context, agent: str, org: str | None, user: str | None, status: str,
                   as_json: bool) -> None:
        """Items visible to a scope."""
        statuses = ("active", "quarantined", "candidate", "retired") if status == "all" else (status,)
        rows = open_home(ctx).store.query_items(agent=agent, org=org, user=user, status=statuses)
        if emit([i.to_dict() for i in rows], as_json):
            return
        table = Table("item", "kind", "scope", "status", "source", "shown", "+", "-", "text")
        for i in rows:
            table.add_row(i.id, i.kind, i.level, i.status, i.source, str(i.shown), str(i.helpful), str(i.harmful),
                          _short(i.text, 70))
        out.print(table)
