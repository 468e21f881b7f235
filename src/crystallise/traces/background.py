"""Background trace writes that fail open: the application never waits on, or hears from, the store.

    writer = BackgroundWriter(capacity=10_000)
    writer.submit(sink, "trace", record)      # O(1), never blocks; False (and counted) when full
    writer.submit(sink, "feedback", fb)       # ordered after the trace it is about
    writer.flush(timeout=5.0)                 # True once everything accepted so far is stored

One daemon thread per process drains one bounded FIFO buffer, oldest first:

    app threads / event loop ──submit──► [ buffer (bounded) ] ──► writer thread ──► sink.write_traces(batch)
                                                                                   sink.add_feedback(fb)

* batched: the traces waiting at one moment for one sink go in one `write_traces` call (one
  transaction, one commit), so a burst costs one fsync, not one each;
* fail open: a store that is down or slow (`StoreError`, or the sink cannot even be opened)
  leaves the batch at the head of the buffer; the writer retries with a backoff (0.1 s doubling
  to `max_backoff_s`) and writes it once the store is back. `errors` counts failed attempts, and
  one warning is logged per failure burst (the first failure, then one line when it recovers);
* bounded: when the buffer is full, `submit` waits at most `block_s` (default 0: not at all),
  then drops the record — `dropped` counts it and one warning per burst says so. Nothing already
  in the buffer is ever dropped to make room: what was accepted stays accepted;
* rejected: a record the store refuses for what it is (a duplicate id, feedback on a trace the
  store does not know) is logged and counted in `rejected`, never retried;
* flush on exit: `atexit` runs `flush(exit_timeout_s)`; whatever is still buffered then (the
  store is still down) is logged with its count as lost — the buffer is memory, not a spool.

A sink is what a store offers (`crystallise.traces.sdk.TraceWriter`): `write_trace`, `add_feedback`
and optionally `write_traces(batch) -> [stored | error]`. Sinks are opened lazily by the writer
thread (`Sink.open()`), so an application whose store is unreachable never opens it itself.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from crystallise.errors import CrystalliseError, StoreError

__all__ = ["BackgroundWriter", "Queued", "Sink", "WriteThrough", "WriterStats"]

log = logging.getLogger("crystallise.traces")

Kind = Literal["trace", "feedback"]


class Sink:
    """Where records go: `opener()` gives the store (e.g. `lambda: home.store`, which opens it on
    first use). Records of one Sink object are batched together."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener

    def open(self) -> Any:
        return self._opener()


@dataclass
class WriterStats:
    """Counts since the writer started (`crystallise.tracing_stats()`)."""

    accepted: int = 0   # records taken into the buffer
    written: int = 0    # records the store acknowledged
    dropped: int = 0    # records refused because the buffer was full (never written)
    rejected: int = 0   # records the store refused for what they are (never retried)
    errors: int = 0     # failed write attempts (store down or slow); their records are retried
    lost_at_exit: int = 0  # records still buffered when the process exited
    last_error: str | None = None
    buffered: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


_TRANSIENT = (StoreError, OSError, TimeoutError, ConnectionError)


