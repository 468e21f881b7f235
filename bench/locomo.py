"""`crystallise bench locomo`: evidence recall of context retrieval on LoCoMo conversations.

For each sample (one long conversation between two people):

  1. ingest: each session becomes one trace of the user `<sample_id>` (agent "locomo")
  2. learn: memories from the trace through the normal write path — a change set of
     user-level item deltas committed by the `Committer` (the store's ledger, never git);
     one item per turn: "<speaker> (<session date>): <text> [photo: <caption>]", with
     the turn's dia_id in `meta["dia_ids"]`, the session date in `meta["observed_at"]` and
     the trace in its provenance; with `--turn-context` (default) the turns before and
     after it in `meta["context"]`: matched by BM25, never shown or embedded (index.py)
  3. retrieve: for each question, `retrieve.search(question, user=<sample_id>)`; an item
     counts for the evidence turns it came from (its dia_ids)
  4. score (the official RAG evidence recall): recall@k = |evidence ∩ dia_ids of the top k| / |evidence|,
     over questions of categories 1-4 with at least one valid evidence id

The floor is BM25 over the raw turn texts (no speaker, no date), per conversation, by the
same BM25 code (lexical.py): the issue quotes Recall@10 = .567 for it.

Assembly latency is the wall time of `crystallise.context(...)` for each question with its
query embedding already computed (cached, batched); the query embedding is timed on its own
(`embed_ms_*`, one question at a time, on 100 questions spread over the file), so the two
add up to what an agent pays.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from crystallise.errors import ValidationError
from crystallise.report import pyplot

EMBED_TIMED = 100  # questions whose embedding is timed alone (spread over the file)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


def load_samples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValidationError(f"no such data file: {path} (pass --data PATH to locomo_dev.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValidationError(f"{path} is not valid JSON ({e.msg}): pass the LoCoMo file (a JSON list)") from e
    if not isinstance(data, list) or not all(isinstance(s, dict) and {"qa", "conversation"} <= s.keys() for s in data):
        raise ValidationError(f"{path}: expected a JSON list of samples with 'qa' and 'conversation' (LoCoMo format)")
    return data


def sessions(sample: dict[str, Any]) -> list[tuple[int, str, list[dict[str, Any]]]]:
    """(session number, date text, turns) in order."""
    conv = sample["conversation"]
    out = []
    for key, turns in conv.items():
        if key.startswith("session_") and isinstance(turns, list) and key[8:].isdigit():
            n = int(key[8:])
            out.append((n, str(conv.get(f"session_{n}_date_time", "")), turns))
    return sorted(out, key=lambda s: s[0])


def turn_text(turn: dict[str, Any], date: str) -> str:
    text = f"{turn.get('speaker', '?')} ({date}): {turn.get('text', '')}"
    if turn.get("blip_caption"):
        text += f" [photo: {turn['blip_caption']}]"
    return text


def questions(sample: dict[str, Any], valid: set[str]) -> list[dict[str, Any]]:
    """QA of categories 1-4 with their valid evidence ids (questions without any are left out)."""
    out = []
    for qa in sample["qa"]:
        cat = qa.get("category")
        evidence = [e for e in qa.get("evidence", []) if e in valid]
        if cat in CATEGORIES and evidence:
            out.append({"question": str(qa["question"]), "category": cat, "evidence": set(evidence)})
    return out


def turn_context(turns: list[dict[str, Any]], i: int, width: int) -> str:
    """The `width` turns before and after turn i of one session, as "<speaker>: <text>" lines."""
    near = turns[max(0, i - width) : i] + turns[i + 1 : i + 1 + width]
    return "\n".join(f"{t.get('speaker', '?')}: {t.get('text', '')}" for t in near)


def learn_conversation(home: Any, sample: dict[str, Any], kind: str, context_width: int = 2) -> int:
    """Ingest one sample as traces of its user and commit its memories; returns the items written."""
    from crystallise.context.query_dates import parse_date
    from crystallise.engine.committer import Committer
    from crystallise.types import ChangeSet, Delta, Item, Scope, Trace, Verdict

    user = str(sample.get("sample_id", "conv"))
    committer = Committer(home)
    written = 0
    for n, date, turns in sessions(sample):
        when = parse_date(date)  # the session's date: when these things were said
        trace = Trace(name="conversation", agent_id="locomo", user_id=user, session_id=f"{user}-s{n}",
                      input=[{"dia_id": t.get("dia_id"), "speaker": t.get("speaker"), "text": t.get("text")}
                             for t in turns], metadata={"session": n, "date": date})
        if when is not None:
            trace.started_at = when
        trace = home.store.write_trace(trace)
        items = []
        for i, t in enumerate(turns):
            if not t.get("dia_id"):
                continue
            meta: dict[str, Any] = {"dia_ids": [t["dia_id"]], "session": n, "date": date}
            if when is not None:
                meta["observed_at"] = when
            if context_width > 0:
                meta["context"] = turn_context(turns, i, context_width)
            items.append(Item(text=turn_text(t, date), kind=kind, level="user", agent_id="locomo", user_id=user,
                              section="conversation", source="user", provenance=[trace.id], meta=meta))
        cs = ChangeSet(learner="memories", layer="context", scope=Scope(agent="locomo", user=user),
                       deltas=[Delta(op="add", target="item", item_id=i.id, after=i.to_dict(),
                                     reason="memory from the user's conversation") for i in items],
                       summary=f"memories: +{len(items)} from {user} session {n}", provenance=[trace.id],
                       verdict=Verdict(decision="accept", reason="user-level memories (store ledger, revertible)"))
        committer.commit(cs)
        written += len(items)
    return written


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def score(rows: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Mean recall@k overall and per category over scored question rows."""
    out: dict[str, Any] = {"n": len(rows), "recall": {}, "by_category": {}}
    for k in ks:
        out["recall"][str(k)] = round(statistics.fmean(r["recall"][k] for r in rows), 4) if rows else 0.0
    if rows and all("session" in r for r in rows):
        out["session_any"] = {str(k): round(statistics.fmean(r["session"][k] for r in rows), 4) for k in ks}
    for cat in CATEGORIES:
        sub = [r for r in rows if r["category"] == cat]
        out["by_category"][str(cat)] = {"n": len(sub), **{
            str(k): round(statistics.fmean(r["recall"][k] for r in sub), 4) if sub else 0.0 for k in ks}}
    return out


