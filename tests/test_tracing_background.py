"""Background trace writes that fail open (traces/background.py, engine/tracing.py) and the async SDK.

The writer's unit tests use a store double that can be switched down; the integration tests use a
real SQLite store held locked by another connection (a slow store), a real PostgreSQL server that
is stopped and started again (a store that is down), and a real child process that exits."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import crystallise
from crystallise.engine import tracing
from crystallise.errors import StoreError, ValidationError
from crystallise.traces.background import BackgroundWriter, Queued, Sink, WriteThrough
from crystallise.types import Feedback, Trace
from tests.helpers import new_home


class FlakyStore:
    """A store double: `down` makes every write fail as a store that cannot be reached does."""

    def __init__(self) -> None:
        self.down = False
        self.traces: dict[str, Trace] = {}
        self.feedback: list[Feedback] = []
        self.batches = 0

    def _check(self) -> None:
        if self.down:
            raise StoreError("connection refused (the test's store is down)")

    def write_trace(self, trace: Trace) -> Trace:
        self._check()
        if trace.id in self.traces:
            raise ValidationError(f"trace {trace.id} was already recorded; traces are immutable")
        self.traces[trace.id] = trace
        return trace

    def write_traces(self, batch: list[Trace]) -> list[Trace | Exception]:
        self._check()
        self.batches += 1
        out: list[Trace | Exception] = []
        for t in batch:
            try:
                out.append(self.write_trace(t))
            except ValidationError as e:
                out.append(e)
        return out

    def add_feedback(self, fb: Feedback) -> None:
        self._check()
        if fb.trace_id not in self.traces:
            raise ValidationError(f"trace {fb.trace_id} not found")
        self.feedback.append(fb)


@pytest.fixture
def writer():
    w = BackgroundWriter(capacity=50, max_backoff_s=0.2, exit_timeout_s=1.0)
    yield w
    w.close(1.0)


def test_store_down_never_reaches_the_app_and_everything_is_written_once_it_is_back(writer, caplog):
    store = FlakyStore()
    store.down = True
    sink = Sink(lambda: store)
    caplog.set_level(logging.WARNING, logger="crystallise.traces")
    queued = Queued(writer, sink)
    traces = [Trace(name="run", input=i) for i in range(20)]
    for t in traces:
        assert queued.write_trace(t) is True          # returns at once, raises nothing
    assert queued.add_feedback(Feedback(trace_id=traces[0].id, label="thumbs_down"))
    assert not writer.flush(0.5)                      # still down: not written, still buffered
    down = writer.snapshot()
    assert down.errors >= 1 and down.buffered == 21 and down.written == 0 and down.dropped == 0
    failures = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(failures) == 1, "one log line per failure burst, not one per attempt"
    store.down = False
    assert writer.flush(5.0)
    assert list(store.traces) == [t.id for t in traces], "written in order once the store is back"
    assert [f.trace_id for f in store.feedback] == [traces[0].id], "feedback after its trace"
    assert store.batches <= 2, "the buffered traces go in batches, not one transaction each"
    s = writer.snapshot()
    assert (s.written, s.buffered, s.dropped, s.rejected) == (21, 0, 0, 0)
    assert any("back" in r.getMessage() for r in caplog.records)


def test_a_full_buffer_drops_new_records_with_a_count_and_keeps_what_it_accepted(caplog):
    store = FlakyStore()
    store.down = True
    w = BackgroundWriter(capacity=5, max_backoff_s=0.2, block_s=0.0)
    caplog.set_level(logging.WARNING, logger="crystallise.traces")
    q = Queued(w, Sink(lambda: store))
    accepted = [Trace(name="run") for _ in range(5)]
    assert all(q.write_trace(t) for t in accepted)
    start = time.perf_counter()
    assert [q.write_trace(Trace(name="late")) for _ in range(3)] == [False] * 3
    assert time.perf_counter() - start < 0.5, "a full buffer does not hold the application"
    assert w.snapshot().dropped == 3
    assert sum("buffer full" in r.getMessage() for r in caplog.records) == 1
    store.down = False
    assert w.flush(5.0)
    assert list(store.traces) == [t.id for t in accepted]
    w.close(1.0)


class HeldStore(FlakyStore):
    """Down, and each write waits for `release` before it fails: a batch stays in flight while the test
    submits more (the moment a capacity that counts only the buffer lets too many in)."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.taken, self.release = True, threading.Event(), threading.Event()

    def write_traces(self, batch: list[Trace]) -> list[Trace | Exception]:
        self.taken.set()
        self.release.wait(5.0)
        return super().write_traces(batch)


