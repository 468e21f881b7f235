"""Batched trace ingest: `SqlStore.write_traces` (one transaction, each trace all or nothing) and
`GroupCommit` (concurrent requests share a commit), on SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest

from crystallise.errors import StoreError, ValidationError
from crystallise.store.group import GroupCommit
from crystallise.types import Feedback, Span, Trace


def trace(name: str, **kw: object) -> Trace:
    t = Trace(name=name, agent_id="support", input=name, output="ok", spans=[Span(name="chat", kind="llm")], **kw)
    t.feedback = [Feedback(trace_id=t.id, score=1.0)]
    return t


def test_a_batch_is_written_in_order_and_bad_traces_fail_alone(store):
    old = store.write_trace(trace("old"))
    twin = trace("twin")
    clash = trace("clash")
    clash.spans.append(Span(name="again", kind="tool", id=clash.spans[0].id))
    batch = [trace("a"), Trace(name="again", id=old.id), twin, Trace(name="twin2", id=twin.id), clash, trace("b")]
    results = store.write_traces(batch)
    assert [type(r).__name__ for r in results] == ["Trace", "AlreadyRecorded", "Trace", "AlreadyRecorded",
                                                   "ValidationError", "Trace"]  # AlreadyRecorded: a ValidationError
    assert "already recorded" in str(results[1]) and "already recorded" in str(results[3])
    assert "two span records" in str(results[4])
    seqs = [r.seq for r in results if isinstance(r, Trace)]
    assert seqs == sorted(seqs) and seqs[0] > old.seq
    stored = store.get_trace(results[0].id)
    assert stored.spans[0].trace_id == stored.id and stored.feedback[0].score == 1.0
    assert [t.name for t in store.list_traces()] == ["old", "a", "twin", "b"]


def test_a_child_id_collision_falls_back_to_one_trace_at_a_time(store):
    first = store.write_trace(trace("first"))
    stolen = trace("stolen")
    stolen.spans[0].id = first.spans[0].id  # only the database can see this one
    results = store.write_traces([trace("x"), stolen, trace("y")])
    assert isinstance(results[0], Trace) and isinstance(results[2], Trace)
    assert isinstance(results[1], ValidationError) and "already recorded in another trace" in str(results[1])
    assert [t.name for t in store.list_traces()] == ["first", "x", "y"]


def test_concurrent_writes_share_commits_and_all_are_durable(store):
    writer = GroupCommit(store)

    async def many() -> list[Trace]:
        return await asyncio.gather(*(writer.write_trace(trace(f"t{i}")) for i in range(60)))

    stored = asyncio.run(many())
    assert len({t.seq for t in stored}) == 60 and store.count_traces() == 60
    assert writer.written == 60 and writer.batches < 60  # grouped: fewer commits than traces


def test_a_duplicate_fails_only_its_own_request(store):
    writer = GroupCommit(store)
    first = store.write_trace(trace("first"))

    async def both() -> list[object]:
        return await asyncio.gather(writer.write_trace(Trace(name="dup", id=first.id)), writer.write_trace(trace("ok")),
                                    return_exceptions=True)

    dup, ok = asyncio.run(both())
    assert isinstance(dup, ValidationError) and isinstance(ok, Trace) and store.count_traces() == 2


def test_a_store_failure_reaches_every_caller_of_the_batch(store):
    class Broken:
        def write_traces(self, batch: list[Trace]) -> list[Trace]:
            raise StoreError("the disk is gone")

    writer = GroupCommit(Broken())

    async def two() -> list[object]:
        return await asyncio.gather(writer.write_trace(trace("a")), writer.write_trace(trace("b")),
                                    return_exceptions=True)

    assert all(isinstance(r, StoreError) for r in asyncio.run(two()))


@pytest.mark.parametrize("n", [1, 3])
def test_a_store_without_batches_is_written_one_by_one(store, n):
    class Plain:
        def __init__(self) -> None:
            self.calls = 0

        def write_trace(self, t: Trace) -> Trace:
            self.calls += 1
            return store.write_trace(t)

    plain = Plain()
    writer = GroupCommit(plain)

    async def go() -> list[Trace]:
        return await asyncio.gather(*(writer.write_trace(trace(f"p{i}")) for i in range(n)))

    assert len(asyncio.run(go())) == n and plain.calls == n


def test_while_traffic_flows_a_lone_trace_waits_briefly_for_company_and_an_idle_one_does_not():
    class Recording:
        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        def write_traces(self, batch: list[Trace]) -> list[Trace]:
            self.batches.append([t.name for t in batch])
            return list(batch)

    sink = Recording()
    writer = GroupCommit(sink, linger_s=0.05, linger_min=8, busy_s=0.5)  # type: ignore[arg-type]

    async def scenario() -> float:
        await writer.write_trace(trace("first"))  # idle: written at once, alone
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        second = asyncio.ensure_future(writer.write_trace(trace("second")))  # right after a commit: lingers
        await asyncio.sleep(0.01)
        third = asyncio.ensure_future(writer.write_trace(trace("third")))  # joins the lingering batch
        await asyncio.gather(second, third)
        return loop.time() - t0

    waited = asyncio.run(scenario())
    assert sink.batches == [["first"], ["second", "third"]] and waited >= 0.04
    time.sleep(0.55)  # idle for longer than busy_s: the next trace is written at once

    async def idle() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await writer.write_trace(trace("later"))
        return loop.time() - t0

    assert asyncio.run(idle()) < 0.04 and sink.batches[-1] == ["later"]
