"""Retrieval and skills on the command line: `recall`, `index`, `notes`, `skills`.

    crystallise recall "refund window" --user u1 [--k 10] [--mode hybrid] [--follow-links] [--json]
    crystallise index backfill                   embed every item that has no vector yet
    crystallise notes link [--relink]            link notes to their nearest related items
    crystallise skills list|show NAME|import DIR|export DIR|learn [--min-traces 3]
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table


def register(main: click.Group) -> None:
    from crystallise.cli import console, emit, open_home, out

    @main.command()
    @click.argument("query")
    @click.option("--agent", default="default", show_default=True)
    @click.option("--org", default=None)
    @click.option("--user", default=None)
    @click.option("--k", default=10, show_default=True)
    @click.option("--kind", type=click.Choice(["memory", "bullet", "skill", "note"]), default=None)
    @click.option("--mode", type=click.Choice(["hybrid", "lexical", "vector"]), default="hybrid", show_default=True)
    @click.option("--follow-links", is_flag=True, help="Also rank items linked to the top hits (one hop).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def recall(ctx: click.Context, query: str, agent: str, org: str | None, user: str | None, k: int,
               kind: str | None, mode: str, follow_links: bool, as_json: bool) -> None:
        """The items most relevant to QUERY that a scope may see (hybrid BM25 + embeddings)."""
        from crystallise.engine.serving import search

        timings: dict[str, float] = {}
        hits = search(query, agent=agent, org=org, user=user, k=k, kind=kind, mode=mode,  # type: ignore[arg-type]
                      follow_links=follow_links, home=open_home(ctx), timings=timings)
        rows = [{"score": round(h.score, 5), "ranks": h.ranks, **h.item.to_dict()} for h in hits]
        if emit({"hits": rows, "timings_ms": timings}, as_json):
            return
        table = Table("score", "ranks", "item", "kind", "scope", "text")
        for h in hits:
            table.add_row(f"{h.score:.4f}", " ".join(f"{k}:{v}" for k, v in h.ranks.items()), h.item.id,
                          h.item.kind, h.item.level, h.item.text[:80])
        out.print(table)
        out.print(" ".join(f"{k} {v:.2f} ms" for k, v in timings.items()))

    @main.group()
    def index() -> None:
        """The retrieval index (vectors are computed lazily; backfill computes them now)."""

    @index.command("backfill")
    @click.option("--embedder", default=None, help="auto, minilm or hash (default: the home's).")
    @click.pass_context
    def index_backfill(ctx: click.Context, embedder: str | None) -> None:
        """Embed every active item that has no stored vector for the embedder."""
        from rich.progress import Progress

        from crystallise.context.embed import get_embedder
        from crystallise.context.index import backfill

        home = open_home(ctx)
        emb = get_embedder(embedder) if embedder else home.embedder()
        with Progress(console=console, transient=True) as bar:
            job = bar.add_task(f"embedding with {emb.name}", total=None)
            counts = backfill(home.store, emb, progress=lambda _d, done, total: bar.update(job, completed=done,
                                                                                           total=total))
        out.print(f"{emb.name}: {counts['items']} items indexed, {counts['embedded']} embedded now")

    @main.group()
    def notes() -> None:
        """Linked notes (A-MEM style)."""

    @notes.command("link")
    @click.option("--relink", is_flag=True, help="Recompute links of notes that already have some.")
    @click.pass_context
    def notes_link(ctx: click.Context, relink: bool) -> None:
        """Link every note to its nearest related items (both directions)."""
        from crystallise.context.index import index_for
        from crystallise.context.notes import link_all

        home = open_home(ctx)
        n = link_all(home.store, index_for(home.store, home.embedder()), relink=relink)
        out.print(f"{n} links written")

    @main.group()
    def skills() -> None:
        """Skills in the Agent Skills format (skills/<name>/SKILL.md)."""

    @skills.command("list")
    @click.option("--agent", default=None, help="Only skills this agent can use.")
    @click.option("--org", default=None)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def skills_list(ctx: click.Context, agent: str | None, org: str | None, as_json: bool) -> None:
        """Skills with their scope, source and trust."""
        from crystallise.engine.skills import list_skills

        found = list_skills(open_home(ctx), agent=agent, org=org)
        rows = [{"name": s.name, "description": s.description, "level": s.level, "agent": s.agent, "org": s.org,
                 "source": s.source, "trust": s.trust, "files": sorted(s.files)} for s in found]
        if emit(rows, as_json):
            return
        table = Table("skill", "scope", "source", "trust", "description")
        for r in rows:
            scope = f"org {r['org']}" if r["level"] == "org" else f"agent {r['agent']}"
            table.add_row(r["name"], scope, r["source"], f"{r['trust']:.2f}", r["description"][:90])
        out.print(table)

    @skills.command("show")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def skills_show(ctx: click.Context, name: str, as_json: bool) -> None:
        """One skill's SKILL.md (its body is what `load_skill` puts in a pack)."""
        from crystallise.engine.skills import load_skill

        s = load_skill(name, home=open_home(ctx))
        if emit({**s.record(), "description": s.description, "text": s.text}, as_json):
            return
        out.print(f"[bold]{s.name}[/bold] ({s.level} {s.org or s.agent}, source {s.source}, trust {s.trust:.2f})")
        click.echo(s.text)

    @skills.command("import")
    @click.argument("folder", type=click.Path(path_type=Path))
    @click.option("--agent", default="default", show_default=True)
    @click.option("--org", default=None, help="Make them org-level skills of this org.")
    @click.option("--trust", default=0.5, show_default=True, type=float)
    @click.pass_context
    def skills_import(ctx: click.Context, folder: Path, agent: str, org: str | None, trust: float) -> None:
        """Import a skill folder (with SKILL.md) or a folder of them, as one version."""
        from crystallise.engine.skills import import_skills

        version, found, skipped = import_skills(open_home(ctx), folder, agent=agent, org=org, trust=trust)
        names = ", ".join(s.name for s in found)
        if version is None:
            out.print(f"nothing changed: {names} already imported as they are")
        else:
            out.print(f"imported {names} as version {version.number} (commit {version.commit[:8]})")
        if skipped:
            console.print("[yellow]skipped binary files[/yellow] (the artifact store keeps text): "
                          + ", ".join(skipped))

    @skills.command("export")
    @click.argument("folder", type=click.Path(path_type=Path))
    @click.option("--name", "names", multiple=True, help="Only these skills (repeatable).")
    @click.pass_context
    def skills_export(ctx: click.Context, folder: Path, names: tuple[str, ...]) -> None:
        """Write skill folders (SKILL.md and their files, as stored) under FOLDER."""
        from crystallise.engine.skills import export_skills

        written = export_skills(open_home(ctx), folder, names=list(names) or None)
        out.print(f"exported {len(written)} skill(s) to {folder}")

    @skills.command("learn")
    @click.option("--agent", default="default", show_default=True)
    @click.option("--org", default=None)
    @click.option("--min-traces", default=3, show_default=True, help="Successful runs a procedure needs.")
    @click.option("--limit", default=10_000, show_default=True, help="Most recent traces to read.")
    @click.pass_context
    def skills_learn(ctx: click.Context, agent: str, org: str | None, min_traces: int, limit: int) -> None:
        """Propose skills from procedures that keep succeeding; the gate decides; accepted ones become versions."""
        from crystallise.context.skill_learner import SkillLearner
        from crystallise.engine.skills import learn_skills

        home = open_home(ctx)
        traces = home.store.list_traces(agent=agent, org=org, limit=limit, with_children=True)
        results = learn_skills(home, learner=SkillLearner(min_traces=min_traces), traces=traces, agent=agent, org=org)
        if not results:
            out.print(f"no new procedure with {min_traces}+ successful runs in {len(traces)} traces")
        for cs, version in results:
            done = f"version {version.number}" if version else cs.status
            out.print(f"{cs.summary}: {done} — {cs.verdict.reason if cs.verdict else ''}")
