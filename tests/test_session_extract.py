"""Implicit extraction runs by itself when a session ends (engine/session_end.py), and reads OTel GenAI
`parts` messages (gen_ai.input.messages: [{"role", "parts": [{"type": "text", "content"}]}])."""

from __future__ import annotations

import time

import pytest

from crystallise.context.extract import RuleExtractor, conversation
from crystallise.engine.home import Home
from crystallise.engine.session_end import due, end_session, extract_ended_sessions
from crystallise.types import Span, Trace

PARTS = [{"role": "system", "parts": [{"type": "text", "content": "You are helpful."}]},
         {"role": "user", "parts": [{"type": "text", "content": "Hi. My name is Ada."},
                                    {"type": "image", "uri": "x.png"},
                                    {"type": "text", "content": "I prefer short answers."}]}]


def _trace(session: str | None, *, user: str = "u1", ended: float | None = None, **meta: object) -> Trace:
    t = ended or time.time()
    return Trace(name="chat", agent_id="a", user_id=user, session_id=session, input=None, output="Hello Ada",
                 started_at=t - 1, ended_at=t, metadata=dict(meta),
                 spans=[Span(name="chat", kind="llm", input=PARTS, output="Hello Ada", started_at=t - 1, ended_at=t)])


def test_otel_parts_messages_are_read() -> None:
    said = conversation(_trace("s1"))
    assert ("user", "Hi. My name is Ada.\nI prefer short answers.") in said
    texts = [c.text for c in RuleExtractor().extract(_trace("s1"))]
    assert texts == ["My name is Ada.", "I prefer short answers."]


def test_due_when_idle_explicit_or_sessionless(home: Home) -> None:
    home.store.write_trace(_trace("open"))
    assert due(home) == []  # a live session waits
    assert due(home, at=time.time() + 3600) == ["open"]  # idle for an hour: ended
    home.store.write_trace(_trace("closing", session_end=True))
    assert due(home) == ["closing"]
    home.store.write_trace(_trace(None))
    assert due(home) == ["-", "closing"]


def test_extraction_runs_when_a_session_ends(home: Home) -> None:
    home.store.write_trace(_trace("s1"))
    assert extract_ended_sessions(home) == {}  # nothing ended: nothing learned yet
    assert home.store.query_items(agent="a", user="u1", status=("quarantined", "active")) == []
    home.store.write_trace(_trace("s1", session_end=True))
    totals = extract_ended_sessions(home)
    assert totals["sessions"] == 1 and totals["traces"] == 2
    found = {it.text: it.status for it in home.store.query_items(agent="a", user="u1",
                                                                   status=("quarantined", "active"))}
    assert "My name is Ada." in found and "I prefer short answers." in found
    assert home.store.query_items(agent="a", user="u2", status=("quarantined", "active")) == []
    assert due(home) == []  # the watermark moved: nothing is due twice
    assert end_session(home, "s1")["traces"] == 0


fastapi = pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")
from fastapi.testclient import TestClient  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.server import create_app  # noqa: E402


def test_the_server_extracts_by_itself(sqlite_home: Home) -> None:
    body = {"name": "chat", "agent": "a", "user": "u9", "session": "s9", "input": "hello", "output": "hi",
            "metadata": {"session_end": True},
            "spans": [{"name": "chat", "kind": "llm", "input": PARTS, "output": "hi"}]}
    key, _ = create_key(sqlite_home.path, "acme")
    with TestClient(create_app(sqlite_home, extract_every_s=0.2)) as c:
        r = c.post("/v1/traces", json=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code in (200, 201, 202), r.text
        deadline = time.time() + 20
        while time.time() < deadline:
            items = sqlite_home.store.query_items(agent="a", org="acme", user="u9",
                                                  status=("quarantined", "active"))
            if items:
                break
            time.sleep(0.2)
    assert "My name is Ada." in {it.text for it in items}  # nobody ran `items extract`


def test_due_ends_a_session_on_a_true_end_mark_only() -> None:
    """A mention of `session_end` in a value, or the string "true", does not end a session; the flag does."""
    import tempfile
    from pathlib import Path

    from crystallise.engine import session_end
    from crystallise.engine.home import Home
    from crystallise.types import Trace

    home = Home.init(Path(tempfile.mkdtemp()) / "h")
    t = 1_000_000.0
    home.store.write_trace(Trace(name="x", session_id="fake", started_at=t, ended_at=t,
                                 metadata={"session_end": "true", "text": "session_end: True"}))
    home.store.write_trace(Trace(name="x", session_id="real", started_at=t, ended_at=t, metadata={"session.end": True}))
    home.store.write_trace(Trace(name="x", session_id="idle", started_at=t - 4000, ended_at=t - 3600))
    assert session_end.due(home, at=t + 1) == ["idle", "real"]
