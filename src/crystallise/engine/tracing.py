"""Where the SDK's traces go: one background writer per process, one sink per home.

    crystallise.trace(...)            -> a Recording whose trace goes to `writer_for(home)`
    crystallise.flush(timeout=5.0)    -> True once every trace accepted so far is stored
    crystallise.tracing_stats()       -> WriterStats(accepted, written, dropped, rejected, errors, ...)

Two modes (`CRYSTALLISE_TRACE_WRITES`, else the home's config "trace_writes", else `background`):

    background   the trace is handed to the writer thread (traces/background.py): the application
                 pays for building the record only; a store that is down or slow is retried in
                 the background, a full buffer drops new records with a count and a log line
    sync         the trace is written before the block exits (read-your-writes, durable on
                 return); a store that is down hands it to the background writer instead of
                 raising (fail open either way)

`async with crystallise.trace(...)` always uses the background writer: an event loop never waits
on a store. Both modes deliver feedback after the trace it is about (one FIFO buffer).
"""

from __future__ import annotations

import threading
from pathlib import Path

from crystallise.config import ENV_TRACE_WRITES, default_home_path, env
from crystallise.engine.home import Home
from crystallise.errors import ConfigError
from crystallise.traces.background import BackgroundWriter, Queued, Sink, WriterStats, WriteThrough

__all__ = ["MODES", "configure", "default_home", "flush", "mode_of", "stats", "writer", "writer_for"]

MODES = ("background", "sync")

_lock = threading.Lock()
_writer: BackgroundWriter | None = None
_homes: dict[Path, Home] = {}


def writer() -> BackgroundWriter:
    """The process's background writer (started on first use)."""
    global _writer
    with _lock:
        if _writer is None:
            _writer = BackgroundWriter()
        return _writer


def configure(*, capacity: int = 10_000, max_batch: int = 256, block_s: float = 0.0,
              exit_timeout_s: float = 5.0) -> BackgroundWriter:
    """Replace the process's writer (the old one is flushed and closed first): buffer size,
    batch size, how long a full buffer may hold the application (`block_s`), exit flush time."""
    global _writer
    old = _writer
    if old is not None:
        old.close()
    with _lock:
        _writer = BackgroundWriter(capacity=capacity, max_batch=max_batch, block_s=block_s,
                                   exit_timeout_s=exit_timeout_s)
        return _writer


def default_home() -> Home:
    """`Home.from_env()`, opened once per home path (a trace then costs no config read or store open)."""
    path = default_home_path().resolve()
    with _lock:
        home = _homes.get(path)
    if home is None:
        home = Home.from_env()
        with _lock:
            home = _homes.setdefault(path, home)
    return home


def mode_of(home: Home) -> str:
    mode = env(ENV_TRACE_WRITES) or str(home.config.get("trace_writes") or "background")
    if mode not in MODES:
        raise ConfigError(f"trace writes must be one of {', '.join(MODES)}, got {mode!r}: "
                          f"set {ENV_TRACE_WRITES} or \"trace_writes\" in config.json")
    return mode


def _sink(home: Home) -> Sink:
    sink = home.__dict__.get("_trace_sink")
    if sink is None:
        sink = home.__dict__.setdefault("_trace_sink", Sink(lambda: home.store))
    return sink


def writer_for(home: Home, *, background: bool | None = None) -> Queued:
    """The TraceWriter the SDK hands a home's traces to (`background=None`: the configured mode)."""
    use_background = mode_of(home) == "background" if background is None else background
    return (Queued if use_background else WriteThrough)(writer(), _sink(home))


def flush(timeout: float | None = 5.0) -> bool:
    """Wait until every trace and feedback accepted so far is stored; False if `timeout` ran out
    (the store is still down: the records stay buffered and are retried)."""
    return writer().flush(timeout)


def stats() -> WriterStats:
    """The writer's counters: accepted, written, dropped (buffer full), rejected, errors, buffered."""
    return writer().snapshot()
