"""Driver for tests/test_ray_serve.py: the real `crystallise serve --engine ray` process over a
PostgreSQL home, a 2-node Ray cluster and an artifact registry, inside a private network namespace
with only loopback (the test runs this under `unshare -n`).

    unshare -n python tests/ray_serve_driver.py serve OUT_JSON        # learns from HTTP traffic alone
    unshare -n python tests/ray_serve_driver.py head-loss OUT_JSON    # kill -9 of the head mid-job

Three kinds of home, as three kinds of machine would have: the API host's (made with `crystallise
init`, keys made with `crystallise serve --create-key`), and one per Ray node; one PostgreSQL store
and one registry. Everything the test sees of the server goes over HTTP; the store and the registry
are read at the end, for the facts the HTTP API does not show (change sets, the registry's log).
Writes the facts to OUT_JSON; everything it started lives in this namespace and is stopped by pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.testing.pg import PostgresServer
from crystallise.testing.raycluster import RayCluster, sweep
from tests.helpers import ratio_records, wait_for
from tests.ray_cluster_driver import registry_log

BIN = Path(sys.executable).with_name("crystallise")
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(home: Path, *args: str) -> str:
    done = subprocess.run([str(BIN), "--home", str(home), *args], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"crystallise {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout




class Api:
    """The API host: `crystallise serve --engine ray` as a process, and an HTTP client to it."""

    def __init__(self, home: Path, address: str, log: Path) -> None:
        self.home, self.log = home, log
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [str(BIN), "--home", str(home), "serve", "--engine", "ray", "--address", address, "--port", str(port)],
            stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115 - the process owns it
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            return self.http.get("/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def post_trace(self, key: str, org_rec: dict[str, Any]) -> int:
        return self.http.post("/v1/traces", headers=auth(key), json={
            "name": "ratio", "input": org_rec["context"], "output": "0",
            "feedback": [{"score": 0.0, "correction": org_rec["target"]}]}).status_code

    def jobs(self, key: str, **params: Any) -> list[dict[str, Any]]:
        r = self.http.get("/v1/jobs", params={"limit": 100, **params}, headers=auth(key))
        r.raise_for_status()
        return r.json()["items"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def store_facts(home: Home, bare: Path, facts: dict[str, Any]) -> None:
    """What the store and the registry hold: versions, their change sets, accepted change sets."""
    import sqlalchemy as sa

    Committer(home).recover()  # a commit pushed by a killed worker but not recorded: recorded now
    versions = home.store.list_versions(limit=10_000)
    facts["versions"] = [{"number": v.number, "commit": v.commit, "changeset": v.changeset_id} for v in versions]
    facts["changesets_of_versions"] = [
        {"id": cs.id, "job": cs.evidence.get("job"), "status": cs.status}
        for cs in (home.store.get_changeset(v.changeset_id) for v in versions)]
    with home.store.engine.connect() as conn:
        facts["accepted_changesets"] = int(conn.execute(sa.text(
            "SELECT count(*) FROM changesets WHERE status IN ('accepted', 'committed')")).scalar())
    facts["registry"] = registry_log(bare)


def serve_phase(api: Api, keys: dict[str, str], facts: dict[str, Any]) -> None:
    """Define a task and post corrected traces over HTTP; the scheduler queues the learn job by itself."""
    r = api.http.post("/v1/tasks", json={"name": "ratio", "metric": "numeric"}, headers=auth(keys["admin"]))
    facts["define_status"] = r.status_code
    t_first = time.monotonic()
    facts["ingest_statuses"] = sorted({api.post_trace(keys["acme"], rec) for rec in ratio_records(24)})
    say("24 corrected traces posted; waiting for the scheduler's learn job")
    job = wait_for("the learn job to end", lambda: next(
        (j for j in api.jobs(keys["acme"], kind="learn") if j["status"] in ("succeeded", "failed", "cancelled")),
        None), 150)
    facts["job"] = job
    facts["learn_jobs"] = len(api.jobs(keys["admin"], kind="learn"))  # the scheduler's one; nobody POSTed /v1/learn
    facts["trace_to_version_s"] = round(time.monotonic() - t_first, 1)
    facts["versions_api"] = api.http.get("/v1/versions", headers=auth(keys["acme"])).json()["versions"]
    facts["job_api"] = api.http.get(f"/v1/jobs/{job['id']}", headers=auth(keys["acme"])).json()
    facts["evil_sees"] = api.http.get(f"/v1/jobs/{job['id']}", headers=auth(keys["evil"])).status_code
    say(f"learn job {job['status']} on {job['worker']}")


def head_loss_phase(api: Api, cluster: RayCluster, keys: dict[str, str], facts: dict[str, Any]) -> None:
    """Six orgs' learn jobs on 2 one-CPU nodes; kill -9 of the head while one runs on it and others wait."""
    orgs = [f"org{i}" for i in range(1, 7)]
    r = api.http.post("/v1/tasks", json={"name": "ratio", "metric": "numeric"}, headers=auth(keys["admin"]))
    facts["define_status"] = r.status_code
    for rec in ratio_records(24):  # round robin: every org reaches 24 at about the same time
        for org in orgs:
            assert api.post_trace(keys[org], rec) == 201  # noqa: S101 - the driver stops at once
    say(f"{24 * len(orgs)} corrected traces posted ({len(orgs)} orgs)")
    head_pids = set(cluster.node_pids(0))

    def on_head() -> dict[str, Any] | None:
        jobs_now = api.jobs(keys["admin"], kind="learn")
        queued = [j for j in jobs_now if j["status"] == "queued"]
        for j in jobs_now:
            worker = j["worker"] or ""
            if j["status"] == "running" and worker.startswith("ray:") and int(worker.rsplit(":", 1)[1]) in head_pids \
                    and queued:
                return {"running": j, "jobs": jobs_now}
        head_pids.update(cluster.node_pids(0))  # workers the head started since
        return None

    caught = wait_for("a job running on the head while others are queued", on_head, 120, every=0.05)
    facts["at_kill"] = caught["jobs"]
    facts["in_flight"] = caught["running"]["id"]
    facts["killed"] = len(cluster.kill_node(0))
    t_kill = time.monotonic()
    say(f"killed the head ({facts['killed']} processes) while {facts['in_flight']} ran on it")

    # the outage: the API answers, ingest is acknowledged; the supervisor says so once
    during, posted = [], iter(ratio_records(6))
    while len(during) < 6 or "is unreachable" not in api.text():  # a trace every 2 s; the error as soon as seen
        if len(during) < 6 and time.monotonic() - t_kill >= 2.0 * len(during):
            during.append({"after_s": round(time.monotonic() - t_kill, 1),
                           "status": api.post_trace(keys["org7"], next(posted)),
                           "health": api.http.get("/v1/health").status_code})
        if "error_after_s" not in facts and "is unreachable" in api.text():
            facts["error_after_s"] = round(time.monotonic() - t_kill, 1)
        if time.monotonic() - t_kill > 30:
            raise TimeoutError("no error from the supervisor 30 s after the head died")
        time.sleep(0.1)
    facts.setdefault("error_after_s", round(time.monotonic() - t_kill, 1))
    facts["during_outage"] = during
    r = api.http.post("/v1/learn", json={"task": "ratio"}, headers=auth(keys["org7"]))  # a person asks meanwhile
    facts["learn_in_outage"] = {"status": r.status_code, "id": (r.json().get("items") or [{}])[0].get("id")}
    wait_for("the second node to notice (its raylet exits)", lambda: not any(
        b"raylet" in Path(f"/proc/{p}/cmdline").read_bytes() for p in cluster.node_pids(1)
        if Path(f"/proc/{p}/cmdline").exists()), 60)
    facts["jobs_in_outage"] = api.jobs(keys["admin"], kind="learn")
    facts["outage_s"] = round(time.monotonic() - t_kill, 1)
    say(f"outage {facts['outage_s']} s; restarting the head at the same address")

    cluster.start_head()
    t_back = time.monotonic()
    wait_for("the supervisor to reconnect", lambda: "answers again" in api.text(), 60)
    facts["reconnect_s"] = round(time.monotonic() - t_back, 1)
    done = wait_for("every learn job to end", lambda: (lambda js: js if len(js) >= len(orgs) + 1 and all(
        j["status"] in ("succeeded", "failed", "cancelled") for j in js) else None)(
        api.jobs(keys["admin"], kind="learn")), 240, every=0.5)
    facts["jobs"] = done
    facts["recovery_s"] = round(time.monotonic() - t_back, 1)
    facts["after_status"] = api.post_trace(keys["org7"], ratio_records(7)[-1])
    say(f"all jobs ended {sorted({j['status'] for j in done})} {facts['recovery_s']} s after the head came back")