class BackgroundWriter:
    """One writer thread draining one bounded buffer (see the module docstring)."""

    def __init__(self, *, capacity: int = 10_000, max_batch: int = 256, block_s: float = 0.0,
                 max_backoff_s: float = 5.0, exit_timeout_s: float = 5.0) -> None:
        if capacity < 1 or max_batch < 1:
            raise ValueError("capacity and max_batch must be at least 1")
        self.capacity = capacity
        self.max_batch = max_batch
        self.block_s = block_s
        self.max_backoff_s = max_backoff_s
        self.exit_timeout_s = exit_timeout_s
        self.stats = WriterStats()
        self._items: deque[tuple[Sink, Kind, Any]] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._failing = False   # inside a failure burst (one log line per burst)
        self._dropping = False  # inside a drop burst
        self._rejecting = False  # inside a burst of refused records
        self._wake = False      # flush(): retry now instead of sleeping out the backoff
        self._closed = False
        self._thread: threading.Thread | None = None
        atexit.register(self._at_exit)

    # -- the application's side: never raises, never waits longer than block_s ----------------
    def submit(self, sink: Sink, kind: Kind, record: Any) -> bool:
        """Buffer one record for `sink`; False when it was dropped (buffer full or writer closed)."""
        with self._cond:
            if self._held() >= self.capacity and self.block_s > 0 and not self._closed:
                self._cond.wait_for(lambda: self._held() < self.capacity, timeout=self.block_s)
            if self._closed or self._held() >= self.capacity:
                self.stats.dropped += 1
                if not self._dropping:
                    self._dropping = True
                    log.warning("crystallise: trace buffer full (%d records, store %s): dropping new %s records "
                                "until it drains; crystallise.tracing_stats() counts them",
                                self.capacity, "failing" if self._failing else "slow", kind)
                return False
            self._dropping = False
            self._items.append((sink, kind, record))
            self.stats.accepted += 1
            self._ensure_thread()
            self._cond.notify_all()
            return True

    def _held(self) -> int:
        """Records the writer holds: buffered, and the batch being written (a failed batch goes back
        into the buffer, so it counts against the capacity while it is out)."""
        return len(self._items) + self._in_flight

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until everything accepted so far is written (or refused); False on timeout.
        A writer backing off after a failure retries at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._wake = True
            self._cond.notify_all()
            while self._items or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(timeout=None if left is None else min(left, 0.05))
            return True

    @property
    def busy(self) -> bool:
        """Records are buffered or being written."""
        return bool(self._items or self._in_flight)

    def note_failure(self, error: BaseException) -> None:
        """A write the application thread tried itself failed (WriteThrough): count it, log once per burst."""
        with self._cond:
            self.stats.errors += 1
            self.stats.last_error = f"{type(error).__name__}: {error}"
            if not self._failing:
                self._failing = True
                log.warning("crystallise: trace store unavailable (%s); records go to the background buffer and "
                            "are retried (the application is not affected)", self.stats.last_error)

    def note_rejected(self, record: Any, error: BaseException) -> None:
        with self._cond:
            self.stats.rejected += 1
        self._reject(record, error)

    def snapshot(self) -> WriterStats:
        with self._cond:
            s = WriterStats(**{**self.stats.__dict__, "extra": dict(self.stats.extra)})
            s.buffered = self._held()
            return s

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, then refuse new records (they are dropped and counted) and stop the thread."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return done

    # -- the writer thread ----------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="crystallise-trace-writer", daemon=True)
            self._thread.start()

    def _take(self) -> list[tuple[Sink, Kind, Any]]:
        """The head of the buffer to write next: one feedback, or the consecutive traces of one sink."""
        head = self._items[0]
        if head[1] == "feedback":
            return [head]
        batch = []
        for item in self._items:
            if item[0] is not head[0] or item[1] != "trace" or len(batch) >= self.max_batch:
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                if backoff:
                    self._cond.wait_for(lambda: self._wake or self._closed, timeout=backoff)
                self._wake = False
                batch = self._take()
                self._in_flight = len(batch)
                for _ in batch:
                    self._items.popleft()
            try:
                written, rejected = self._write(batch)
            except _TRANSIENT as e:
                with self._cond:
                    self._items.extendleft(reversed(batch))  # back at the head, in order
                    self._in_flight = 0
                    self.stats.errors += 1
                    self.stats.last_error = f"{type(e).__name__}: {e}"
                    if not self._failing:
                        self._failing = True
                        log.warning("crystallise: trace store unavailable (%s); %d records buffered, retrying in "
                                    "the background (the application is not affected)",
                                    self.stats.last_error, len(self._items))
                    self._cond.notify_all()
                backoff = min(self.max_backoff_s, max(0.1, backoff * 2))
                continue
            except Exception as e:  # noqa: BLE001 - a bug or a bad sink must not kill the writer: refuse the batch
                for _, _, record in batch:
                    self._reject(record, e)
                written, rejected = 0, len(batch)
            with self._cond:
                self._in_flight = 0
                self.stats.written += written
                self.stats.rejected += rejected
                if written:
                    self._rejecting = False
                if self._failing:
                    self._failing = False
                    log.warning("crystallise: trace store back; buffered records are being written "
                                "(%d failed attempts so far)", self.stats.errors)
                self._cond.notify_all()
            backoff = 0.0

    def _write(self, batch: list[tuple[Sink, Kind, Any]]) -> tuple[int, int]:
        """(written, rejected) for a batch; a transient failure raises and nothing of it counts."""
        sink, kind = batch[0][0], batch[0][1]
        store = sink.open()
        if kind == "feedback":
            return self._one(lambda: store.add_feedback(batch[0][2]), batch[0][2])
        records = [r for _, _, r in batch]
        if len(records) > 1 and hasattr(store, "write_traces"):
            results = store.write_traces(records)
            bad = [(r, res) for r, res in zip(records, results) if isinstance(res, Exception)]
            for r, res in bad:
                self._reject(r, res)
            return len(records) - len(bad), len(bad)
        written = rejected = 0
        for r in records:
            w, j = self._one(lambda r=r: store.write_trace(r), r)
            written, rejected = written + w, rejected + j
        return written, rejected

    def _one(self, write: Callable[[], Any], record: Any) -> tuple[int, int]:
        try:
            write()
        except _TRANSIENT:
            raise
        except CrystalliseError as e:  # refused for what it is: retrying cannot help
            self._reject(record, e)
            return 0, 1
        return 1, 0

    def _reject(self, record: Any, error: BaseException) -> None:
        """Log the first refusal of a burst (until a record is written again); `rejected` counts them all."""
        if not self._rejecting:
            self._rejecting = True
            what = getattr(record, "id", "?")
            log.warning("crystallise: the store refused %s %s (%s: %s); further refusals are only counted "
                        "until a record is written", type(record).__name__.lower(), what, type(error).__name__, error)

    def _at_exit(self) -> None:
        if not self._items and not self._in_flight:
            return
        if not self.flush(self.exit_timeout_s):
            with self._cond:
                lost = len(self._items) + self._in_flight
                self.stats.lost_at_exit = lost
            log.warning("crystallise: %d trace records not written at exit (store unavailable for %.0f s: %s)",
                        lost, self.exit_timeout_s, self.stats.last_error)


