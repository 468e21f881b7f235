"""`crystallise bench ingest`: trace ingest over loopback, load from a second process.

    crystallise bench ingest --store sqlite                 # a fresh home, `crystallise serve` as a subprocess
    crystallise bench ingest --store postgres               # + a throwaway PostgreSQL, durable settings
    crystallise bench ingest --store sqlite --load wrk      # max throughput measured by wrk instead
    crystallise bench ingest --store postgres --workers 2   # `serve --workers 2` (CPU: all processes)
    crystallise bench ingest --store postgres --batch 20    # POST /v1/traces/batch, 20 traces a request
    crystallise bench ingest --store postgres --learn       # + the learning jobs this traffic queues, in-process

1. a fresh home (SQLite in it, or a new PostgreSQL started with fsync and synchronous_commit ON:
   an acknowledged trace must survive a crash, so the benchmark measures the durable path);
2. `crystallise serve` in its own process, with an org API key (the auth path is measured too);
3. the load in another process (bench/_ingest_load.py, or wrk): POST /v1/traces, one trace with
   two spans and a feedback each;
   - sustained: requests scheduled at --rate for --duration s (open loop): achieved rate, p50/p99
     latency from the scheduled time;
   - max: --connections clients back to back (closed loop): the highest throughput and its p99;
4. every 201 is checked against the store afterwards: acknowledged == stored.

The compass goal is 500 req/s with p99 < 50 ms. Prints a table (or --json); figures go in
docs/benchmarks.md with the machine they ran on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import httpx

from crystallise.api import create_key
from crystallise.engine.home import Home
from crystallise.testing import PostgresServer, postgres_unavailable

HERE = Path(__file__).resolve().parent
GOAL_RPS, GOAL_P99_MS, GOAL_CPU_MS = 500, 50.0, 0.5  # traces/s sustained, p99, server CPU per trace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres() -> PostgresServer:
    """A throwaway PostgreSQL with its *durable* defaults (the tests' server turns fsync off; this must not)."""
    reason = postgres_unavailable()
    if reason:
        raise click.ClickException(f"cannot start PostgreSQL: {reason}")
    try:
        return PostgresServer.start(durable=True)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


def start_server(home: Home, port: int, workers: int = 1, learn: bool = True) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("crystallise")
    cmd = [str(exe) if exe.exists() else "crystallise", "--home", str(home.path), "serve", "--port", str(port),
           "--log-level", "warning", "--upstream", "scripted:ok", "--workers", str(workers)]
    if not learn:
        cmd.append("--no-learn")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"crystallise serve exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise click.ClickException("crystallise serve did not answer /v1/health within 60 s")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process and its live descendants (`serve --workers N`) have used
    (Linux /proc): a figure other load on the machine does not inflate, unlike wall-clock throughput."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tasks = Path(f"/proc/{pid}/task").iterdir()
        kids = [int(k) for task in tasks for k in (task / "children").read_text().split()]
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(cpu_s(k) for k in kids)


def python_load(url: str, key: str, mode: str, rate: float, duration: float, connections: int,
                batch: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "_ingest_load.py"), "--url", url, "--key", key, "--mode", mode,
           "--rate", str(rate), "--duration", str(duration), "--connections", str(connections), "--batch", str(batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 300)
    if done.returncode:
        raise click.ClickException(f"the load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


WRK_LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 2)


def wrk_load(url: str, key: str, duration: float, connections: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise click.ClickException("wrk is not installed: apt-get install wrk (or use --load python)")
    from ._ingest_load import trace_body

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA.format(body=json.dumps(trace_body(0).decode()), key=key))
    try:
        done = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s", f.name,
                               url], capture_output=True, text=True, timeout=duration + 120)
    finally:
        os.unlink(f.name)
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"mode": "closed (wrk)", "connections": connections, "duration_s": duration,
            "sent": int(total.group(1)) if total else 0, "errors": int(non2xx.group(1)) if non2xx else 0,
            "throughput_rps": float(rps.group(1)) if rps else 0.0, "p50_ms": _ms(pct.get("50", "")),
            "p90_ms": _ms(pct.get("90", "")), "p99_ms": _ms(pct.get("99", "")), "raw": out[-1500:]}


@click.command()
@click.option("--store", default="sqlite", show_default=True,
              help="sqlite (a file in a temp home), postgres (a throwaway durable server), or a store URL.")
@click.option("--rate", type=float, default=500.0, show_default=True, help="Scheduled requests/s (sustained).")
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds per phase.")
@click.option("--connections", type=int, default=32, show_default=True, help="Keep-alive connections.")
@click.option("--load", type=click.Choice(["python", "wrk"]), default="python", show_default=True,
              help="What measures the max-throughput phase (the sustained phase is always the open-loop script).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Server processes (`serve --workers N`; above 1 needs --store postgres or a PostgreSQL URL).")