def main(phase: str, out: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="crystallise-ray-serve-"))
    facts: dict[str, Any] = {"phase": phase}
    pg = api = None
    try:
        pg = PostgresServer.start()
        url = pg.create_database()
        bare = tmp / "registry.git"
        nodes = [Home.init(tmp / f"node{i}", store_url=url, registry=str(bare), model="scripted:0") for i in (0, 1)]
        api_home = tmp / "api"
        cli(api_home, "init", "--store-url", url, "--registry", str(bare), "--model", "scripted:0")
        config = json.loads((api_home / "config.json").read_text())
        config.update(learn={"task_outcomes": 24, "poll_s": 0.3, "dream_traces": 0, "extract": False},
                      registry_sync_s=0.5)
        (api_home / "config.json").write_text(json.dumps(config))
        for h in nodes:
            h.config["registry_sync_s"] = 0.5
            h.save_config()
        orgs = ["acme", "evil"] if phase == "serve" else [f"org{i}" for i in range(1, 8)]
        keys = {"admin": cli(api_home, "serve", "--create-key", "*").strip()}
        keys.update({org: cli(api_home, "serve", "--create-key", org).strip() for org in orgs})
        say("PostgreSQL, registry, 3 homes, keys")

        # head-loss: one CPU a node (one job each at a time, the rest queued) and a raylet that gives up on a
        # dead head after 5 s instead of Ray's 60 (the dispatcher's own probe does not depend on it)
        cluster = RayCluster([h.path for h in nodes], cpus=1 if phase == "head-loss" else 2,
                             env={"RAY_gcs_rpc_server_reconnect_timeout_s": "5"} if phase == "head-loss" else {})
        cluster.__enter__()
        say("ray: head + 1 node on 127.0.0.1")
        api = Api(api_home, cluster.address, tmp / "serve.log")
        wait_for("serve to answer", api.up, 90)
        wait_for("serve's dispatcher to connect to Ray", lambda: "learning jobs run on the Ray cluster" in api.text(),
                 90)
        facts["startup_s"] = round(time.monotonic() - T0, 1)
        say("serve --engine ray is up and connected")
        if phase == "serve":
            serve_phase(api, keys, facts)
        else:
            head_loss_phase(api, cluster, keys, facts)
        facts["serve_alive"] = api.proc.poll() is None
        api.stop()
        home = Home.open(api_home)
        store_facts(home, bare, facts)
        home.close()
        for h in nodes:
            h.close()
    except BaseException as e:  # noqa: BLE001 - reported to the test, which fails with it
        facts["error"] = f"{type(e).__name__}: {e}"
        import traceback

        traceback.print_exc()
    finally:
        if api is not None:
            api.stop()
            facts["serve_log"] = api.text()[-20000:]
        if pg is not None:
            pg.stop()
        sweep()
        facts["wall_s"] = round(time.monotonic() - T0, 1)
        out.write_text(json.dumps(facts, default=str))


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("driver watchdog")))
    signal.alarm(int(os.environ.get("DRIVER_TIMEOUT_S", "540")))
    main(sys.argv[1], Path(sys.argv[2]))
