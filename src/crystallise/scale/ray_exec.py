"""`RayExecutor`: every queued learning job runs as a Ray task, on whichever node has the resources.

    with RayExecutor(home, address="10.0.0.5:6379") as ex:      # `crystallise worker --engine ray`
        ex.start(jobs.submit(home, "learn", scope=Scope(org="acme"), params={"task": "ratio"}))

The driver (a `crystallise worker` or `serve` process) dispatches; Ray runs. Each node runs its
tasks in its own home: `ray start` on a node is given CRYSTALLISE_HOME, a home made with
`crystallise init --store-url postgresql://... --registry URL`, so every node shares the store
(jobs, traces, versions) and the artifact registry, and no filesystem (docs/deploy.md).

    dispatch loop (one driver at a time: the `ray-dispatch` lock; others stand by)
      1. the queued jobs, oldest first, whose scope has no job running or in flight
      2. each as a Ray task with the resources its kind asks for (`resources_for`: CPU and memory,
         a GPU for weights jobs when the cluster has one), `max_retries` for a node or worker that
         dies, no retry on an exception (a job that fails is recorded failed by `jobs.run`)
      3. the task calls `jobs.run(home, job_id)`: claim, the scope's lock, the work, the result

Idempotent: a task Ray re-runs after its worker died (kill -9, a lost node) is a new attempt of the
same job; change sets carry the job id (engine/jobctx.py), so what the first attempt committed is
found, not committed again, and a job already finished is returned as it is. Cancel is the job's
own (`jobs.cancel`): a queued job never starts, a running one stops at its next progress report --
between commits, never inside one, which is why no Ray task is ever interrupted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from crystallise.engine import jobs
from crystallise.engine.home import Home
from crystallise.errors import ConfigError

try:
    import ray
except ImportError as _e:  # pragma: no cover - depends on the installed extras
    ray = None
    _MISSING: ImportError | None = _e
else:
    _MISSING = None

__all__ = ["RayExecutor", "need_ray", "resources_for", "run_job"]

log = logging.getLogger("crystallise.scale")

MiB = 1 << 20
# Per kind: what one job of it asks Ray for (override per home: config.json "ray": {"resources": {KIND: {...}}}).
_HEAVY = {"weights-train": 4096 * MiB, "distill": 4096 * MiB, "weights-export": 1024 * MiB}
_GPU_KINDS = ("weights-train", "distill")
_KEYS = ("num_cpus", "num_gpus", "memory")


def need_ray() -> Any:
    """The `ray` module, or ImportError naming the extra that installs it."""
    if ray is None:
        raise ImportError("the Ray engine needs the `scale` extra: pip install 'crystallise[scale]'") from _MISSING
    return ray


def resources_for(kind: str, config: dict[str, Any], *, gpus: float = 0.0) -> dict[str, float]:
    """The Ray resource request of one job of `kind`: 1 CPU and 512 MiB by default, more memory for
    weights jobs and one GPU for training when the cluster has any; config.json may override.

    >>> resources_for("learn", {})
    {'num_cpus': 1.0, 'memory': 536870912.0}
    """
    res: dict[str, float] = {"num_cpus": 1.0, "memory": float(_HEAVY.get(kind, 512 * MiB))}
    if kind in _GPU_KINDS and gpus > 0:
        res["num_gpus"] = 1.0
    override = ((config.get("ray") or {}).get("resources") or {}).get(kind) or {}
    if not isinstance(override, dict):
        raise ConfigError(f'config.json "ray.resources.{kind}" must be an object like {{"num_cpus": 2}}')
    for key, value in override.items():
        if key not in _KEYS or isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f'config.json "ray.resources.{kind}.{key}": use one of {", ".join(_KEYS)} '
                              "with a number >= 0 (memory in bytes)")
        res[key] = float(value)
    return res


def run_job(job_id: str) -> str:
    """The body of every Ray task: run the job in this node's home; its final status."""
    home = Home.from_env()
    node = need_ray().get_runtime_context().get_node_id()[:12]
    try:
        return jobs.run(home, job_id, worker=f"ray:{node}:{os.getpid()}").status
    finally:
        home.close()


