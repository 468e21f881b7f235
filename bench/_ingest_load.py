"""The load generator of `crystallise bench ingest`, run as its own process (not imported by the server).

    python bench/_ingest_load.py --url http://127.0.0.1:8401/v1/traces --key KEY \\
        --mode open --rate 500 --duration 20 --connections 32       # prints one JSON object

Plain asyncio over keep-alive HTTP/1.1 connections (no client library in the way: at 500 req/s
the generator must cost far less CPU than the server it measures).

  open    requests are *scheduled* at a fixed rate; latency counts from the scheduled time, so a
          stalled server shows up as latency instead of as politely fewer requests (no
          coordinated omission). If no connection is free, the request waits for one.
  closed  every connection sends its next request as soon as the last answer arrived: the
          highest sustained throughput, with the latency at that load.

Each request is one trace with a retrieval span, an llm span and a feedback (about 900 bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit


def trace_body(i: int, batch: int = 1) -> bytes:
    """One trace (the body of POST /v1/traces), or `batch` of them (POST /v1/traces/batch)."""
    if batch > 1:
        return json.dumps({"traces": [json.loads(trace_body(i * batch + k)) for k in range(batch)]}).encode()
    return json.dumps({
        "name": "answer", "agent": "support", "user": f"u{i % 50}", "session": f"s{i % 200}",
        "input": f"Question {i}: how long is the refund window for a damaged parcel?",
        "output": "30 days from delivery",
        "spans": [
            {"name": "context", "kind": "retrieval",
             "attributes": {"shown_items": ["it_1", "it_2"], "latency_ms": 1.1}},
            {"name": "chat gpt-4o-mini", "kind": "llm",
             "input": [{"role": "user", "content": f"Question {i}: how long is the refund window?"}],
             "output": "30 days from delivery",
             "attributes": {"model": "gpt-4o-mini", "prompt_tokens": 182, "completion_tokens": 6, "latency_ms": 412.5}},
        ],
        "feedback": [{"score": 1.0, "label": "correct"}],
    }).encode()


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None  # noqa: S101 - set just above
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    k = min(len(sorted_ms) - 1, max(0, round(q / 100 * len(sorted_ms)) - 1))
    return round(sorted_ms[k], 2)


async def run(url: str, key: str, mode: str, rate: float, duration: float, connections: int,
              batch: int = 1) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    bodies = [trace_body(i, batch) for i in range(256)]

    def head(body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()

    heads = [head(b) for b in bodies]
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Conn(host, port))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []

    async def one(i: int, scheduled: float) -> None:
        conn = await pool.get()
        try:
            status = await conn.request(heads[i % 256], bodies[i % 256])
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            latencies.append((time.perf_counter() - scheduled) * 1000)
        except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.writer = None
        finally:
            pool.put_nowait(conn)

    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    if mode == "open":
        i = 0
        while True:
            scheduled = start + i / rate
            if scheduled - start >= duration:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
            i += 1
        await asyncio.gather(*tasks)
    else:
        counter = iter(range(10**9))

        async def worker() -> None:
            while time.perf_counter() - start < duration:
                await one(next(counter), time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "mode": mode, "target_rate": rate if mode == "open" else None, "connections": connections,
        "duration_s": round(wall, 2), "sent": len(latencies) + len(errors), "statuses": statuses,
        "errors": len(errors), "first_errors": errors[:3],
        "throughput_rps": round(len(latencies) / wall, 1),
        "ok_rps": round(statuses.get("201", 0) / wall, 1), "batch": batch,
        "ok_traces_per_s": round(statuses.get("201", 0) * batch / wall, 1),
        "p50_ms": percentile(ordered, 50), "p90_ms": percentile(ordered, 90), "p99_ms": percentile(ordered, 99),
        "max_ms": round(ordered[-1], 2) if ordered else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--mode", choices=["open", "closed"], default="open")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1, help="traces per request (to POST /v1/traces/batch)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.key, args.mode, args.rate, args.duration, args.connections,
                                     args.batch))))


if __name__ == "__main__":
    main()
