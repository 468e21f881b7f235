"""`crystallise bench assembly`: context assembly latency at 1k / 10k / 100k items, on one core.

For each size N a fresh home gets N items written through the store's delta path, with
synthetic text (words drawn from a Zipf-distributed vocabulary, 8-30 words, seeded), so
posting lists are as skewed as in real text. Layout (`--users`): all N items in one
user's scope (the worst case: every query scans all N), or spread over U users.

Timed per query (p50 / p95 over `--queries` queries, after one warm-up that loads the
index; that load is reported on its own), as wall time and as the thread's CPU time
(`cpu_p50`/`cpu_p95`: what the call costs one core, whatever else shares it; it leaves out
I/O waits such as the fsync of the `shown` counter write):

    store FTS        the store's own lexical search (`Store.query_items(text=...)`), for comparison
    lexical          retrieve.search(mode="lexical"): sync + in-process BM25 + re-read of the winners
    hybrid           retrieve.search(mode="hybrid") with the query vector already computed
    assemble         crystallise.context(...) hybrid, the whole pack (includes the `shown` counter write),
                     also by stage from `pack.timings`: sync (index watermark read), embed (the query
                     vector, cached here), search (BM25 + matvec + fusion), fetch (re-read of the
                     winners), pack (budget + text), record (the `shown` counter write)
    query embedding  the embedder on one query, alone (MiniLM when installed); `assemble_with_query_embedding`
                     adds query i's embedding time to query i's assembly time: what an agent pays uncached

One core: the process pins itself to one CPU (`sched_setaffinity`) and limits BLAS and
torch to one thread. Vectors: `--embedder` (default `hash:384`, the same shape as MiniLM's;
search cost depends on N and the dimension, not on the model), query embedding timed with
`--query-embedder` (default minilm when installed).
"""

from __future__ import annotations
from crystallise.report import pyplot

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click


def one_core() -> str:
    """Pin to one CPU and one BLAS/torch thread; returns what was done."""
    done = []
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        done.append(f"cpu {cpu}")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        done.append("BLAS 1 thread")
    except ImportError:
        done.append("BLAS threads unchanged (no threadpoolctl)")
    try:
        import torch

        torch.set_num_threads(1)
        done.append("torch 1 thread")
    except ImportError:
        pass
    return ", ".join(done)


