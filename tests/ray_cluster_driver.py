"""Driver for tests/test_ray_cluster.py: a real 2-node Ray cluster + PostgreSQL + an artifact registry,
all inside a private network namespace with only loopback (the test runs this under `unshare -n`).

    unshare -n python tests/ray_cluster_driver.py OUT_JSON

Each Ray node has its own home (its own clone of the registry, one PostgreSQL store), as two machines
would. Prints progress; writes the facts the test checks to OUT_JSON. Everything it starts lives in
this namespace and is stopped by pid before it exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crystallise.artifacts.gitcli import git_argv, git_env, private_home
from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine import jobs
from crystallise.engine.committer import TRAILER_CS, Committer
from crystallise.engine.home import Home
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.engine.task_defs import define
from crystallise.gate import score_numeric
from crystallise.harness.spec import TaskSpec
from crystallise.scale import RayExecutor
from crystallise.testing.pg import PostgresServer
from crystallise.testing.raycluster import RayCluster, sweep
from crystallise.types import Scope
from tests.helpers import ratio_records

ORGS = [f"org{i}" for i in range(1, 6)]


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def seed(home: Home, org: str, task: str) -> None:
    loop = Loop(home, TaskSpec(name=task, metric="numeric"), CachedBackend(ScriptedBackend(lambda r: "0")),
                score_numeric, LoopConfig(scope=Scope(org=org), learners=("crystallise",)))
    for rec in ratio_records(24):
        loop.record_labelled(rec["context"], rec["target"])


def registry_log(bare: Path) -> list[str]:
    home = private_home()
    out = subprocess.run(git_argv(home, ["log", "--format=%H%x00%P%x00%(trailers:key=" + TRAILER_CS
                                         + ",valueonly,separator=%x1f)%x1e", "main"]),
                         cwd=bare, env=git_env(home), capture_output=True, text=True, check=True).stdout
    return [r.strip("\n") for r in out.split("\x1e") if r.strip("\n")]


def wait_terminal(home: Home, ids: list[str], timeout: float) -> list[jobs.Job]:
    deadline = time.monotonic() + timeout
    while True:
        got = [jobs.get(home, i) for i in ids]
        if all(j.done for j in got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def main(out: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="crystallise-ray-"))
    facts: dict = {}
    pg = None
    try:
        say("PostgreSQL")
        pg = PostgresServer.start()
        url = pg.create_database()
        bare = tmp / "registry.git"
        homes = [Home.init(tmp / f"node{i}", store_url=url, registry=str(bare), model="scripted:0") for i in (1, 2)]
        for h in homes:
            h.config["registry_sync_s"] = 0.5
            h.save_config()
        main_home = homes[0]
        define(main_home, "ratio", metric="numeric")
        define(main_home, "slow", metric="numeric")
        for org in ORGS:
            seed(main_home, org, "ratio")
        seed(main_home, "victim", "slow")
        say("ray start: head + 1 worker node, 127.0.0.1 only")
        cluster = RayCluster([h.path for h in homes]).__enter__()
        t0 = time.monotonic()
        with RayExecutor(main_home, address=cluster.address, poll_s=0.3) as ex:
            import ray

            facts["nodes"] = len([n for n in ray.nodes() if n["Alive"]])
            say(f"{facts['nodes']} nodes alive")

            # 1. 20 jobs over 5 orgs at once (4 per org: one scope each, so they serialise per org)
            ids = [jobs.submit(main_home, "learn", scope=Scope(org=org),
                               params={"task": "ratio", "learners": ["crystallise"]}).id
                   for _ in range(4) for org in ORGS]
            ex.start(jobs.get(main_home, ids[0]))
            done = wait_terminal(main_home, ids, 420)
            facts["twenty"] = [j.to_dict() for j in done]
            facts["twenty_s"] = time.monotonic() - t0
            say(f"20 jobs: {sorted({j.status for j in done})} in {facts['twenty_s']:.0f} s")

            # 2. kill -9 of the Ray worker process running a job, mid-job
            victim = jobs.submit(main_home, "learn", scope=Scope(org="victim"),
                                 params={"task": "slow", "learners": ["crystallise"]})
            ex.start(victim)
            killed = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and killed is None:
                j = jobs.get(main_home, victim.id)
                if j.status == "running" and (j.worker or "").startswith("ray:"):
                    killed = int(j.worker.rsplit(":", 1)[1])
                    os.kill(killed, signal.SIGKILL)
                    say(f"killed Ray worker pid {killed} running {victim.id}")
                elif j.done:
                    break
                time.sleep(0.02)
            facts["killed_pid"] = killed
            final = wait_terminal(main_home, [victim.id], 300)[0]
            facts["victim"] = final.to_dict()
            say(f"victim job: {final.status}, attempts {final.attempts}")

        # what the store and the registry hold afterwards
        Committer(main_home).recover()  # a commit pushed by a killed worker but not recorded: recorded now
        versions = main_home.store.list_versions(limit=10_000)
        facts["versions"] = [{"number": v.number, "commit": v.commit, "changeset": v.changeset_id} for v in versions]
        facts["registry"] = registry_log(bare)
        css = []
        for v in versions:
            cs = main_home.store.get_changeset(v.changeset_id)
            css.append({"id": cs.id, "status": cs.status, "job": cs.evidence.get("job"),
                        "decision": cs.verdict.decision if cs.verdict else None})
        facts["changesets_of_versions"] = css
        with main_home.store.engine.connect() as conn:
            import sqlalchemy as sa

            facts["accepted_changesets"] = int(conn.execute(sa.text(
                "SELECT count(*) FROM changesets WHERE status IN ('accepted', 'committed')")).scalar())
        for h in homes:
            h.close()
    except BaseException as e:  # noqa: BLE001 - reported to the test, which fails with it
        facts["error"] = f"{type(e).__name__}: {e}"
        import traceback

        traceback.print_exc()
    finally:
        if pg is not None:
            pg.stop()
        sweep()
        out.write_text(json.dumps(facts, default=str))


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("driver watchdog")))
    signal.alarm(int(os.environ.get("DRIVER_TIMEOUT_S", "840")))
    main(Path(sys.argv[1]))
