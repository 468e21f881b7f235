"""Learning throughput on a Ray cluster: jobs/min with 1 vs 2 nodes (issue 16 part 4).

    crystallise bench scale                      # --nodes 1,2 --orgs 32
    crystallise bench scale --pin                # node k on core k alone: 1 node = 1 core, 2 nodes = 2 cores
    crystallise bench scale --nodes 1,2,3 --orgs 12 --json

Each node count is one run of bench/_scale_run.py in its own private network namespace (`unshare -n`,
root): a fresh PostgreSQL, artifact registry and Ray cluster (127.0.0.1 only), one warm-up learn job
per node (untimed: worker imports and first-job costs, reported as `warmup_s`), then one learn job
per org queued at once and timed. Without `--pin` every node gets 2 CPUs and they all share the
machine's cores, so the ratio says how well the jobs spread, not what more machines would add. With
`--pin` node k runs under `taskset -c k` with `--num-cpus 1`: each node brings one core of its own,
as a machine would (PostgreSQL and this driver stay unpinned, on any core).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from crystallise.testing.raycluster import private_network_problem

HERE = Path(__file__).resolve().parent


@click.command()
@click.option("--nodes", default="1,2", show_default=True, help="Comma-separated node counts to compare.")
@click.option("--orgs", default=32, show_default=True, type=click.IntRange(1, 500), help="Orgs (= learn jobs).")
@click.option("--pin", is_flag=True,
              help="Node k on core k alone (taskset -c k, --num-cpus 1): N nodes = N cores. Needs N cores.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def command(nodes: str, orgs: int, pin: bool, as_json: bool) -> None:
    """Learn jobs/min on a local Ray cluster of 1 vs 2 nodes (PostgreSQL, a registry, one home per node)."""
    problem = private_network_problem()
    if problem:
        raise click.ClickException(problem)
    counts = [int(n) for n in nodes.split(",") if n.strip()]
    if pin and max(counts) > (os.cpu_count() or 1):
        raise click.ClickException(f"--pin gives each node a core of its own: {max(counts)} nodes need "
                                   f"{max(counts)} cores, this machine has {os.cpu_count()}")
    runs = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    for n in counts:
        click.echo(f"{n} node(s){' pinned, 1 core each' if pin else ''}, {orgs} learn jobs ...", err=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.json"
            argv = [sys.executable, str(HERE / "_scale_run.py"), "--nodes", str(n), "--orgs", str(orgs),
                    "--out", str(out), *(["--pin"] if pin else [])]
            done = subprocess.run(["unshare", "-n", *argv], env=env, capture_output=True, text=True, timeout=1800)
            if not out.exists() or "wall_s" not in json.loads(out.read_text()):
                raise click.ClickException(f"the {n}-node run failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
            runs.append(json.loads(out.read_text()))
            r = runs[-1]
            click.echo(f"  {r['jobs_per_min']} jobs/min ({r['wall_s']} s wall after a {r['warmup_s']} s warm-up, "
                       f"per job {r['job_s'][0]}-{r['job_s'][-1]} s, nodes used {r['nodes_used']}, "
                       f"statuses {r['statuses']})", err=True)
    result = {"runs": runs, "pinned": pin, "load": Path("/proc/loadavg").read_text().split()[:3]}
    if len(runs) >= 2:
        result["ratio"] = round(runs[-1]["jobs_per_min"] / runs[0]["jobs_per_min"], 2)
    click.echo(json.dumps(result) if as_json else
               "\n".join(f"{r['nodes']} node(s): {r['jobs_per_min']} jobs/min" for r in runs)
               + (f"\nratio {result['ratio']}x" if "ratio" in result else ""))