def floor(samples: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """BM25 over raw turn texts, per conversation: the issue's floor."""
    from crystallise.context.lexical import BM25Index

    rows = []
    for sample in samples:
        ids: list[str] = []
        ix = BM25Index()
        for _, _, turns in sessions(sample):
            for t in turns:
                if t.get("dia_id"):
                    ix.add(len(ids), str(t.get("text", "")))
                    ids.append(t["dia_id"])
        for q in questions(sample, set(ids)):
            top = [ids[s] for s, _ in ix.search(q["question"], max(ks))]
            rows.append({"category": q["category"],
                         "recall": {k: len(q["evidence"] & set(top[:k])) / len(q["evidence"]) for k in ks}})
    return score(rows, ks)


def _plot(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()  # matplotlib (the bench extra), or an ImportError that names it

    ks = list(result["recall"])
    cats = [("all", result["recall"], result["floor"]["recall"])] + [
        (f"{c} {CATEGORIES[int(c)]}", result["by_category"][c], result["floor"]["by_category"][c])
        for c in result["by_category"]]
    fig, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 3.6), sharey=True)
    axes = axes if len(ks) > 1 else [axes]
    for ax, k in zip(axes, ks):
        xs = range(len(cats))
        ax.bar([x - 0.2 for x in xs], [c[2][k] for c in cats], width=0.4, label="floor: BM25 over raw turns")
        ax.bar([x + 0.2 for x in xs], [c[1][k] for c in cats], width=0.4, label=f"crystallise {result['mode']}")
        ax.set_xticks(list(xs), [c[0] for c in cats], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"Recall@{k}")
        ax.axhline(0.8, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"LoCoMo evidence recall, n={result['n']} ({result['embedder']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "recall.png", dpi=120)
    plt.close(fig)


def _report(result: dict[str, Any], out: Path) -> None:
    ks = list(result["recall"])
    lines = [f"# LoCoMo evidence recall ({result['mode']}, {result['embedder']})", "",
             f"n = {result['n']} questions (categories 1-4 with valid evidence), {result['items']} items, "
             f"{result['samples']} conversations", "",
             "| | " + " | ".join(f"R@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks),
             "| crystallise | " + " | ".join(f"{result['recall'][k]:.3f}" for k in ks) + " |",
             "| floor (BM25, raw turns) | " + " | ".join(f"{result['floor']['recall'][k]:.3f}" for k in ks) + " |"]
    if "session_any" in result:
        lines.append("| crystallise, session level (any evidence among the first k sessions) | " +
                     " | ".join(f"{result['session_any'][k]:.3f}" for k in ks) + " |")
    for c, row in result["by_category"].items():
        lines.append(f"| {c} {CATEGORIES[int(c)]} (n={row['n']}) | " + " | ".join(f"{row[k]:.3f}" for k in ks) + " |")
    for name, other in result.get("compare", {}).items():
        lines.append(f"| {name} | " + " | ".join(f"{other['recall'][k]:.3f}" for k in ks) + " |")
    lines += ["", f"assembly ms p50 {result['assembly_ms_p50']}, p95 {result['assembly_ms_p95']} "
              f"(query embedding excluded: p50 {result['embed_ms_p50']}, p95 {result['embed_ms_p95']})", "",
              "![recall](recall.png)", ""]
    (out / "report.md").write_text("\n".join(lines))


@click.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help="locomo_dev.json")
@click.option("--k", "ks_text", default="5,10,25", show_default=True, help="Comma-separated cut-offs.")
@click.option("--mode", type=click.Choice(["hybrid", "lexical", "vector"]), default="hybrid", show_default=True)
@click.option("--follow-links", is_flag=True, help="Also rank the items linked to the top hits (one hop).")
@click.option("--kind", type=click.Choice(["note", "memory"]), default="note", show_default=True,
              help="Item kind of the learned memories (notes get links).")
@click.option("--turn-context", "context_width", type=int, default=2, show_default=True,
              help="Turns before and after each turn indexed with it for BM25 (meta.context); 0 = none.")
@click.option("--no-dates", is_flag=True, help="Ignore dates named in the questions (no date list).")
@click.option("--embedder", default=None, help="auto, minilm, hash (default: the home's, else auto).")
@click.option("--limit", type=int, default=None, help="Use the first N samples.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/locomo"), show_default=True)
@click.option("--compare", is_flag=True,
              help="Also score the other modes (lexical, vector, hybrid with/without links) on the same home.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def command(data_path: Path, ks_text: str, mode: str, follow_links: bool, kind: str, context_width: int,
            no_dates: bool, embedder: str | None, limit: int | None, out_dir: Path, compare: bool,
            as_json: bool) -> None:
    """LoCoMo: Recall@k of retrieved memories against the questions' evidence turns."""
    import os

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import crystallise
    from crystallise.context.embed import ENV_EMBEDDER
    from crystallise.context.index import index_for
    from crystallise.engine.serving import search
    from crystallise.engine.home import Home

    console = Console(stderr=True)
    try:
        ks = sorted({int(k) for k in ks_text.split(",") if k.strip()})
    except ValueError:
        raise ValidationError(f"--k must be comma-separated integers like 5,10,25, not {ks_text!r}") from None
    if not ks or ks[0] < 1:
        raise ValidationError("--k needs at least one positive cut-off")
    if context_width < 0:
        raise ValidationError(f"--turn-context must be 0 or more, not {context_width}")
    samples = load_samples(data_path)[:limit]
    dates = not no_dates
    if embedder:
        os.environ[ENV_EMBEDDER] = embedder
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    assembly_ms: list[float] = []
    embed_ms: list[float] = []
    n_items = 0
    links_written = 0
    variants = {f"{m}{' + links' if links else ''}{'' if d else ', no dates'}": (m, links, d)
                for m in ("hybrid", "lexical", "vector") for links in (False, True) for d in (True, False)
                if compare and (m, links, d) != (mode, follow_links, dates) and (m == "hybrid" or not links)}
    compared: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="locomo-home-") as tmp:
        home = Home.init(Path(tmp) / "home")
        emb = home.embedder()
        inner = getattr(emb, "inner", emb)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
            job = bar.add_task("ingest", total=len(samples))
            for sample in samples:
                n_items += learn_conversation(home, sample, kind, context_width)
                bar.update(job, advance=1, description=f"ingest {sample.get('sample_id')}")
            index = index_for(home.store, emb)
            embed_job = bar.add_task(f"embed ({emb.name})", total=n_items)
            index.sync(home.store, progress=lambda _d, done, total: bar.update(embed_job, completed=done, total=total))
            bar.update(embed_job, completed=n_items, total=n_items)
            if kind == "note":  # a bulk load links notes on request (notes.py), as `crystallise notes link` does
                from crystallise.context.notes import link_all

                bar.update(embed_job, description="linking notes")
                links_written = link_all(home.store, index)
            qs = [(s, q) for s in samples for q in questions(s, {d for t in _turns(s) for d in [t.get("dia_id")] if d})]
            ejob = bar.add_task("embed questions", total=len(qs))
            for start_q in range(0, len(qs), 64):  # batched into the embedder's cache: assembly is timed without it
                emb.embed([q["question"] for _, q in qs[start_q : start_q + 64]])
                bar.update(ejob, advance=len(qs[start_q : start_q + 64]))
            for _, q in qs[:: max(1, len(qs) // EMBED_TIMED)]:  # one question at a time, as an agent pays it
                t0 = time.perf_counter()
                inner.embed([q["question"]])
                embed_ms.append((time.perf_counter() - t0) * 1e3)
            qjob = bar.add_task("retrieve", total=len(qs))
            for i, (sample, q) in enumerate(qs):
                user = str(sample.get("sample_id", "conv"))
                t0 = time.perf_counter()
                crystallise.context(agent="locomo", user=user, query=q["question"], mode=mode,
                                    follow_links=follow_links, home=home)
                assembly_ms.append((time.perf_counter() - t0) * 1e3)
                found = search(q["question"], agent="locomo", user=user, k=max(ks), mode=mode,  # type: ignore[arg-type]
                               follow_links=follow_links, dates=dates, home=home)
                rows.append({"category": q["category"], "sample": user, "recall": _recall(found, q["evidence"], ks),
                             "session": _session_hit(found, q["evidence"], ks)})
                for name, (m, links, d) in variants.items():
                    hits = search(q["question"], agent="locomo", user=user, k=max(ks), mode=m,  # type: ignore[arg-type]
                                  follow_links=links, dates=d, home=home)
                    compared[name].append({"category": q["category"], "recall": _recall(hits, q["evidence"], ks)})
                bar.update(qjob, advance=1)
                if not console.is_terminal and (i + 1) % max(1, len(qs) // 10) == 0:
                    console.log(f"{i + 1}/{len(qs)} questions, R@{ks[-1]} so far "
                                f"{statistics.fmean(r['recall'][ks[-1]] for r in rows):.3f}")
        home.close()
    result = score(rows, ks)
    result["by_sample"] = {sid: score([r for r in rows if r["sample"] == sid], ks)["recall"]
                           for sid in dict.fromkeys(r["sample"] for r in rows)}
    result.update({
        "assembly_ms_p50": round(pct(assembly_ms, 0.5), 2), "assembly_ms_p95": round(pct(assembly_ms, 0.95), 2),
        "embed_ms_p50": round(pct(embed_ms, 0.5), 2), "embed_ms_p95": round(pct(embed_ms, 0.95), 2),
        "floor": floor(samples, ks), "mode": mode, "follow_links": follow_links, "kind": kind,
        "turn_context": context_width, "dates": dates,
        "embedder": emb.name, "items": n_items, "samples": len(samples), "links": links_written,
        "wall_s": round(time.perf_counter() - start, 1),
    })
    if compare:
        result["compare"] = {name: score(rs, ks) for name, rs in compared.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    _report(result, out_dir)
    _plot(result, out_dir)
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(f"LoCoMo n={result['n']} {mode} ({emb.name}): " + ", ".join(
            f"R@{k} {result['recall'][str(k)]:.3f} (floor {result['floor']['recall'][str(k)]:.3f}, session-level "
            f"{result.get('session_any', {}).get(str(k), float('nan')):.3f})" for k in ks)
            + f"; assembly p50 {result['assembly_ms_p50']} ms p95 {result['assembly_ms_p95']} ms; report {out_dir}")


def _recall(hits: list[Any], evidence: set[str], ks: list[int]) -> dict[int, float]:
    """Evidence recall at each k: an item counts for the dia_ids it came from."""
    dia = [list(h.item.meta.get("dia_ids", [])) for h in hits]
    return {k: len(evidence & {d for ds in dia[:k] for d in ds}) / len(evidence) for k in ks}


def _session(dia_id: str) -> str:
    """The session of a turn id ("D3:5" -> "D3")."""
    return dia_id.partition(":")[0]


def _session_hit(hits: list[Any], evidence: set[str], ks: list[int]) -> dict[int, float]:
    """Session-level any-evidence recall at each k: 1 when one of the first k distinct sessions of the
    ranking (each item's session, in rank order, among the items retrieved) holds any evidence turn,
    else 0 — the unit systems that retrieve whole sessions report (a published one: 93.9 % at k = 5)."""
    wanted = {_session(d) for d in evidence}
    ranked: list[str] = []
    for h in hits:
        for d in h.item.meta.get("dia_ids", []):
            if _session(d) not in ranked:
                ranked.append(_session(d))
    return {k: float(bool(wanted & set(ranked[:k]))) for k in ks}


def _turns(sample: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for _, _, turns in sessions(sample) for t in turns]