def test_a_batch_in_flight_counts_against_the_capacity():
    store = HeldStore()
    w = BackgroundWriter(capacity=5, max_backoff_s=0.2, block_s=0.0)
    q = Queued(w, Sink(lambda: store))
    accepted = [Trace(name="run") for _ in range(5)]
    assert all(q.write_trace(t) for t in accepted)
    assert store.taken.wait(5.0)  # the writer holds the five as one batch, out of the buffer
    assert [q.write_trace(Trace(name="late")) for _ in range(3)] == [False] * 3
    assert w.snapshot().buffered == 5 and w.snapshot().dropped == 3
    store.release.set()  # the write fails; the batch goes back: still five held, never more
    time.sleep(0.1)
    assert w.snapshot().buffered == 5
    store.down = False
    assert w.flush(5.0)
    assert list(store.traces) == [t.id for t in accepted]
    w.close(1.0)


def test_refused_records_are_counted_not_retried(writer):
    store = FlakyStore()
    q = Queued(writer, Sink(lambda: store))
    t = Trace(name="run")
    q.write_trace(t)
    q.write_trace(t)                                   # the same id twice: the store refuses the second
    q.add_feedback(Feedback(trace_id="tr_unknown", score=1.0))
    assert writer.flush(5.0)
    s = writer.snapshot()
    assert (s.written, s.rejected, s.errors) == (1, 2, 0)


def test_write_through_fails_open_and_keeps_feedback_behind_its_trace(writer):
    store = FlakyStore()
    sync = WriteThrough(writer, Sink(lambda: store))
    ok = Trace(name="run")
    assert sync.write_trace(ok) and ok.id in store.traces   # stored on return
    store.down = True
    t = Trace(name="run")
    assert sync.write_trace(t) is True                       # handed to the background writer, no exception
    store.down = False
    assert sync.add_feedback(Feedback(trace_id=t.id, score=0.0))  # queued behind its trace, not refused
    assert writer.flush(5.0)
    assert t.id in store.traces and store.feedback[-1].trace_id == t.id and writer.snapshot().rejected == 0


@pytest.mark.postgres
def test_sdk_trace_with_real_postgres_down_then_back(tmp_path, monkeypatch):
    from crystallise.testing import PostgresServer, postgres_unavailable

    if (reason := postgres_unavailable()) is not None:
        pytest.skip(reason)
    server = PostgresServer.start()
    try:
        url = server.create_database()
        home = new_home(tmp_path, url)
        home.close()
        tracing.configure(capacity=100, exit_timeout_s=1.0)
        server._run("pg_ctl", "-D", server.data, "-m", "fast", "-w", "stop")   # the store goes down
        for mode in ("background", "sync"):
            monkeypatch.setenv("CRYSTALLISE_TRACE_WRITES", mode)
            start = time.perf_counter()
            with crystallise.trace("chat", user="u1", input=mode, home=home) as t:
                t.output = "answer"
            t.feedback(label="thumbs_up")
            assert time.perf_counter() - start < 15, "a store that is down does not hang the application"
        assert not crystallise.flush(1.0)
        assert crystallise.tracing_stats().errors >= 1
        server._run("pg_ctl", "-D", server.data, "-o", f"-p {server.port} -k {server.directory} "
                    "-c listen_addresses=127.0.0.1", "-l", f"{server.directory}/server.log", "-w", "start")
        assert crystallise.flush(30.0)
        got = sorted(home.store.list_traces(name="chat", with_children=True), key=lambda x: str(x.input))
        assert [x.input for x in got] == ["background", "sync"]
        assert all(x.outcome == 1.0 for x in got), "feedback given while the store was down is kept"
        home.close()
    finally:
        tracing.configure()
        server.stop()


