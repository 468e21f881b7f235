"""The context layer's write path on the command line: `remember`, `forget`, and `items` show/history/
revert/accept/extract/promote (the `items` group itself, with `items list`, is in inspect.py)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from crystallise.errors import ValidationError


def _when(ts: float | None) -> str:
    return "—" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _time(value: str | None, name: str) -> float | None:
    """Seconds since the epoch from an ISO 8601 date/time ("2024-03-01", "2024-03-01T09:30") or a number."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ValidationError(f"--{name} {value!r} is not a date: use ISO 8601 (2024-03-01 or "
                              "2024-03-01T09:30) or seconds since the epoch") from None


def _scope_options(fn: Any) -> Any:
    for option in reversed([
        click.option("--agent", default="default", show_default=True, help="The agent the item is for."),
        click.option("--org", default=None, help="Org id (org-level item, or the user's org)."),
        click.option("--user", default=None, help="User id (a user-level item: only this user sees it)."),
    ]):
        fn = option(fn)
    return fn


def _item_row(it: Any) -> dict[str, Any]:
    return it.to_dict()


def register(main: click.Group) -> None:
    from crystallise.cli import emit, open_home, out

    @main.command()
    @click.argument("text")
    @_scope_options
    @click.option("--kind", default="memory", show_default=True,
                  type=click.Choice(["memory", "bullet", "note", "skill"]))
    @click.option("--section", default="general", show_default=True, help="Playbook section (strategies, rules, ...).")
    @click.option("--source", default="user", show_default=True,
                  type=click.Choice(["user", "review", "import", "reflection", "tool"]))
    @click.option("--trust", type=float, default=None, help="0..1 (default by source).")
    @click.option("--key", default=None, help="Fact key subject.attribute, e.g. user.city (found by rules if omitted).")
    @click.option("--valid-from", default=None, help="When the fact starts to hold (ISO 8601; default now).")
    @click.option("--valid-to", default=None, help="When it stops holding (ISO 8601).")
    @click.option("--trace", "trace_id", default=None, help="The trace it came from (provenance).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def remember(ctx: click.Context, text: str, agent: str, org: str | None, user: str | None, kind: str,
                 section: str, source: str, trust: float | None, key: str | None, valid_from: str | None,
                 valid_to: str | None, trace_id: str | None, as_json: bool) -> None:
        """Remember TEXT in a scope, now (a user's item never reaches another user)."""
        from crystallise.engine.memory import remember as do_remember

        home = open_home(ctx)
        item = do_remember(text, agent=agent, org=org, user=user, kind=kind, section=section, source=source,
                           trust=trust, key=key, valid_from=_time(valid_from, "valid-from"),
                           valid_to=_time(valid_to, "valid-to"), trace_id=trace_id, home=home)
        if emit(_item_row(item), as_json):
            return
        undo = ("crystallise items revert <change set> (see `crystallise items history "
                f"--user {user}`)" if user else "crystallise revert <version> (see `crystallise log`)")
        keyed = f", key {item.key}" if item.key else ""
        out.print(f"{item.id} {item.status} ({item.level}{keyed}): {escape(item.text)}")
        if item.status == "quarantined":
            out.print(f"quarantined: {item.meta.get('quarantine', {}).get('reason')}; "
                      f"release with `crystallise items accept {item.id}`")
        out.print(f"undo: {undo}", highlight=False)

    @main.command()
    @click.argument("item_id", required=False)
    @click.option("--query", default=None, help="Forget the scope's items containing these words (or this fact key).")
    @_scope_options
    @click.option("--all-orgs", is_flag=True, help="With --user alone: delete the user in every org.")
    @click.option("--yes", is_flag=True, help="With --user alone: confirm the irreversible deletion.")
    @click.option("--rewrite-history", is_flag=True,
                  help="With --user: also rewrite the artifact repository's git history without the user's data "
                       "(commit shas change).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def forget(ctx: click.Context, item_id: str | None, query: str | None, agent: str, org: str | None,
               user: str | None, all_orgs: bool, yes: bool, rewrite_history: bool, as_json: bool) -> None:
        """Forget an item (ID) or the items matching --query (soft, revertible); or, with --user U and
        neither, hard-delete everything of user U: traces, items, ledger, derived items."""
        home = open_home(ctx)
        if item_id is None and query is None:
            if user is None:
                raise ValidationError("forget needs an item ID, --query Q, or --user U (to delete a user's data)")
            _forget_user(home, user, org, all_orgs, yes, as_json, rewrite_history)
            return
        from crystallise.engine.memory import forget as do_forget

        gone = do_forget(item_id, query=query, agent=agent, org=org, user=user, home=home)
        if emit([_item_row(it) for it in gone], as_json):
            return
        if not gone:
            out.print("nothing matched: no item was forgotten")
        for it in gone:
            out.print(f"forgot {it.id} ({it.level}): {escape(it.text)}")

    def _forget_user(home: Any, user: str, org: str | None, all_orgs: bool, yes: bool, as_json: bool,
                     history: bool = False) -> None:
        from crystallise.engine.forget_user import forget_user, rewrite_history

        if not yes:
            if as_json or not click.get_text_stream("stdin").isatty():
                raise ValidationError(f"deleting user {user!r} is irreversible: pass --yes to confirm")
            click.confirm(f"Delete every trace, item and change of user {user!r}"
                          f"{' in org ' + org if org else ''}? This cannot be undone", abort=True)
        reports = forget_user(home, user, org=org, all_orgs=all_orgs)
        rewritten = sum(len(rewrite_history(home, r)) for r in reports) if history else 0
        if emit([{**r.to_dict(), "commits_rewritten": rewritten} for r in reports], as_json):
            return
        for r in reports:
            out.print(f"deleted user {r.user} (org {r.org or '-'}): {r.total} row(s)")
            table = Table("table", "rows deleted")
            for name, n in sorted(r.counts.items()):
                table.add_row(name, str(n))
            out.print(table)
            if r.purge_version:
                out.print(f"derived agent/org items removed from the playbooks in version {r.purge_version}")
        if history:
            out.print(f"git history rewritten without the user's data: {rewritten} commit(s)")

    items = main.commands.get("items")
    if not isinstance(items, click.Group):  # defined by cli/inspect.py, which registers first
        raise RuntimeError("cli/memory.py must be registered after cli/inspect.py (it extends `items`)")

    @items.command("show")
    @click.argument("item_id")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def items_show(ctx: click.Context, item_id: str, as_json: bool) -> None:
        """One item with its history: every delta that changed it, oldest first."""
        from crystallise.engine.memory import find_item, history

        home = open_home(ctx)
        item = find_item(home.store, item_id)  # a reverted item: its last state from the ledger
        rows = history(item_id, home=home)
        if emit({"item": item.to_dict(), "history": rows}, as_json):
            return
        owner = {"agent": item.agent_id, "org": item.org_id, "user": item.user_id}[item.level]
        out.print(f"[bold]{item.id}[/bold] {item.kind} {item.status} — {item.level} {owner}, section {item.section}")
        out.print(f"text: {escape(item.text)}", highlight=False)
        out.print(f"source {item.source}, trust {item.trust:g}, key {item.key or '—'}, valid {_when(item.valid_from)} "
                  f"→ {_when(item.valid_to)}" + (f", superseded by {item.superseded_by}" if item.superseded_by else ""))
        out.print(f"shown {item.shown}, helpful {item.helpful}, harmful {item.harmful}; provenance "
                  f"{len(item.provenance)} trace(s) {', '.join(item.provenance[:5])}")
        if item.meta.get("quarantine"):
            out.print(f"[yellow]quarantined[/yellow]: {json.dumps(item.meta['quarantine'])}")
        if item.meta.get("reverted"):
            out.print(f"[yellow]reverted[/yellow] by {item.meta['reverted']['by']}: no longer stored or shown")
        table = Table("seq", "when", "op", "where", "reason", "text after")
        for r in rows:
            where = f"version {r['version']}" if r["version"] else (r["changeset_id"] or "—")
            after = (r["after"] or {}).get("text", "(deleted)") if r["after"] is not None else "(deleted)"
            table.add_row(str(r["seq"]), _when(r["created_at"]), r["op"], where, escape(r["reason"][:50]),
                          escape(after[:60]))
        out.print(table)

    @items.command("history")
    @click.option("--user", required=True, help="The user whose changes to list.")
    @click.option("--org", default=None)
    @click.option("--limit", default=30, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def items_history(ctx: click.Context, user: str, org: str | None, limit: int, as_json: bool) -> None:
        """A user's changes in the store's user ledger, newest first (agent/org changes: `crystallise log`)."""
        from crystallise.engine.memory import changes

        found = changes(user, org=org, limit=limit, home=open_home(ctx))
        if emit([cs.to_dict() for cs in found], as_json):
            return
        table = Table("change set", "when", "learner", "deltas", "summary", "reverted by")
        for cs in found:
            table.add_row(cs.id, _when(cs.created_at), cs.learner, str(len(cs.deltas)), escape(cs.summary[:60]),
                          str(cs.evidence.get("reverted_by") or ""))
        out.print(table)
        out.print("undo one: crystallise items revert CHANGE_SET_ID")

    @items.command("revert")
    @click.argument("changeset_id")
    @click.option("--reason", default="requested by the user", show_default=True)
    @click.pass_context
    def items_revert(ctx: click.Context, changeset_id: str, reason: str) -> None:
        """Undo a user-level change (a change set of `items history`), as a new change."""
        from crystallise.engine.memory import revert_change

        if changeset_id.isdigit():
            raise ValidationError(f"{changeset_id} looks like a version number: undo versions with "
                                  f"`crystallise revert {changeset_id}`")
        undo = revert_change(changeset_id, reason=reason, home=open_home(ctx))
        out.print(f"{undo.id} reverts {changeset_id} ({len(undo.deltas)} delta(s))")

    @items.command("accept")
    @click.argument("item_id")
    @_scope_options
    @click.option("--reason", default="accepted in review", show_default=True)
    @click.pass_context
    def items_accept(ctx: click.Context, item_id: str, agent: str, org: str | None, user: str | None,
                     reason: str) -> None:
        """Release a quarantined item after review (it becomes active)."""
        from crystallise.engine.memory import accept

        item = accept(item_id, agent=agent, org=org, user=user, reason=reason, home=open_home(ctx))
        out.print(f"{item.id} is {item.status}: {escape(item.text)}")

    @items.command("extract")
    @click.option("--model", default=None, help="Model spec for the LLM extractor (default: rules only).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def items_extract(ctx: click.Context, model: str | None, as_json: bool) -> None:
        """Propose items from traces recorded since the last run; they stay quarantined until corroborated."""
        from crystallise.context.extract import ExtractionLearner, LLMExtractor, RuleExtractor
        from crystallise.engine.extract import run_extraction

        home = open_home(ctx)
        extractor = LLMExtractor(home.backend(model)) if model else RuleExtractor()
        totals = run_extraction(home, learner=ExtractionLearner(extractor=extractor))
        if emit(totals, as_json):
            return
        out.print(", ".join(f"{k} {v}" for k, v in totals.items()))

    @items.command("promote")
    @click.option("--agent", default="default", show_default=True)
    @click.option("--org", default=None, help="Promote lessons of this org's users to the org.")
    @click.option("--min-users", default=3, show_default=True, help="Distinct users a lesson needs.")
    @click.option("--accept", "accept_all", is_flag=True,
                  help="Accept the proposals as their reviewer (otherwise they are kept for review).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def items_promote(ctx: click.Context, agent: str, org: str | None, min_users: int, accept_all: bool,
                      as_json: bool) -> None:
        """Lessons held by several users become org/agent items — through a review verdict."""
        from crystallise.context.promote import PromotionLearner
        from crystallise.engine.promote import promote
        from crystallise.types import Verdict

        def gate(cs: Any) -> Verdict:
            n = cs.evidence.get("distinct_users")
            if accept_all:
                return Verdict(decision="accept", reason=f"accepted in review (crystallise items promote --accept): "
                                                         f"{n} distinct users")
            return Verdict(decision="needs_review", reason=f"{n} distinct users; rerun with --accept to promote")

        committed, held = promote(open_home(ctx), gate=gate, agent=agent, org=org,
                                  learner=PromotionLearner(min_users=min_users))
        if emit({"committed": [v.to_dict() for v in committed], "held": [cs.to_dict() for cs in held]}, as_json):
            return
        for v in committed:
            out.print(f"version {v.number}: {escape(v.message)}")
        for cs in held:
            out.print(f"proposed ({cs.status}): {escape(cs.summary)}")
        if not committed and not held:
            out.print(f"no lesson is held by {min_users} or more distinct users")
