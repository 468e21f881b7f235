"""One run of `crystallise bench scale` (bench/scale.py), inside a private network namespace:

    unshare -n python bench/_scale_run.py --nodes 2 --orgs 8 [--pin] --out result.json

PostgreSQL, an artifact registry and a Ray cluster of `--nodes` nodes (2 CPUs each, 127.0.0.1 only;
`--pin`: node k under `taskset -c k` with 1 CPU, so k nodes = k cores), one home per node; `--orgs`
orgs each with 24 labelled traces of one task.

    1. warm-up (untimed, reported as `warmup_s`): one learn job per node, pinned to that node
       (NodeAffinitySchedulingStrategy), on orgs of its own -- each node's worker process pays its
       imports and first-job costs here, not in the timed window
    2. timed: one learn job per org, all queued at once (distinct scopes: they may run in parallel),
       dispatched by RayExecutor; the clock stops when the last one ends

Writes jobs/min and per-job seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine import jobs
from crystallise.engine.home import Home
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.engine.task_defs import define
from crystallise.gate import score_numeric
from crystallise.harness.spec import TaskSpec
from crystallise.scale import RayExecutor, need_ray, run_job
from crystallise.testing.pg import PostgresServer
from crystallise.testing.raycluster import RayCluster, sweep
from crystallise.types import Scope


def records(n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(1, n + 1):
        a, b = 1000 * i + 500, 250 * (i % 4 + 1)
        out.append((f"Use formula Asset Ratio to answer. Question: a firm has ${a:,} of assets and ${b:,} of debt. "
                    "Answer:", f"{round(a / b, 2)}"))
    return out


def warm_up(home: Home, per_node: int) -> float:
    """`per_node` learn jobs on every alive node (one per CPU slot: a worker process each), pinned to
    it, all at once; their wall seconds. Same driver as the timed jobs, so Ray reuses these warm
    worker processes for them."""
    ray = need_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(run_job)
    t0 = time.monotonic()
    refs = []
    alive = [n for n in ray.nodes() if n["Alive"]]
    for k in range(len(alive) * per_node):
        job = jobs.submit(home, "learn", scope=Scope(org=f"warmup{k}"),
                          params={"task": "ratio", "learners": ["crystallise"]})
        refs.append(task.options(num_cpus=1, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=alive[k % len(alive)]["NodeID"], soft=False)).remote(job.id))
    statuses = ray.get(refs)
    if set(statuses) != {"succeeded"}:
        raise RuntimeError(f"a warm-up job did not succeed: {statuses}")
    return time.monotonic() - t0


def seed(home: Home, org: str, n: int) -> None:
    loop = Loop(home, TaskSpec(name="ratio", metric="numeric"), CachedBackend(ScriptedBackend(lambda r: "0")),
                score_numeric, LoopConfig(scope=Scope(org=org), learners=("crystallise",)))
    for context, target in records(n):
        loop.record_labelled(context, target)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--orgs", type=int, default=8)
    ap.add_argument("--pin", action="store_true", help="node k on core k alone (taskset -c k, --num-cpus 1)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="crystallise-bench-scale-"))
    pg = PostgresServer.start()
    result: dict = {"nodes": args.nodes, "orgs": args.orgs, "pinned": args.pin}
    try:
        url = pg.create_database()
        homes = [Home.init(tmp / f"node{i}", store_url=url, registry=str(tmp / "registry.git"), model="scripted:0")
                 for i in range(args.nodes)]
        home = homes[0]
        define(home, "ratio", metric="numeric")
        orgs = [f"org{i}" for i in range(args.orgs)]
        cluster = RayCluster([h.path for h in homes], pin=args.pin)
        for org in [*orgs, *(f"warmup{k}" for k in range(args.nodes * cluster.cpus))]:
            seed(home, org, 24)
        cluster.__enter__()
        need_ray().init(address=cluster.address, namespace="crystallise", log_to_driver=False,
                        configure_logging=False)  # before the executor: its dispatch loop must not race the warm-up
        result["warmup_s"] = round(warm_up(home, cluster.cpus), 2)
        with RayExecutor(home, address=cluster.address, poll_s=0.05) as ex:
            t0 = time.time()  # the clock the workers stamp `finished_at` with (one machine)
            ids = [jobs.submit(home, "learn", scope=Scope(org=org),
                               params={"task": "ratio", "learners": ["crystallise"]}).id for org in orgs]
            ex.start(jobs.get(home, ids[0]))
            while not all(jobs.get(home, i).done for i in ids):
                time.sleep(0.2)
        done = [jobs.get(home, i) for i in ids]
        wall = max(j.finished_at or 0.0 for j in done) - t0  # the last job's end, not when this loop saw it
        result.update(
            wall_s=round(wall, 2), jobs_per_min=round(60 * len(ids) / wall, 2),
            statuses=sorted({j.status for j in done}),
            job_s=sorted(round((j.finished_at or 0) - (j.started_at or 0), 2) for j in done),
            nodes_used=len({(j.worker or "").split(":")[1] for j in done if j.worker}),
            versions=sum(len((j.result or {}).get("versions") or []) for j in done),
        )
        for h in homes:
            h.close()
    finally:
        pg.stop()
        sweep()
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
