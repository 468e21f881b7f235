"""How fast evidence becomes a live version: trace -> job queued, Nth verified trace -> version live.

    crystallise bench freshness                    # 5 orgs, N = 30 verified traces each, scheduler poll 1 s
    crystallise bench freshness --orgs 10 --poll-s 5 --json

The embedded default (SQLite, in-process executor, the scheduler of `serve` / `crystallise worker`) on
a fresh home with one task: for each org in turn, N labelled (verified) traces are recorded; the time
of the Nth is the start. *queued*: until the scheduler queued the org's learn job (bounded below by
its poll interval); *live*: until that job finished with the version committed (`crystallise` learner
over a scripted always-wrong model, so the version is the crystallised program). p50/p95 over orgs.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import click

from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine import jobs
from crystallise.engine.home import Home
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.engine.scheduler import LearnPolicy, Scheduler
from crystallise.engine.task_defs import define
from crystallise.gate import score_numeric
from crystallise.harness.spec import TaskSpec
from crystallise.types import Scope


def _records(n: int, offset: int) -> list[tuple[str, str]]:
    out = []
    for i in range(offset + 1, offset + n + 1):
        a, b = 1000 * i + 500, 250 * (i % 4 + 1)
        out.append((f"Use formula Asset Ratio to answer. Question: a firm has ${a:,} of assets and ${b:,} of debt. "
                    "Answer:", f"{round(a / b, 2)}"))
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


@click.command()
@click.option("--orgs", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--n", "outcomes", default=30, show_default=True, type=click.IntRange(1, 1000),
              help="Verified outcomes that queue a learn job (config.json learn.task_outcomes).")
@click.option("--poll-s", default=1.0, show_default=True, type=float, help="The scheduler's poll interval.")
@click.option("--json", "as_json", is_flag=True)
def command(orgs: int, outcomes: int, poll_s: float, as_json: bool) -> None:
    """Trace -> learn job queued, and Nth verified trace -> version live (p50/p95), embedded default."""
    tmp = Path(tempfile.mkdtemp(prefix="crystallise-bench-freshness-"))
    home = Home.init(tmp / "home", model="scripted:0")
    define(home, "ratio", metric="numeric")
    policy = LearnPolicy(task_outcomes=outcomes, poll_s=poll_s, dream_traces=0, extract=False)
    rows = []
    with jobs.InProcessExecutor(home, idle_s=0.2) as ex, Scheduler(home, policy).running(ex):
        for k in range(orgs):
            org = f"org{k}"
            loop = Loop(home, TaskSpec(name="ratio", metric="numeric"), CachedBackend(ScriptedBackend(lambda r: "0")),
                        score_numeric, LoopConfig(scope=Scope(org=org), learners=("crystallise",)))
            for context, target in _records(outcomes, 100 * k):
                loop.record_labelled(context, target)
            start = time.time()
            job = None
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                found = [j for j in jobs.list_jobs(home, kind="learn", limit=1000) if j.scope.org == org]
                job = found[0] if found else None
                if job is not None and job.done:
                    break
                time.sleep(0.05)
            if job is None or not job.done:
                raise click.ClickException(f"no finished learn job for {org} within 300 s")
            rows.append({"org": org, "queued_s": round(job.created_at - start, 3),
                         "live_s": round((job.finished_at or 0) - start, 3), "status": job.status,
                         "versions": (job.result or {}).get("versions", [])})
            click.echo(f"{org}: queued after {rows[-1]['queued_s']} s, finished after {rows[-1]['live_s']} s "
                       f"({job.status}, versions {rows[-1]['versions']})", err=True)
    home.close()
    live = [r["live_s"] for r in rows if r["versions"]]
    queued = [r["queued_s"] for r in rows]
    result = {"orgs": orgs, "n": outcomes, "poll_s": poll_s, "rows": rows,
              "queued_p50_s": _pct(queued, 0.5), "queued_p95_s": _pct(queued, 0.95),
              "live_p50_s": _pct(live, 0.5) if live else None, "live_p95_s": _pct(live, 0.95) if live else None,
              "mean_live_s": round(statistics.mean(live), 3) if live else None,
              "load": Path("/proc/loadavg").read_text().split()[:3]}
    click.echo(json.dumps(result) if as_json else
               f"trace -> job queued: p50 {result['queued_p50_s']} s, p95 {result['queued_p95_s']} s; "
               f"Nth verified trace -> version live: p50 {result['live_p50_s']} s, p95 {result['live_p95_s']} s "
               f"({len(live)}/{orgs} orgs got a version)")
