"""The Ray driver process of `serve --engine ray` / `worker --engine ray` (started by supervisor.py).

    python -m crystallise.scale --home HOME --address HOST:PORT

Why a process of its own: a Ray driver is bound to its cluster's head (the GCS). When the head dies,
calls into Ray may block, and Ray ends the driver's whole process (`_exit`) once it has failed to
reconnect for `gcs_rpc_server_reconnect_timeout_s` (60 s by default). Inside `serve` that would take
the API down with the head; here it takes only this process, and the supervisor starts another one
when the head answers again. Everything a dispatcher knows is in the store (queued / running jobs),
so a new one picks up where the old one stopped.

    1. connect: `RayExecutor(home, address)` (ray.init), then report {"event": "connected"}
    2. every `beat_s`: probe the head's port; report {"event": "alive"} while it answers
    3. the head has not answered for `lost_after_s`: report {"event": "lost"} and exit 3 at once
       (no ray.shutdown: it can block on a dead head; the OS frees the advisory locks)

Protocol: one JSON object a line on stdout (read by the supervisor; anything else the process would
print goes to stderr). stdin: a line = "a job was queued, dispatch now"; end of file = the
supervisor is gone, so is this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import IO

from crystallise.engine.home import Home
from crystallise.scale.ray_exec import RayExecutor, need_ray

__all__ = ["EXIT_LOST", "EXIT_NO_HEAD", "head_answers", "main"]

EXIT_LOST = 3  # the head stopped answering after we had connected
EXIT_NO_HEAD = 4  # nothing answered at the address to begin with

log = logging.getLogger("crystallise.scale.dispatch")


def head_answers(address: str | None, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the head's `HOST:PORT` (the GCS port). An
    address that is not HOST:PORT (None, "auto", "ray://...") cannot be probed: True."""
    if not address or address.count(":") != 1 or "/" in address:
        return True
    host, _, port = address.partition(":")
    if not port.isdigit():
        return True
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _say(out: IO[str], event: str, **fields: object) -> None:
    out.write(json.dumps({"event": event, **fields}) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m crystallise.scale")
    ap.add_argument("--home", required=True)
    ap.add_argument("--address", default=None)
    ap.add_argument("--poll-s", type=float, default=0.5)
    ap.add_argument("--beat-s", type=float, default=1.0)
    ap.add_argument("--lost-after-s", type=float, default=3.0)
    args = ap.parse_args(argv)

    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol keeps the real stdout ...
    os.dup2(2, 1)  # ... and whatever else prints goes to stderr (the supervisor's log file)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not head_answers(args.address):
        _say(proto, "lost", why="nothing listens at that address")
        return EXIT_NO_HEAD

    home = Home.open(args.home)
    executor = RayExecutor(home, address=args.address, poll_s=args.poll_s)
    nodes = len([n for n in need_ray().nodes() if n.get("Alive")])
    _say(proto, "connected", nodes=nodes, pid=os.getpid())

    stop = threading.Event()

    def read_stdin() -> None:  # a line: dispatch now; end of file: the supervisor is gone
        for _ in sys.stdin:
            executor.start(None)  # type: ignore[arg-type] - RayExecutor.start only wakes its loop
        stop.set()

    threading.Thread(target=read_stdin, name="crystallise-dispatch-stdin", daemon=True).start()
    silent_since: float | None = None
    while not stop.wait(args.beat_s):
        if head_answers(args.address):
            silent_since = None
            _say(proto, "alive", in_flight=len(executor.in_flight()))
            continue
        silent_since = silent_since or time.monotonic()
        if time.monotonic() - silent_since >= args.lost_after_s:
            _say(proto, "lost", why=f"it stopped answering for {args.lost_after_s:.0f} s")
            os._exit(EXIT_LOST)  # noqa: SLF001 - ray.shutdown() may block on a dead head
    executor.close(timeout=10)
    home.close()
    return 0