def test_process_exit_flushes_background_traces(tmp_path):
    home = new_home(tmp_path)
    script = textwrap.dedent(f"""
        import crystallise
        from crystallise.engine.home import Home
        home = Home.open({str(home.path)!r})
        for i in range(50):
            with crystallise.trace("exit", input=i, home=home) as t:
                t.output = i
        # no flush: atexit writes what is buffered
    """)
    env = {"CRYSTALLISE_TRACE_WRITES": "background", "PYTHONPATH": "src:.", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert home.store.count_traces() == 50


def test_async_trace_does_not_block_the_event_loop_on_a_slow_store(tmp_path, monkeypatch):
    """A store held locked by another writer (a slow store): a sync write would wait for the lock;
    `async with trace` hands the trace to the background writer, so the loop keeps ticking."""
    monkeypatch.setenv("CRYSTALLISE_TRACE_WRITES", "sync")   # async with ignores it: always background
    home = new_home(tmp_path)
    lock = sqlite3.connect(home.path / "store.db", timeout=1, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.5, lock.rollback)
    release.start()

    async def main() -> tuple[list[float], list[str]]:
        lags: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t0 - 0.005)

        tick = asyncio.create_task(ticker())
        ids = []
        for i in range(20):
            async with crystallise.trace("async", input=i, home=home) as t:
                t.output = i
            ids.append(t.id)
            await asyncio.sleep(0.01)
        stop.set()
        await tick
        return lags, ids

    started = time.perf_counter()
    lags, ids = asyncio.run(main())
    elapsed = time.perf_counter() - started
    release.join()
    lock.close()
    assert elapsed < 1.4, f"the traces were taken while the store was locked ({elapsed:.2f} s)"
    assert max(lags) < 0.25 and statistics.median(lags) < 0.05, f"loop lag {max(lags) * 1000:.0f} ms"
    assert crystallise.flush(40.0)
    assert {t.id for t in home.store.list_traces(name="async", limit=100)} == set(ids)


def test_async_remember_recall_and_task(tmp_path, monkeypatch):
    from crystallise.backends.scripted import ScriptedBackend

    home = new_home(tmp_path)

    @crystallise.task(home=home)
    async def shout(text: str) -> str:
        """Say it louder."""

    monkeypatch.setattr(type(home), "backend", lambda self, spec=None: ScriptedBackend(["HELLO"]))

    async def main() -> tuple[object, list[object], str, str]:
        async with crystallise.trace("chat", user="u1", home=home) as t:
            item = await crystallise.aremember("prefers metric units", user="u1", home=home)
            found = await crystallise.arecall("metric units", user="u1", home=home)
            out = await shout("hello")
        return item, found, out, t.id

    item, found, out, trace_id = asyncio.run(main())
    assert crystallise.flush(10)
    assert out == "HELLO" and [i.id for i in found] == [item.id]  # type: ignore[attr-defined]
    spans = home.store.get_trace(trace_id).spans
    assert [s.kind for s in spans] == ["task"] and spans[0].output == "HELLO"


def test_background_feedback_after_the_block_is_stored_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALLISE_TRACE_WRITES", "background")
    home = new_home(tmp_path)
    for _ in range(20):   # the writer races the feedback: the handed-over trace must not change
        with crystallise.trace("chat", input="q", home=home) as t:
            t.output = "a"
        t.feedback(label="thumbs_down")
    before = crystallise.tracing_stats().rejected
    assert crystallise.flush(10)
    got = home.store.list_traces(name="chat", with_children=True, limit=50)
    assert len(got) == 20 and all(len(x.feedback) == 1 and x.outcome == 0.0 for x in got)
    assert crystallise.tracing_stats().rejected == before


def test_score_right_after_a_background_trace_finds_it(tmp_path, monkeypatch):
    """`crystallise.score(t.id, …)` straight after the block: the trace may still be in the writer's
    buffer; score waits for it once instead of answering 'not found'."""
    monkeypatch.setenv("CRYSTALLISE_TRACE_WRITES", "background")
    home = new_home(tmp_path)
    ids = []
    for i in range(10):
        with crystallise.trace("ratio", input=f"q{i}", home=home) as t:
            t.output = "a"
        crystallise.score(t.id, 1.0, correction="a", home=home)
        ids.append(t.id)
    assert crystallise.flush(10)
    assert all(len(home.store.get_trace(i).feedback) == 1 for i in ids)
