"""Review mode and change sets: `review require|rules|drop|list|show|approve|reject`, `changesets list`."""

from __future__ import annotations

import datetime as dt

import click
from rich.table import Table

from crystallise.errors import ValidationError
from crystallise.governance import review as rv


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def register(main: click.Group) -> None:
    from crystallise.cli import emit, open_home, out

    @main.group()
    def review() -> None:
        """Learned change sets that wait for a person (review mode)."""

    @review.command("require")
    @click.option("--layer", type=click.Choice(rv.LAYERS), default="*", show_default=True)
    @click.option("--level", type=click.Choice(rv.LEVELS), default="*", show_default=True)
    @click.option("--owner", default=None, help="The agent / org / user id at --level (default: any).")
    @click.pass_context
    def review_require(ctx: click.Context, layer: str, level: str, owner: str | None) -> None:
        """Hold learned change sets of a layer / scope for review from now on."""
        home = open_home(ctx)
        rule = rv.ReviewRule(layer=layer, level=level, owner=owner)
        rules = rv.load_rules(home.config)
        if rule not in rules:
            home.config["review"] = [r.to_dict() for r in [*rules, rule]]
            home.save_config()
        out.print(f"{rule.describe()} — learned change sets that match it now wait in `crystallise review list`")

    @review.command("rules")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def review_rules(ctx: click.Context, as_json: bool) -> None:
        """The review rules of this home."""
        rules = rv.load_rules(open_home(ctx).config)
        if emit([r.to_dict() for r in rules], as_json):
            return
        for i, r in enumerate(rules, 1):
            out.print(f"{i}. {r.describe()}")
        if not rules:
            out.print("no review rules: learned change sets go live on an accept verdict")

    @review.command("drop")
    @click.argument("number", type=int)
    @click.pass_context
    def review_drop(ctx: click.Context, number: int) -> None:
        """Remove review rule NUMBER (as `review rules` numbers them)."""
        home = open_home(ctx)
        rules = rv.load_rules(home.config)
        if not 1 <= number <= len(rules):
            raise ValidationError(f"no review rule {number}: `crystallise review rules` lists {len(rules)}")
        gone = rules.pop(number - 1)
        home.config["review"] = [r.to_dict() for r in rules]
        home.save_config()
        out.print(f"dropped {gone.describe()}")

    @review.command("list")
    @click.option("--limit", default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def review_list(ctx: click.Context, limit: int, as_json: bool) -> None:
        """Proposals waiting for review, newest first."""
        rows = [rv.summary(cs) for cs in rv.pending(open_home(ctx).store, limit)]
        if emit(rows, as_json):
            return
        table = Table("change set", "when", "learner", "layer", "change", "why it waits")
        for r in rows:
            table.add_row(r["id"], _when(r["created_at"]), r["learner"], r["layer"], r["summary"][:50],
                          r["waiting_because"][:60])
        out.print(table if rows else "nothing waits for review")

    @review.command("show")
    @click.argument("changeset_id")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def review_show(ctx: click.Context, changeset_id: str, as_json: bool) -> None:
        """One proposal: its diff, evidence and gate verdict."""
        home = open_home(ctx)
        cs = home.store.get_changeset(changeset_id)
        diff = rv.diff_text(cs, home.repo.read)
        if emit({"changeset": cs.to_dict(), "diff": diff}, as_json):
            return
        out.print(f"[bold]{cs.id}[/bold]  {cs.summary}  ({cs.status})")
        out.print(f"learner {cs.learner}, {cs.layer} layer, scope {cs.scope.to_dict()}, {len(cs.deltas)} delta(s)")
        out.print(f"gate: {cs.verdict.reason if cs.verdict else 'not gated'}")
        out.print(f"provenance: {len(cs.provenance)} trace(s) {', '.join(cs.provenance[:5])}")
        evidence = {k: v for k, v in cs.evidence.items() if k != "review"}
        if evidence:
            out.print(f"evidence: {evidence}", highlight=False)
        click.echo(diff)

    @review.command("approve")
    @click.argument("changeset_id")
    @click.option("--by", required=True, help="Who approves (recorded in the version).")
    @click.option("--note", default="", help="Why.")
    @click.pass_context
    def review_approve(ctx: click.Context, changeset_id: str, by: str, note: str) -> None:
        """Commit a waiting proposal as a version."""
        from crystallise.engine.committer import Committer
        from crystallise.governance.protect import Actor

        home = open_home(ctx)
        version = rv.approve(Committer(home), changeset_id, by=by, note=note, actor=Actor.cli(by))
        out.print(f"approved by {by}: version {version.number} (commit {version.commit[:8] or '—'})")

    @review.command("reject")
    @click.argument("changeset_id")
    @click.option("--by", required=True, help="Who rejects (recorded with the change set).")
    @click.option("--note", default="", help="Why.")
    @click.pass_context
    def review_reject(ctx: click.Context, changeset_id: str, by: str, note: str) -> None:
        """Keep a waiting proposal as rejected evidence."""
        rv.reject(open_home(ctx).store, changeset_id, by=by, note=note)
        out.print(f"rejected by {by}: {changeset_id} stays in the store as evidence")

    @main.group()
    def changesets() -> None:
        """Every change set a learner proposed: committed, rejected or waiting."""

    @changesets.command("list")
    @click.option("--status", type=click.Choice(["proposed", "accepted", "rejected", "needs_review", "committed"]))
    @click.option("--limit", default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def changesets_list(ctx: click.Context, status: str | None, limit: int, as_json: bool) -> None:
        """Change sets, newest first (`review show ID` shows one)."""
        items = open_home(ctx).store.list_changesets(status=status, limit=limit)
        if emit([cs.to_dict() for cs in items], as_json):
            return
        table = Table("change set", "when", "status", "learner", "layer", "change", "verdict")
        for cs in items:
            table.add_row(cs.id, _when(cs.created_at), cs.status, cs.learner, cs.layer, cs.summary[:50],
                          (cs.verdict.reason if cs.verdict else "")[:60])
        out.print(table)