class Queued:
    """A `TraceWriter` that hands records to the background writer: returns at once, never raises."""

    def __init__(self, writer: BackgroundWriter, sink: Sink) -> None:
        self.writer = writer
        self.sink = sink

    def write_trace(self, trace: Any) -> bool:
        return self.writer.submit(self.sink, "trace", trace)

    def add_feedback(self, feedback: Any) -> bool:
        return self.writer.submit(self.sink, "feedback", feedback)


class WriteThrough(Queued):
    """A `TraceWriter` that writes in the calling thread (stored on return), and fails open: a store
    that is down hands the record to the background writer to retry; a refused record is logged."""

    def _write(self, kind: Kind, record: Any) -> bool:
        if self.writer.busy:  # records wait in the buffer: queue behind them, so feedback follows its trace
            return self.writer.submit(self.sink, kind, record)
        try:
            store = self.sink.open()
            if kind == "trace":
                store.write_trace(record)
            else:
                store.add_feedback(record)
        except _TRANSIENT as e:
            self.writer.note_failure(e)
            return self.writer.submit(self.sink, kind, record)
        except CrystalliseError as e:
            self.writer.note_rejected(record, e)
            return False
        return True

    def write_trace(self, trace: Any) -> bool:
        return self._write("trace", trace)

    def add_feedback(self, feedback: Any) -> bool:
        return self._write("feedback", feedback)
