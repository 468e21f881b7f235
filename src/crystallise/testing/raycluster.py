"""A throwaway local Ray cluster of N nodes on 127.0.0.1, for the tests and benchmarks of crystallise.scale.

Run it inside a private network namespace that has only loopback, so nothing it starts is reachable
from (or reaches) the network -- a multi-node Ray cluster otherwise advertises the machine's address:

    unshare -n python DRIVER            # the driver: `ip link set lo up`, then
    with RayCluster(homes) as cluster:  # one node per home (CRYSTALLISE_HOME of its raylet), head first
        RayExecutor(home, address=cluster.address)

Every process started inside the namespace is stopped by pid on exit (`sweep`), never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RayCluster", "private_network_problem", "sweep"]

def private_network_problem() -> str | None:
    """Why a private network namespace cannot be made here (None: it can)."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot make a private network namespace (`unshare -n` needs root): {probe.stderr.strip()}"
    return None


def sweep() -> None:
    """Kill every process of this network namespace but this one: in a private namespace, ours."""
    mine, me = os.stat("/proc/self/ns/net").st_ino, os.getpid()
    if mine == os.stat(f"/proc/{os.getppid()}/ns/net").st_ino:
        return  # our parent's namespace (not a private one under `unshare -n`): nothing here is only ours
    for _ in range(3):
        victims = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) != me:
                try:
                    if os.stat(p / "ns" / "net").st_ino == mine:
                        victims.append(int(p.name))
                except OSError:
                    continue
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not victims:
            return
        time.sleep(0.5)


class RayCluster:
    """`ray start` of a head node and `len(homes) - 1` workers, `cpus` CPUs each, on 127.0.0.1.

    `pin`: node k runs under `taskset -c k` with one CPU (`--num-cpus 1`), so k nodes have k cores of
    their own (the raylet, its workers and, on the head, the GCS inherit the affinity). `env`: more
    environment for every node's processes (e.g. `RAY_gcs_rpc_server_reconnect_timeout_s`)."""

    def __init__(self, homes: Sequence[Path], *, port: int = 6391, cpus: int = 2, pin: bool = False,
                 env: dict[str, str] | None = None) -> None:
        if pin and len(homes) > (os.cpu_count() or 1):
            raise ValueError(f"--pin gives each node a core of its own: {len(homes)} nodes need "
                             f"{len(homes)} cores, this machine has {os.cpu_count()}")
        self.homes, self.port, self.cpus, self.pin = list(homes), port, 1 if pin else cpus, pin
        self.env = dict(env or {})
        self.address = f"127.0.0.1:{port}"
        self.ray = str(Path(sys.executable).with_name("ray"))

    def _start(self, index: int, *args: str) -> None:
        env = {**os.environ, **self.env, "CRYSTALLISE_HOME": str(self.homes[index]), "RAY_USAGE_STATS_ENABLED": "0"}
        pin = ["taskset", "-c", str(index)] if self.pin else []
        done = subprocess.run([*pin, self.ray, "start", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                               "--disable-usage-stats", "--object-store-memory=80000000", *args],
                              env=env, capture_output=True, text=True, timeout=180)
        if done.returncode:
            raise RuntimeError(f"ray start failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start_head(self) -> None:
        """Start (or start again, at the same address) the head node, in the first home."""
        self._start(0, "--head", f"--port={self.port}", "--include-dashboard=false")

    def __enter__(self) -> RayCluster:
        self.start_head()
        for index in range(1, len(self.homes)):
            self._start(index, f"--address={self.address}")
        return self

    def node_pids(self, index: int) -> list[int]:
        """The processes of node `index`: every process whose CRYSTALLISE_HOME is that node's home
        (`ray start` gives it to the node's GCS, raylet and workers; nothing else here has it)."""
        want = f"CRYSTALLISE_HOME={self.homes[index]}".encode()
        pids = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) != os.getpid():
                try:
                    if want in (p / "environ").read_bytes().split(b"\0"):
                        pids.append(int(p.name))
                except OSError:
                    continue
        return pids

    def kill_node(self, index: int) -> list[int]:
        """kill -9 every process of node `index` (index 0: the head -- the machine it ran on is gone)."""
        pids = self.node_pids(index)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return pids

    def __exit__(self, *_exc: object) -> None:
        pass  # the caller sweeps the namespace once everything else (PostgreSQL) has stopped