@click.option("--batch", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Traces per request: above 1, POST /v1/traces/batch at --rate/--batch requests/s (CPU per trace).")
@click.option("--learn/--no-learn", default=False, show_default=True,
              help="Let serve's scheduler queue (and its executor run) the learning jobs this traffic calls for: "
                   "dreams per user scope after 200 traces, extraction. Off: the API process alone, as in the "
                   "production topology where workers learn (docs/deploy.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def command(store: str, rate: float, duration: float, connections: int, load: str, workers: int, batch: int,
            learn: bool, as_json: bool) -> None:
    """Trace ingest throughput and latency on loopback (POST /v1/traces), load from another process."""
    tmp = Path(tempfile.mkdtemp(prefix="crystallise-bench-ingest-"))
    pg = start_postgres() if store == "postgres" else None
    url = pg.url() if pg else None if store == "sqlite" else store
    server = None
    try:
        home = Home.init(tmp / "home", store_url=url)
        key = create_key(home.path, "bench")[0]
        port = free_port()
        server = start_server(home, port, workers, learn)
        target = f"http://127.0.0.1:{port}/v1/traces" + ("/batch" if batch > 1 else "")
        if batch > 1 and load == "wrk":
            raise click.ClickException("--batch goes with --load python")
        warm = python_load(target, key, "open", 100 / batch, 2, connections, batch)  # warm-up: imports, pools
        cpu0 = cpu_s(server.pid)
        sustained = python_load(target, key, "open", rate / batch, duration, connections, batch)
        sent = max(1, sustained["sent"])
        sustained["server_cpu_ms_per_request"] = round((cpu_s(server.pid) - cpu0) * 1000 / sent, 3)
        sustained["server_cpu_ms_per_trace"] = round(sustained["server_cpu_ms_per_request"] / batch, 3)
        cpu0 = cpu_s(server.pid)
        peak = wrk_load(target, key, duration, connections) if load == "wrk" else \
            python_load(target, key, "closed", rate, duration, connections, batch)
        peak["server_cpu_ms_per_request"] = round((cpu_s(server.pid) - cpu0) * 1000 / max(1, peak["sent"]), 3)
        peak["server_cpu_ms_per_trace"] = round(peak["server_cpu_ms_per_request"] / batch, 3)
        acked = sum(r.get("statuses", {}).get("201", 0) for r in (warm, sustained)) * batch
        acked += peak["statuses"].get("201", 0) * batch if load == "python" else peak["sent"] - peak["errors"]
        stored = home.store.count_traces()
        result = {
            "store": "postgres" if pg else store if store == "sqlite" else "url", "workers": workers, "batch": batch,
            "learn": learn,
            "sustained": sustained,
            "max": {k: v for k, v in peak.items() if k != "raw"}, "stored_traces": stored,
            "goal_met": sustained["ok_traces_per_s"] >= 0.98 * min(rate, GOAL_RPS) and
            sustained["p99_ms"] < GOAL_P99_MS and rate >= GOAL_RPS and
            sustained["server_cpu_ms_per_trace"] <= GOAL_CPU_MS,
        }
        result["acknowledged"] = acked  # every 201 must be in the store: stored >= acknowledged
        home.close()
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(result))
        return
    s, m = result["sustained"], result["max"]
    click.echo(f"ingest on {result['store']}, {workers} server process(es), learning {'on' if learn else 'off'}: "
               f"{result['acknowledged']} acknowledged, "
               f"{result['stored_traces']} stored")
    per = f", {batch} traces a request" if batch > 1 else ""
    click.echo(f"  sustained  target {rate:.0f} traces/s{per}  achieved {s['ok_traces_per_s']}/s  "
               f"p50 {s['p50_ms']} ms  "
               f"p99 {s['p99_ms']} ms  max {s['max_ms']} ms  errors {s['errors']}  statuses {s['statuses']}  "
               f"server CPU {s['server_cpu_ms_per_trace']} ms/trace")
    peak_rate = m.get("ok_traces_per_s", m["throughput_rps"])
    click.echo(f"  max        {m['mode']}, {m['connections']} connections: {peak_rate}"
               f" traces/s  p50 {m['p50_ms']} ms  p99 {m['p99_ms']} ms  errors {m['errors']}  "
               f"server CPU {m['server_cpu_ms_per_trace']} ms/trace")
    click.echo(f"  goal (>= {GOAL_RPS} traces/s sustained, p99 < {GOAL_P99_MS:.0f} ms, <= {GOAL_CPU_MS} ms server CPU "
               f"a trace): {'met' if result['goal_met'] else 'NOT met'}")
