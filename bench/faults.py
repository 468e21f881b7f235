"""`crystallise bench faults`: kill -9 at random points, then check nothing acknowledged was lost.

Each run starts a *child process* doing real work on a real home (SQLite or a throwaway
PostgreSQL), waits until it is working, sleeps a random time and sends SIGKILL. Then:

  1. the home is opened again (the committer's recovery runs, as it would for a user);
  2. invariants are checked (below); a violation fails the run;
  3. the child is re-run to completion and the final state is checked: all the work done,
     each piece exactly once ("re-running completes the work").

Scenarios (`--scenario`, several allowed):

  ingest    traces written through the SDK (`crystallise.trace`), 3 spans + feedback each;
            the child prints ACK after the block returns (the write is acknowledged).
            Invariants: every ACKed trace is in the store, complete; no partial trace.
  commit    change sets committed through the `Committer`: an agent-level playbook bullet +
            an artifact file each. Invariants: working tree == HEAD (no half-made version,
            no journal left), git commits <-> store versions one-to-one, version numbers
            1..V, each item delta in the ledger once, the playbook file at HEAD equals the
            store's items, every ACKed change set committed.
  concurrent  16 writer processes (`--writers`) commit change sets at once (agent-level and
            user-level items); no kill. Invariants: no lost or duplicated delta or version.
  dream     `crystallise dream` over 90 failed runs in three scopes (agent, org, user), a few
            critiques per scope per run, until no scope has work; the child prints ACK when a
            scope's run finished. Invariants: the commit ones (working tree == HEAD, git <->
            versions one-to-one, the playbook equals the store), no run left half-done after the
            re-run, each trace's lesson in exactly one active item (never duplicated), the credit
            of the item every run showed counted once per trace, watermarks at the last trace.

Reported per scenario and store: runs, violations (must be 0), kills that landed inside a
commit (BEGIN printed, ACK not), work acknowledged before the kill, wall time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

SCENARIOS = ("ingest", "commit", "concurrent", "dream")
WORK = {"ingest": 400, "commit": 40, "dream": 90}
AGENT = "faults"


# -- the child: the work that gets killed ------------------------------------------------------------


def child(scenario: str, home_path: str, n: int, writer: int = 0) -> None:
    """Do `n` pieces of work, resuming after what is already done; print BEGIN/ACK lines."""
    from crystallise.engine.home import Home

    home = Home.open(home_path)
    home.config["trace_writes"] = "sync"  # ACK means stored: each trace is written before its block exits
    if scenario == "ingest":
        _child_ingest(home, n)
    elif scenario == "dream":
        _child_dream(home, n)
    else:
        _child_commit(home, n, writer)


def _say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def _child_ingest(home: Any, n: int) -> None:
    from crystallise.engine.observe import trace

    done = {t.metadata.get("n") for t in home.store.list_traces(name="fault", limit=100_000)}
    _say("READY")
    for i in range(n):
        if i in done:
            continue
        _say("BEGIN", i)
        with trace("fault", agent=AGENT, user=f"u{i % 7}", input=f"question {i}", home=home,
                   metadata={"n": i}) as t:
            for step in range(3):
                with t.span(f"step{step}", "tool", input={"i": i, "step": step}) as s:
                    s.output = {"ok": True}
            t.output = f"answer {i}"
            t.feedback(score=1.0, label="ok")
        _say("ACK", i)


def _changeset(k: int, writer: int) -> Any:
    from crystallise.types import ChangeSet, Delta, Item, Verdict

    user = f"w{writer}-user" if k % 3 == 2 else None  # every third change is user-level (store ledger only)
    item = Item(id=f"it_w{writer}k{k}", text=f"lesson {k} from writer {writer}", kind="bullet",
                level="user" if user else "agent", agent_id=AGENT, user_id=user, section=f"w{writer}",
                source="review", provenance=[f"tr_w{writer}k{k}"])
    deltas = [Delta(op="add", target="item", item_id=item.id, after=item.to_dict(), reason="fault bench")]
    if not user:
        path = f"notes/w{writer}/k{k}.md"
        deltas.append(Delta(op="set", target="artifact", path=path, before=None, after=f"note {k}\n", reason="note"))
    return ChangeSet(id=f"cs_w{writer}k{k}", learner="faults", layer="context", deltas=deltas,
                     summary=f"faults: writer {writer} change {k}", provenance=list(item.provenance),
                     verdict=Verdict(decision="accept", reason="fault bench"), evidence={"k": k, "writer": writer})


def _child_commit(home: Any, n: int, writer: int) -> None:
    from crystallise.engine.committer import Committer

    committer = Committer(home)  # recovery runs here, as for any user
    committed = {cs.id for cs in home.store.list_changesets(status="committed", limit=100_000)}
    _say("READY")
    for k in range(n):
        cs = _changeset(k, writer)
        if cs.id in committed:
            continue
        _say("BEGIN", k)
        committer.commit(cs)
        _say("ACK", k)


DREAM_SCOPES = ((AGENT, None, None), (AGENT, "acme", None), (AGENT, "acme", "u1"))


def _dream_scope(n: int) -> tuple[str, str | None, str | None]:
    return DREAM_SCOPES[n % len(DREAM_SCOPES)]


def _seed_item_id(n: int) -> str:
    return f"it_seed{n % len(DREAM_SCOPES)}"


def _child_dream(home: Any, n: int) -> None:
    """Seed (resumably) n failed runs showing one item per scope, then dream until no scope has work."""
    import json as _json

    from crystallise.backends import ScriptedBackend
    from crystallise.context.curate import DreamPolicy
    from crystallise.engine.dream import dream
    from crystallise.errors import NotFoundError
    from crystallise.engine.committer import Committer
    from crystallise.types import ChangeSet, Delta, Feedback, Item, Span, Trace, Verdict

    committer = Committer(home)
    for k in range(len(DREAM_SCOPES)):
        agent, org, user = DREAM_SCOPES[k]
        try:
            home.store.get_item(_seed_item_id(k))
            continue
        except NotFoundError:
            pass
        level = "user" if user else "org" if org else "agent"
        item = Item(id=_seed_item_id(k), text=f"Seeded lesson {k} that every run shows", kind="bullet", level=level,
                    agent_id=agent, org_id=org, user_id=user, section="seed", source="review")
        committer.commit(ChangeSet(id=f"cs_seed{k}", learner="faults", layer="context", summary=f"seed {k}",
                                   deltas=[Delta(op="add", target="item", item_id=item.id, after=item.to_dict())],
                                   verdict=Verdict(decision="accept", reason="fault bench seed")))
    done = {t.metadata.get("n") for t in home.store.list_traces(limit=100_000)}
    for i in range(n):
        if i in done:
            continue
        agent, org, user = _dream_scope(i)
        home.store.write_trace(Trace(
            name="fault-dream", agent_id=agent, org_id=org, user_id=user, input=f"question {i} about topic {i % 4}",
            output="wrong", metadata={"n": i},
            spans=[Span("context", "retrieval", attributes={"shown_items": [_seed_item_id(i)]})],
            feedback=[Feedback(trace_id="", score=0.0, correction="right")]))

    WHAT = ["units", "sign", "base", "period"]

    def reply(request: Any) -> str:  # four lessons per scope: adds first, then "the same lesson again"
        topic = request.messages[-1].content.split("about topic ", 1)[1][:1]
        return _json.dumps({"critique": "wrong", "deltas": [
            {"op": "add", "text": f"Lesson for topic {topic}: check the {WHAT[int(topic)]}",
             "section": "pitfalls"}]})

    policy = DreamPolicy(max_critiques=2, unused_days=None, token_budget={"agent": None, "org": None, "user": None})
    _say("READY")
    for round_ in range(10_000):
        _say("BEGIN", f"round{round_}")
        report = dream(home, backend=ScriptedBackend(reply), policy=policy)
        for s in report.scopes:
            _say("ACK", s.run_id, s.status)
        if not report.scopes:
            break


# -- the parent: kill, check, resume ----------------------------------------------------------------


def _spawn(scenario: str, home: Path, n: int, writer: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "child", scenario, str(home), str(n), str(writer)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _lines(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"the child failed (exit {proc.returncode}):\n{err[-3000:]}")
    return out.splitlines()


def kill_run(scenario: str, home: Path, rng: random.Random, window_s: float, min_s: float = 0.0) -> dict[str, Any]:
    """One run: start the child, kill it at a random moment, check, resume, check."""
    n = WORK[scenario]
    proc = _spawn(scenario, home, n)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:  # wait until it is working: imports and set-up are not the point
        lines.append(line.rstrip("\n"))
        if line.startswith("READY"):
            break
    time.sleep(rng.uniform(min_s, window_s))
    proc.send_signal(signal.SIGKILL)
    lines += _lines(proc)
    acked = {_work_id(x.split()[1]) for x in lines if x.startswith("ACK")}
    marks = [x for x in lines if x.startswith(("BEGIN", "ACK"))]
    in_flight = bool(marks) and marks[-1].startswith("BEGIN")  # killed between a BEGIN and its ACK
    problems = check(scenario, home, acked)
    # re-running completes the work
    resumed = _spawn(scenario, home, n)
    _lines(resumed)
    if resumed.returncode != 0:
        problems.append(f"re-run exited {resumed.returncode}")
    everything = acked if scenario == "dream" else set(range(n))
    problems += [f"after re-run: {p}" for p in check(scenario, home, everything, complete=True)]
    return {"acked": len(acked), "in_flight": in_flight, "problems": problems}


def _work_id(text: str) -> Any:
    return int(text) if text.isdigit() else text


def check(scenario: str, home_path: Path, acked: set[Any], complete: bool = False) -> list[str]:
    """Invariants after a crash (see the module docstring); [] when all hold."""
    from crystallise.engine.home import Home

    home = Home.open(home_path)
    try:
        if scenario == "ingest":
            return _check_ingest(home, acked, complete)
        from crystallise.engine.committer import Committer

        Committer(home)  # the recovery a user's next command would run
        if scenario == "dream":
            return _check_dream(home, acked, complete)
        return _check_commit(home, {(0, k) for k in acked}, complete, writers=1)
    finally:
        home.close()


def _check_ingest(home: Any, acked: set[int], complete: bool) -> list[str]:
    traces = home.store.list_traces(name="fault", limit=100_000, with_children=True)
    seen = Counter(t.metadata.get("n") for t in traces)
    problems = [f"trace {i} acknowledged but missing" for i in sorted(acked - set(seen))]
    problems += [f"trace {i} stored {c} times" for i, c in seen.items() if c > 1]
    for t in traces:
        if len(t.spans) != 3 or len(t.feedback) != 1 or t.output is None:
            problems.append(f"trace {t.metadata.get('n')} is partial: {len(t.spans)} spans, {len(t.feedback)} feedback")
    if complete and set(seen) != acked:
        problems.append(f"{len(acked - set(seen))} traces not written by the re-run")
    return problems


def _check_commit(home: Any, acked: set[tuple[int, int]], complete: bool, writers: int) -> list[str]:
    from crystallise.engine.committer import TRAILER_CS, playbook_path, render_playbook

    import sqlalchemy as sa

    from crystallise.store.schema import item_deltas

    problems: list[str] = []
    repo, store = home.repo, home.store
    status = repo._git("status", "--porcelain", "--untracked-files=all").decode()
    if status.strip():
        problems.append(f"working tree differs from HEAD: {status.strip()[:200]}")
    if (repo.path / ".git" / "crystallise-journal.json").exists():
        problems.append("an interrupted commit's journal was left behind")
    versions = store.list_versions(limit=100_000)
    numbers = sorted(v.number for v in versions)
    if numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"version numbers are not 1..{len(numbers)}: {numbers[:10]}...")
    by_cs = Counter(v.changeset_id for v in versions)
    problems += [f"change set {c} has {n} versions" for c, n in by_cs.items() if n > 1]
    git_cs = Counter(c for info in repo.log(limit=100_000) for c in info.trailers.get(TRAILER_CS, []))
    with_commit = {v.changeset_id for v in versions if v.commit}
    problems += [f"git commit for {c} has no version in the store" for c in set(git_cs) - set(by_cs)]
    problems += [f"version of {c} has no git commit" for c in with_commit - set(git_cs)]
    problems += [f"change set {c} committed {n} times in git" for c, n in git_cs.items() if n > 1]
    fault_cs = {c for c in by_cs if c.startswith("cs_w")}
    # user-level change sets are committed to the store's user ledger, not as versions (docs/context.md)
    fault_cs |= {cs.id for cs in store.list_changesets(status="committed", limit=100_000)
                 if cs.id.startswith("cs_w") and cs.scope.user}
    for w, k in acked:
        if f"cs_w{w}k{k}" not in fault_cs:
            problems.append(f"change set w{w}k{k} acknowledged but not committed")
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(item_deltas.c.item_id, item_deltas.c.changeset_id)).all()
    ledger = Counter(r.item_id for r in rows if r.item_id.startswith("it_w"))
    problems += [f"item {i} has {n} ledger rows" for i, n in ledger.items() if n > 1]
    items = {it.id for it in store.query_items(agent=AGENT, levels=("agent",), limit=100_000)}
    for c in fault_cs:
        w, k = c[4:].split("k")
        iid = f"it_w{w}k{k}"
        if int(k) % 3 == 2:
            if ledger.get(iid) != 1:
                problems.append(f"user-level item {iid} not in the ledger exactly once")
        elif iid not in items:
            problems.append(f"item {iid} of a committed change set is missing")
    path = playbook_path("agent", AGENT)
    if items:
        expected = render_playbook("agent", AGENT, store.query_items(agent=AGENT, levels=("agent",), limit=100_000))
        if repo.read(path, at="HEAD") != expected:
            problems.append("the playbook at HEAD disagrees with the store's items")
    if complete:
        want = {f"cs_w{w}k{k}" for w, k in acked}
        missing = want - fault_cs
        if missing:
            problems.append(f"{len(missing)} change sets not committed by the re-run")
    return problems


def _check_dream(home: Any, acked: set[str], complete: bool) -> list[str]:
    import sqlalchemy as sa

    from crystallise.engine.committer import TRAILER_CS, playbook_path, render_playbook
    from crystallise.store.schema import item_usage

    problems: list[str] = []
    repo, store = home.repo, home.store
    if repo._git("status", "--porcelain", "--untracked-files=all").decode().strip():
        problems.append("working tree differs from HEAD")
    if (repo.path / ".git" / "crystallise-journal.json").exists():
        problems.append("an interrupted commit's journal was left behind")
    versions = store.list_versions(limit=100_000)
    numbers = sorted(v.number for v in versions)
    if numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"version numbers are not 1..{len(numbers)}")
    git_cs = Counter(c for info in repo.log(limit=100_000) for c in info.trailers.get(TRAILER_CS, []))
    by_cs = Counter(v.changeset_id for v in versions)
    problems += [f"change set {c}: {n} versions" for c, n in by_cs.items() if n > 1]
    problems += [f"change set {c}: {n} git commits" for c, n in git_cs.items() if n > 1]
    problems += [f"git commit for {c} has no version" for c in set(git_cs) - set(by_cs)]
    for level, owner in (("agent", AGENT), ("org", "acme")):
        kw = {"agent": AGENT} if level == "agent" else {"org": "acme"}
        held = store.query_items(levels=(level,), status=("active", "retired", "quarantined", "candidate"),
                                 limit=100_000, **kw)
        if held and repo.read(playbook_path(level, owner), at="HEAD") != render_playbook(level, owner, held):
            problems.append(f"the {level} playbook at HEAD disagrees with the store")
    runs = store.list_dream_runs(limit=100_000)
    status = {r["id"]: r["status"] for r in runs}
    problems += [f"run {a} acknowledged but recorded {status.get(a)!r}" for a in acked
                 if status.get(a) in (None, "planned", "abandoned")]
    if complete and any(s == "planned" for s in status.values()):
        problems.append("a dream run is still half-done after the re-run")
    traces = store.list_traces(name="fault-dream", limit=100_000)
    with store.engine.connect() as conn:  # rows logged per item, and those that blamed it (context/credit.py)
        rows = list(conn.execute(sa.select(item_usage.c.item_id, item_usage.c.outcome)))
    logged = Counter(r.item_id for r in rows)
    usage = Counter(r.item_id for r in rows if r.outcome < 0)
    for k, (agent, org, user) in enumerate(DREAM_SCOPES):
        mine = [t for t in traces if (t.agent_id, t.org_id, t.user_id) == (agent, org, user)]
        items = store.query_items(agent=agent, org=org, user=user, levels=("user" if user else "org" if org else
                                                                         "agent",), limit=100_000)
        taught = Counter(p for it in items for p in it.provenance)
        problems += [f"trace {t.id} taught {taught[t.id]} active items" for t in mine if taught[t.id] > 1]
        seed = store.get_item(_seed_item_id(k))
        if seed.harmful != usage[seed.id]:
            problems.append(f"seed {k}: harmful {seed.harmful} but {usage[seed.id]} runs credited it")
        if complete:
            problems += [f"trace {t.id} taught nothing after the re-run" for t in mine if taught[t.id] != 1]
            if logged[seed.id] != len(mine):
                problems.append(f"seed {k}: credited {logged[seed.id]} times for {len(mine)} runs")
            from crystallise.engine.dream import scope_key
            from crystallise.types import Scope

            mark = store.get_watermark(f"dream/{scope_key(Scope(agent=agent, org=org, user=user))}")
            if mine and mark != max(t.seq or 0 for t in mine):
                problems.append(f"scope {k}: watermark {mark}, last trace {max(t.seq or 0 for t in mine)}")
    return problems


def concurrent_run(home: Path, writers: int, per_writer: int) -> dict[str, Any]:
    """`writers` processes commit at once; every delta and version exactly once."""
    t0 = time.perf_counter()
    procs = [_spawn("commit", home, per_writer, w) for w in range(writers)]
    for p in procs:
        _lines(p)
        if p.returncode != 0:
            return {"problems": [f"a writer exited {p.returncode}"], "wall_s": time.perf_counter() - t0}
    from crystallise.engine.home import Home

    h = Home.open(home)
    try:
        problems = _check_commit(h, {(w, k) for w in range(writers) for k in range(per_writer)}, True, writers)
    finally:
        h.close()
    return {"problems": problems, "wall_s": round(time.perf_counter() - t0, 2),
            "versions": writers * per_writer}


def new_home(root: Path, store: str, pg: Any) -> Path:
    from crystallise.engine.home import Home

    path = Path(tempfile.mkdtemp(prefix="home-", dir=root))
    url = str(pg.create_database()) if store == "postgres" else None
    Home.init(path, store_url=url).close()
    return path


# -- the command ------------------------------------------------------------------------------------


@click.command()
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(SCENARIOS),
              help="Which work to kill (default: all).")
@click.option("--store", "stores", multiple=True, type=click.Choice(["sqlite", "postgres"]),
              help="Store(s) to run on (default: both).")
@click.option("--runs", type=int, default=50, show_default=True, help="Kill runs per scenario and store.")
@click.option("--writers", type=int, default=16, show_default=True, help="Writer processes for `concurrent`.")
@click.option("--per-writer", type=int, default=6, show_default=True, help="Change sets per writer.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(scenarios: tuple[str, ...], stores: tuple[str, ...], runs: int, writers: int, per_writer: int,
            seed: int, as_json: bool) -> None:
    """Kill -9 during ingest, commit and dream at random points; check consistency and resumption."""
    from rich.console import Console
    from rich.progress import Progress

    from crystallise.testing import PostgresServer, postgres_unavailable

    console = Console(stderr=True)
    scenarios = scenarios or SCENARIOS
    stores = stores or ("sqlite", "postgres")
    rng = random.Random(seed)
    pg = None
    if "postgres" in stores:
        reason = postgres_unavailable()
        if reason:
            raise click.UsageError(f"cannot start PostgreSQL: {reason}")
        pg = PostgresServer.start()
    summary: dict[str, Any] = {"runs": runs, "seed": seed, "results": []}
    # well inside the time the work takes, so kills land mid-work
    windows = {"ingest": 1.0, "commit": 1.5, "dream": 2.0}
    try:
        with tempfile.TemporaryDirectory(prefix="crystallise-faults-") as tmp, Progress(console=console) as bar:
            root = Path(tmp)
            for store in stores:
                for scenario in scenarios:
                    t0 = time.perf_counter()
                    row: dict[str, Any] = {"scenario": scenario, "store": store}
                    if scenario == "concurrent":
                        res = concurrent_run(new_home(root, store, pg), writers, per_writer)
                        row |= {"writers": writers, "change_sets": res.get("versions"),
                                "violations": len(res["problems"]), "problems": res["problems"][:10]}
                    else:
                        job = bar.add_task(f"{scenario} on {store}", total=runs)
                        results = []
                        for i in range(runs):  # a fresh home each run: the re-run finishes all the work
                            results.append(kill_run(scenario, new_home(root, store, pg), rng, windows[scenario]))
                            bar.advance(job)
                            if results[-1]["problems"]:
                                console.log(f"[red]{scenario}/{store}: {results[-1]['problems'][:3]}")
                            elif not console.is_terminal and (i + 1) % 10 == 0:
                                console.log(f"{scenario} on {store}: {i + 1}/{runs} kills, no violation so far")
                        row |= {"kills": runs, "violations": sum(len(r["problems"]) for r in results),
                                "kills_inside_the_work": sum(r["in_flight"] for r in results),
                                "acked_before_kill_mean": round(sum(r["acked"] for r in results) / runs, 1),
                                "problems": [p for r in results for p in r["problems"]][:10]}
                    row["wall_s"] = round(time.perf_counter() - t0, 1)
                    summary["results"].append(row)
    finally:
        if pg is not None:
            pg.stop()
    summary["violations"] = sum(r["violations"] for r in summary["results"])
    if as_json:
        click.echo(json.dumps(summary))
        return
    for r in summary["results"]:
        extra = (f"{r['kills']} kills ({r['kills_inside_the_work']} inside a write), "
                 f"{r['acked_before_kill_mean']} acknowledged before the kill on average"
                 if "kills" in r else f"{r['writers']} writers, {r['change_sets']} change sets")
        console.print(f"{r['scenario']:<10} {r['store']:<8} violations {r['violations']}   {extra}   {r['wall_s']} s")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)
