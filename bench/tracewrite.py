"""`crystallise bench tracewrite`: the context layer's write path on the hot path, measured.

For N synthetic runs shaped like a support agent's (a user question, an LLM span with the
chat messages, a tool span with a JSON result, a retrieval span, feedback; about 2 KB of
text, a third of them carrying an e-mail, a phone or a card number) it measures:

  redact_us      PII redaction of one trace alone (PiiPolicy.redact_trace), microseconds
  write_ms       Store.write_trace of one trace with redaction on (what the SDK does on exit)
  write_raw_ms   the same with redaction off (the redaction's share is the difference)
  remember_ms    crystallise.remember of a user-level memory (plan + user-ledger commit)
  sdk_sync_ms    what the application waits for one `with crystallise.trace(...)` block (the same
                 trace: spans, output, feedback) with trace_writes = sync (written before it exits)
  sdk_bg_ms      the same with trace_writes = background (the default): the block hands the trace
                 to the background writer; `bg_drain_ms` is the time `crystallise.flush()` then
                 took to store all N (the writer's batches), and `bg_stats` its counters

p50 and p95 of each, in a fresh home (SQLite by default; --store-url for PostgreSQL).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from crystallise.engine import tracing
from crystallise.engine.memory import remember
from crystallise.engine.observe import trace
from crystallise.context.pii import PiiPolicy
from crystallise.engine.home import Home
from crystallise.types import Feedback, Span, Trace

PII = ["reach me at ann.lee{i}@example.com", "my number is +44 20 7946 {i:04d}", "card 4111 1111 1111 1111"]


def make_trace(i: int, user: str) -> Trace:
    question = (f"Hi, I ordered item #{1000 + i} last week and it still has not arrived. "
                f"{PII[i % 3].format(i=i) if i % 3 == 0 or i % 5 == 0 else 'Thanks.'} "
                "Can you check the status and tell me when it will be delivered? ") * 2
    result = {"order": 1000 + i, "status": "in transit", "carrier": "DHL", "eta": "2024-03-0" + str(i % 9 + 1),
              "events": [{"at": f"2024-02-2{k}", "where": "Leipzig hub", "what": "scanned"} for k in range(6)]}
    messages = [{"role": "system", "content": "You are a helpful support agent. " * 8},
                {"role": "user", "content": question}]
    return Trace(
        name="support", agent_id="support", org_id="acme", user_id=user, input=question,
        output="Your parcel is in transit with DHL and should arrive on " + result["eta"] + ".",
        spans=[
            Span(name="context", kind="retrieval", attributes={"shown_items": [f"it_{k:016x}" for k in range(5)]}),
            Span(name="lookup_order", kind="tool", input={"order": 1000 + i}, output=result),
            Span(name="llm", kind="llm", input=messages, output="Your parcel is in transit.",
                 attributes={"model": "local", "prompt_tokens": 412, "completion_tokens": 31}),
        ],
        feedback=[Feedback(trace_id="", score=1.0, comment="thanks!")],
    )


def _sdk_trace(home: Home, shape: Trace, name: str) -> float:
    """Milliseconds the application spends in one trace block that records `shape`'s spans and feedback."""
    start = time.perf_counter()
    with trace(name, agent="support", org="acme", user=shape.user_id, input=shape.input, home=home) as t:
        for span in shape.spans:
            t.add_span(span)
        t.output = shape.output
        t.feedback(score=1.0, comment="thanks!")
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "p95": round(pct(values, 0.95), 3)}


@click.command()
@click.option("--n", "n", type=int, default=300, show_default=True, help="Traces per measurement.")
@click.option("--store-url", default=None, help="Store URL (default: SQLite in a temporary home).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def command(n: int, store_url: str | None, as_json: bool) -> None:
    """Trace write latency with and without PII redaction, and remember() latency."""
    policy = PiiPolicy()
    traces = [make_trace(i, f"u{i % 20}") for i in range(n)]
    size = statistics.mean(len(json.dumps(t.to_dict())) for t in traces)
    redact_us = []
    for t in traces:
        start = time.perf_counter()
        policy.redact_trace(t)
        redact_us.append((time.perf_counter() - start) * 1e6)
    with tempfile.TemporaryDirectory() as tmp:
        home = Home.init(Path(tmp) / "home", store_url=store_url)
        store = home.store
        results: dict[str, Any] = {}
        for label, redactor in (("write_ms", policy), ("write_raw_ms", None)):
            store.redactor = redactor
            timings = []
            for i in range(n):
                t = make_trace(i, f"u{i % 20}")
                start = time.perf_counter()
                store.write_trace(t)
                timings.append((time.perf_counter() - start) * 1000)
            results[label] = summary(timings)
        store.redactor = policy
        timings = []
        for i in range(min(n, 200)):
            start = time.perf_counter()
            remember(f"prefers delivery option {i} for order {1000 + i}", agent="support", org="acme",
                     user=f"u{i % 20}", home=home)
            timings.append((time.perf_counter() - start) * 1000)
        results["remember_ms"] = summary(timings)
        for label, mode in (("sdk_sync_ms", "sync"), ("sdk_bg_ms", "background")):
            home.config["trace_writes"] = mode  # CRYSTALLISE_TRACE_WRITES, when set, wins over this
            timings = []
            for i in range(n):
                timings.append(_sdk_trace(home, make_trace(i, f"u{i % 20}"), label))
            results[label] = summary(timings)
        start = time.perf_counter()
        tracing.flush(timeout=120)
        results["bg_drain_ms"] = round((time.perf_counter() - start) * 1000, 1)
        s = tracing.stats()
        results["bg_stats"] = {"accepted": s.accepted, "written": s.written, "dropped": s.dropped,
                               "errors": s.errors, "rejected": s.rejected}
        home.close()
    out = {"n": n, "trace_bytes_mean": round(size), "redact_us": summary(redact_us), **results,
           "store": "postgresql" if store_url and store_url.startswith("postgres") else "sqlite"}
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"{n} traces of ~{out['trace_bytes_mean']} bytes, {out['store']}")
    click.echo(f"  redaction alone      p50 {out['redact_us']['p50']:.0f} us   p95 {out['redact_us']['p95']:.0f} us")
    for key, name in (("write_ms", "write, redaction on "), ("write_raw_ms", "write, redaction off"),
                      ("remember_ms", "remember (user)     "), ("sdk_sync_ms", "SDK trace, sync     "),
                      ("sdk_bg_ms", "SDK trace, background")):
        click.echo(f"  {name} p50 {out[key]['p50']:.2f} ms  p95 {out[key]['p95']:.2f} ms")
    click.echo(f"  background writer: stored all in {out['bg_drain_ms']:.0f} ms after the last block; "
               f"{out['bg_stats']}")