class Corpus:
    """Seeded synthetic text: a Zipf(1.1) vocabulary of pronounceable pseudo-words."""

    def __init__(self, seed: int = 0, vocab: int = 20_000) -> None:
        rng = random.Random(seed)
        syll = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
        words: set[str] = set()
        while len(words) < vocab:
            words.add("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
        self.words = sorted(words)
        rng.shuffle(self.words)
        weights = [1.0 / (r + 1) ** 1.1 for r in range(vocab)]
        total = sum(weights)
        self.cum = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self.cum.append(acc)
        self.rng = rng

    def text(self, lo: int = 8, hi: int = 30) -> str:
        import bisect

        n = self.rng.randint(lo, hi)
        return " ".join(self.words[min(bisect.bisect(self.cum, self.rng.random()), len(self.words) - 1)]
                        for _ in range(n))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def _fill(home: Any, corpus: Corpus, n: int, users: int, bar: Any, job: Any) -> None:
    from crystallise.types import Delta, Item

    batch: list[Delta] = []
    for i in range(n):
        user = f"u{i % users}"
        it = Item(text=corpus.text(), kind="memory", level="user", agent_id="bench", user_id=user)
        batch.append(Delta(op="add", target="item", item_id=it.id, after=it.to_dict()))
        if len(batch) == 1000 or i == n - 1:
            home.store.apply_item_deltas(batch)
            bar.update(job, advance=len(batch))
            batch = []


CPU: dict[str, list[float]] = {}  # CPU ms of this thread per timed call, by the name of the last _time run


def _time(fn: Any, queries: list[tuple[str, str]], name: str = "") -> list[float]:
    """Wall ms per call; the thread's CPU ms go to CPU[name] (immune to other processes on a shared core)."""
    out, cpu = [], []
    for user, q in queries:
        c0, t0 = time.thread_time(), time.perf_counter()
        fn(user, q)
        out.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    CPU[name] = cpu
    return out


STAGES = ("sync_ms", "embed_ms", "search_ms", "fetch_ms", "pack_ms", "record_ms")


def _summary(values: list[float], cpu: list[float] | None = None) -> dict[str, float]:
    out = {"p50": round(pct(values, 0.5), 3), "p95": round(pct(values, 0.95), 3),
           "mean": round(statistics.fmean(values), 3) if values else 0.0}
    if cpu is not None:
        out.update(cpu_p50=round(pct(cpu, 0.5), 3), cpu_p95=round(pct(cpu, 0.95), 3))
    return out


def run_size(n: int, users: int, n_queries: int, embedder: str, bar: Any, seed: int,
             query_embed_ms: list[float] | None = None) -> dict[str, Any]:
    import crystallise
    from crystallise.context.embed import ENV_EMBEDDER, get_embedder
    from crystallise.context.index import index_for
    from crystallise.engine.serving import search
    from crystallise.engine.home import Home

    corpus = Corpus(seed)
    emb = get_embedder(embedder)
    saved_env = os.environ.get(ENV_EMBEDDER)
    os.environ[ENV_EMBEDDER] = embedder  # crystallise.context(...) resolves the same (cached) embedder
    try:
        with tempfile.TemporaryDirectory(prefix=f"assembly-{n}-") as tmp:
            home = Home.init(Path(tmp) / "home")
            job = bar.add_task(f"{n:,} items: write", total=n)
            _fill(home, corpus, n, users, bar, job)
            bar.update(job, description=f"{n:,} items: embed + load index")
            t0 = time.perf_counter()
            index_for(home.store, emb).sync(home.store, progress=lambda _d, done, total: bar.update(
                job, description=f"{n:,} items: embed {done:,}/{total:,}"))
            load_s = time.perf_counter() - t0
            qrng = random.Random(seed + 1)
            queries = [(f"u{qrng.randrange(users)}", corpus.text(4, 10)) for _ in range(n_queries)]
            emb.embed([q for _, q in queries])  # cached: query embedding is timed on its own
            bar.update(job, description=f"{n:,} items: timing")
            stages: dict[str, list[float]] = {name: [] for name in STAGES}

            def assemble(u: str, q: str) -> None:
                pack = crystallise.context(agent="bench", user=u, query=q, home=home)
                for name in STAGES:
                    stages[name].append(pack.timings.get(name, 0.0))

            assemble(*queries[0])  # warm-up (first use of this home's index and connections)
            for values in stages.values():
                values.clear()
            stats: dict[str, list[float]] = {
                "store_fts": _time(lambda u, q: home.store.query_items(agent="bench", user=u, text=q, limit=50),
                                   queries, "store_fts"),
                "lexical": _time(lambda u, q: search(q, agent="bench", user=u, k=10, mode="lexical", home=home,
                                                     embedder=emb), queries, "lexical"),
                "hybrid": _time(lambda u, q: search(q, agent="bench", user=u, k=10, home=home, embedder=emb),
                                queries, "hybrid"),
                "assemble": _time(assemble, queries, "assemble"),
            }
            home.close()
    finally:
        if saved_env is None:
            os.environ.pop(ENV_EMBEDDER, None)
        else:
            os.environ[ENV_EMBEDDER] = saved_env
    row: dict[str, Any] = {"items": n, "users": users, "index_load_s": round(load_s, 2),
                           "load_avg": [round(x, 2) for x in os.getloadavg()]}
    for name, values in stats.items():
        row[name] = _summary(values, CPU.get(name, []))
    row["stages"] = {name.removesuffix("_ms"): _summary(values) for name, values in stages.items()}
    if query_embed_ms:  # query i's embedding time (measured alone) + query i's assembly: what an agent pays
        paired = [a + query_embed_ms[i % len(query_embed_ms)] for i, a in enumerate(stats["assemble"])]
        row["assemble_with_query_embedding"] = _summary(paired)
    return row


def query_embedding(spec: str, n: int, seed: int) -> dict[str, Any] | None:
    from crystallise.context.embed import get_embedder

    try:
        emb = get_embedder(spec)
        inner = getattr(emb, "inner", emb)
        corpus = Corpus(seed + 7)
        texts = [corpus.text(4, 10) for _ in range(n)]
        inner.embed(["warm up"])
    except Exception as e:  # noqa: BLE001 - the extra may be missing: report, do not fail the latency run
        return {"embedder": spec, "error": str(e)}
    values = _time(lambda _u, q: inner.embed([q]), [("", t) for t in texts], "query_embedding")
    cpu = CPU["query_embedding"]
    return {"embedder": inner.name, "p50": round(pct(values, 0.5), 3), "p95": round(pct(values, 0.95), 3),
            "cpu_p50": round(pct(cpu, 0.5), 3), "cpu_p95": round(pct(cpu, 0.95), 3), "values": values}


def _plot(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()  # matplotlib (the bench extra), or an ImportError that names it

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for layout, rows in result["layouts"].items():
        xs = [r["items"] for r in rows]
        for name, style in (("store_fts", ":"), ("lexical", "--"), ("hybrid", "-"), ("assemble", "-.")):
            ax.plot(xs, [r[name]["cpu_p95"] for r in rows], style, marker="o", label=f"{name} ({layout})")
    ax.axhline(10, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("items in the store")
    ax.set_ylabel("CPU ms per query, p95 (one core)")
    ax.set_title("context assembly cost, thread CPU time p95 (query embedding excluded)", fontsize=10)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=120)
    plt.close(fig)


@click.command()
@click.option("--sizes", default="1000,10000,100000", show_default=True)
@click.option("--users", "users_text", default="1,1000", show_default=True,
              help="Layouts: how many users the items are spread over (1 = every query sees all items).")
@click.option("--queries", type=int, default=200, show_default=True)
@click.option("--embedder", default="hash:384", show_default=True, help="Item vectors (shape matters, not the model).")
@click.option("--query-embedder", default="minilm", show_default=True, help="Timed alone on single queries.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/assembly"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def command(sizes: str, users_text: str, queries: int, embedder: str, query_embedder: str, seed: int,
            out_dir: Path, as_json: bool) -> None:
    """Context assembly latency at 1k / 10k / 100k items (one core)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from crystallise.errors import ValidationError

    try:
        ns = [int(s) for s in sizes.split(",") if s.strip()]
        layouts = [int(u) for u in users_text.split(",") if u.strip()]
    except ValueError:
        raise ValidationError("--sizes and --users take comma-separated integers, e.g. 1000,10000") from None
    if not ns or min(ns) < 1 or not layouts or min(layouts) < 1 or queries < 1:
        raise ValidationError("--sizes, --users and --queries must be positive")
    console = Console(stderr=True)
    pinned = one_core()
    result: dict[str, Any] = {"pinned": pinned, "embedder": embedder, "queries": queries, "layouts": {}}
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    result["load_avg_start"] = [round(x, 2) for x in os.getloadavg()]
    with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
        out_dir.mkdir(parents=True, exist_ok=True)
        # first, so that each size can report assembly + a real query embedding, paired per query
        qe = query_embedding(query_embedder, queries, seed)
        qe_values = qe.pop("values", None) if qe else None
        result["query_embedding"] = qe
        for n in ns:
            for users in layouts:
                key = "one scope" if users == 1 else f"{users} users"
                row = run_size(n, min(users, n), queries, embedder, bar, seed, qe_values)
                result["layouts"].setdefault(key, []).append(row)
                # long runs: keep what is done
                (out_dir / "partial.json").write_text(json.dumps(result, indent=2) + "\n")
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, out_dir)
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table("layout", "items", "index load s", "store FTS p50/p95", "lexical p50/p95", "hybrid p50/p95",
                  "assemble p50/p95", title=f"ms per query, one core ({pinned})")
    for key, rows in result["layouts"].items():
        for r in rows:
            table.add_row(key, f"{r['items']:,}", str(r["index_load_s"]),
                          *[f"{r[m]['p50']:.2f} / {r[m]['p95']:.2f}" for m in ("store_fts", "lexical", "hybrid",
                                                                                "assemble")])
    console.print(table)
    stages = Table("layout", "items", *[f"{st} p50/p95" for st in (*(x.removesuffix("_ms") for x in STAGES),
                                                                    "+ query embed")],
                   title="crystallise.context(...) by stage, ms (query vector cached; last column adds a real one)")
    for key, rows in result["layouts"].items():
        for r in rows:
            extra = r.get("assemble_with_query_embedding")
            stages.add_row(key, f"{r['items']:,}", *[f"{v['p50']:.2f} / {v['p95']:.2f}" for v in r["stages"].values()],
                           f"{extra['p50']:.2f} / {extra['p95']:.2f}" if extra else "-")
    console.print(stages)
    qe = result["query_embedding"]
    console.print(f"query embedding ({qe.get('embedder')}): " +
                  (f"p50 {qe['p50']} ms, p95 {qe['p95']} ms" if "p50" in qe else qe.get("error", "")))
    console.print(f"report: {out_dir}/result.json, {out_dir}/latency.png")