class RayExecutor:
    """Dispatches queued jobs to a Ray cluster (see the module docstring). `address`: the head's
    `HOST:PORT` (None: Ray's own default, a local cluster started for this process).

    In-process, this process is Ray's driver and shares the head's fate: once the head is gone Ray
    ends the process (after `gcs_rpc_server_reconnect_timeout_s`). Right for a batch (tests, `bench
    scale`); a long-lived process wants `RaySupervisor` (scale/supervisor.py), which runs this class in a
    child process and replaces it while the head is away."""

    def __init__(self, home: Home, *, address: str | None, max_retries: int = 3, poll_s: float = 0.5,
                 reap_every_s: float = 10.0) -> None:
        rt = need_ray()
        self.home, self.max_retries, self.poll_s, self.reap_every_s = home, max_retries, poll_s, reap_every_s
        self._owns_ray = not rt.is_initialized()
        if self._owns_ray:
            rt.init(address=address, namespace="crystallise", log_to_driver=False, configure_logging=False)
        self.gpus = float(rt.cluster_resources().get("GPU", 0.0))
        self._task = rt.remote(run_job)
        self._inflight: dict[str, tuple[Any, str]] = {}  # job id -> (object ref, scope key)
        self._lock = threading.Lock()
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="crystallise-ray-dispatch", daemon=True)
        self._thread.start()

    # -- the Executor protocol ---------------------------------------------------------------------

    def start(self, job: jobs.Job) -> None:
        """A job was queued: dispatch now rather than at the next poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        jobs.cancel(self.home, job_id)

    # -- dispatching -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with jobs.scope_lock(self.home, "ray-dispatch", wait=False) as mine:
                    reaped = 0.0
                    while mine and not self._stop.is_set():
                        if time.monotonic() - reaped > self.reap_every_s:
                            jobs.reap(self.home)  # running jobs whose worker died and Ray gave up on
                            reaped = time.monotonic()
                        self.dispatch()
                        self._wake.wait(self.poll_s)
                        self._wake.clear()
            except Exception:  # noqa: BLE001 - a store or cluster hiccup must not end dispatching
                log.exception("Ray dispatch")
            self._stop.wait(self.poll_s)

    def dispatch(self) -> list[str]:
        """Send every queued job whose scope is free to the cluster; the ids sent."""
        self._collect()
        queued = jobs.list_jobs(self.home, status="queued", limit=1000)
        running = jobs.list_jobs(self.home, status="running", limit=1000)
        sent = []
        with self._lock:
            busy = {key for _, key in self._inflight.values()} | {j.scope_key for j in running}
            for job in sorted(queued, key=lambda j: j.created_at):
                if job.id in self._inflight or job.scope_key in busy:
                    continue
                opts = resources_for(job.kind, self.home.config, gpus=self.gpus)
                ref = self._task.options(**opts, max_retries=self.max_retries, retry_exceptions=False,
                                         name=f"crystallise {job.kind} {job.id}").remote(job.id)
                self._inflight[job.id] = (ref, job.scope_key)
                busy.add(job.scope_key)
                sent.append(job.id)
        return sent

    def _collect(self) -> None:
        """Forget tasks that ended; a task Ray gave up on (retries spent) leaves its job to `reap`."""
        with self._lock:
            refs = {ref: job_id for job_id, (ref, _) in self._inflight.items()}
        if not refs:
            return
        ready, _ = need_ray().wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in ready:
            job_id = refs[ref]
            try:
                need_ray().get(ref)
            except Exception as e:  # noqa: BLE001 - recorded in the job by reap; logged here
                log.warning("job %s: its Ray task ended without a result: %s", job_id, type(e).__name__)
            with self._lock:
                self._inflight.pop(job_id, None)

    def in_flight(self) -> list[str]:
        with self._lock:
            return list(self._inflight)

    def close(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._owns_ray:
            need_ray().shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
