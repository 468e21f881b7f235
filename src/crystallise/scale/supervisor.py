"""`RaySupervisor`: the executor of `serve --engine ray` and `worker --engine ray`. It keeps the Ray
driver in a child process (scale/dispatch.py) and starts another one whenever that one ends, so the
API process outlives its Ray cluster's head.

    with RaySupervisor(home, address="10.0.0.5:6379") as ex:   # what `serve --engine ray` runs
        ex.start(job)                                          # "dispatch now" (else the next poll)

    supervisor thread                                  child (python -m crystallise.scale: dispatch.py)
      1. probe HOST:PORT; no answer: step 5             ray.init, then {"event": "connected"}
      2. start the child, its stderr to HOME/ray-dispatch.log
      3. read its events: "connected", "alive" ...      probes the head every second
      4. it ended ("lost", a crash) or went silent      {"event": "lost"}, exit 3
         for `stall_s` (killed, by its pid)
      5. the head is down: ONE error naming the address per outage, then retry with backoff
         (1, 2, 4, 5, 5 ... s, probing the port first: a dead head costs a connect(), not a child)

While the head is down nothing is dispatched: queued jobs wait in the store and the API answers as
always (ingest, reads, `POST /v1/learn` all work). Jobs that were running on a node that died lose
their worker, hence their scope lock, and `jobs.reap` (run by the scheduler and by every
dispatcher) queues them again; change sets carry the job id, so a re-run never commits twice.
When the head answers again the next child connects and dispatches what is queued.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from crystallise.engine import jobs
from crystallise.engine.home import Home
from crystallise.scale.dispatch import EXIT_LOST, EXIT_NO_HEAD, head_answers
from crystallise.scale.ray_exec import need_ray

__all__ = ["RaySupervisor"]

log = logging.getLogger("crystallise.scale")

LOG_NAME = "ray-dispatch.log"
_LOG_MAX = 16 << 20  # the child's log is started afresh above this size
_CRASH_BACKOFF_MAX_S = 60.0  # children that end before connecting to a head that answers: 5, 10, 20, 40, 60 s


class RaySupervisor:
    """Dispatch queued jobs to the Ray cluster at `address` from a child process, restarted with
    backoff while the head is down (module docstring). `state`: "starting", "connected" or "down"."""

    def __init__(self, home: Home, *, address: str | None, poll_s: float = 0.5, backoff_s: tuple[float, ...] =
                 (1.0, 2.0, 4.0, 5.0), connect_timeout_s: float = 120.0, stall_s: float = 60.0,
                 lost_after_s: float = 3.0) -> None:
        need_ray()  # the ImportError naming the `scale` extra, here rather than in a child's log
        self.home, self.address, self.poll_s, self.backoff_s = home, address, poll_s, backoff_s
        self.connect_timeout_s, self.stall_s, self.lost_after_s = connect_timeout_s, stall_s, lost_after_s
        self.where = address or "(Ray's default address)"
        self.state = "starting"
        self.connects = 0  # how many children connected so far (a reconnect: > 1)
        self.log_path = home.path / LOG_NAME
        self._down_since: float | None = None
        self._child: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="crystallise-ray-supervisor", daemon=True)
        self._thread.start()

    # -- the Executor protocol ---------------------------------------------------------------------

    def start(self, job: jobs.Job) -> None:
        """A job was queued: ask the child to dispatch now (if none is connected, it waits in the store)."""
        child = self._child
        if child is not None and child.stdin is not None and self.state == "connected":
            try:
                child.stdin.write("\n")
                child.stdin.flush()
            except (OSError, ValueError):
                pass  # the child is ending; the next one reads the queue from the store

    def cancel(self, job_id: str) -> None:
        jobs.cancel(self.home, job_id)

    # -- supervising -------------------------------------------------------------------------------

    def _supervise(self) -> None:
        failures = crashes = 0
        while not self._stop.is_set():
            wait = self.backoff_s[min(failures, len(self.backoff_s) - 1)]
            if not head_answers(self.address):
                why = "nothing listens at that address"
            else:
                connected, why = self._run_child()
                if connected:
                    failures = crashes = 0
                else:  # the head answers but no child gets through (a bad home, a broken install):
                    crashes += 1  # back off further, a child costs a process start and Ray's imports
                    wait = max(wait, min(_CRASH_BACKOFF_MAX_S, 5.0 * 2 ** (crashes - 1)))
            if self._stop.is_set():
                break
            self._down(why)
            self._stop.wait(wait)
            failures += 1

    def _down(self, why: str) -> None:
        self.state = "down"
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("Ray head at %s is unreachable (%s): learning jobs wait in the queue and nothing "
                      "else is affected; retrying to connect every %.0f s at most (dispatcher log: %s)",
                      self.where, why, max(self.backoff_s), self.log_path)
        else:
            log.debug("Ray head at %s still unreachable: %s", self.where, why)

    def _spawn(self) -> subprocess.Popen[str]:
        if self.log_path.exists() and self.log_path.stat().st_size > _LOG_MAX:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        with open(self.log_path, "a", encoding="utf-8") as err:
            err.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} dispatcher for {self.where}\n")
            err.flush()
            argv = [sys.executable, "-m", "crystallise.scale", "--home", str(self.home.path),
                    "--poll-s", str(self.poll_s), "--lost-after-s", str(self.lost_after_s)]
            if self.address:
                argv += ["--address", self.address]
            return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                    env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, start_new_session=True)

    def _run_child(self) -> tuple[bool, str]:
        """Run one child until it ends; (whether it connected, why it ended)."""
        child = self._spawn()
        self._child = child
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=_read_events, args=(child.stdout, events), daemon=True).start()
        connected, why, stuck = False, "", False
        try:
            while not self._stop.is_set():
                try:
                    event = events.get(timeout=self.stall_s if connected else self.connect_timeout_s)
                except queue.Empty:
                    stuck = True
                    why = (f"its dispatcher sent nothing for {self.stall_s:.0f} s (killed)" if connected else
                           f"connecting took over {self.connect_timeout_s:.0f} s (killed)")
                    break
                if event is None:  # end of its stdout: it exited
                    break
                if event.get("event") == "connected":
                    connected, self.state = True, "connected"
                    self.connects += 1
                    if self._down_since is not None:
                        log.warning("Ray head at %s answers again (%s node(s)) after %.0f s: dispatching queued "
                                    "jobs", self.where, event.get("nodes"), time.monotonic() - self._down_since)
                    else:
                        log.info("learning jobs run on the Ray cluster at %s (%s node(s))", self.where,
                                 event.get("nodes"))
                    self._down_since = None
                elif event.get("event") == "lost":
                    why = str(event.get("why") or "it stopped answering")
        finally:
            self._child = None
            _end(child, grace_s=0.0 if stuck else 10.0)
        if not why:
            code = child.returncode
            why = {EXIT_LOST: "it stopped answering", EXIT_NO_HEAD: "nothing listens at that address"}.get(
                code, f"its dispatcher exited with status {code}: {_last_line(self.log_path)}")
        return connected, why

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        child = self._child
        if child is not None and child.stdin is not None:
            try:
                child.stdin.close()  # end of file: the child stops dispatching and exits
            except OSError:
                pass
        self._thread.join(timeout)

    def __enter__(self) -> RaySupervisor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _read_events(stream: IO[str] | None, events: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream or ():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.put(event)
    events.put(None)


def _end(child: subprocess.Popen[str], grace_s: float = 10.0) -> None:
    """Wait for the child (it exits on its own once its stdin closes); kill -9 it, by pid, after `grace_s`
    (at once for a child that is stuck)."""
    if child.stdin is not None:
        try:
            child.stdin.close()
        except OSError:
            pass
    try:
        child.wait(grace_s) if grace_s > 0 else child.wait(0.001)
    except subprocess.TimeoutExpired:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except OSError:
            pass
        child.wait()


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()[-50:] if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][-300:] if lines else "(no output)"
