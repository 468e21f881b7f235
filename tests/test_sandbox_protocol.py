"""The host trusts nothing from the worker: forged, malformed and mistimed replies.

A fake worker (`_CHILD` swapped for FAKE, run in the same bwrap sandbox) sends whatever the
test asks: at start, the lines in `source` (a JSON list); for each call `(mode, payload)`, the
payload raw (with ID replaced by the request's id), or a misbehaviour. Whatever it sends,
Sandbox(...) and call() raise only SandboxError subclasses, and a fresh worker answers next.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crystallise.errors import SandboxError
import crystallise.sandbox as sandbox_mod
from crystallise.sandbox import Sandbox, SandboxCrashed, SandboxTimeout
from crystallise.sandbox.reply import (
    MAX_DEPTH,
    ProtocolError,
    check_ready,
    check_reply,
    check_start,
    check_value,
)

FAKE = r'''
import json, os, time
buf = bytearray()
def readline():
    while b"\n" not in buf:
        chunk = os.read(0, 65536)
        if not chunk:
            os._exit(0)
        buf.extend(chunk)
    i = buf.index(b"\n")
    line = bytes(buf[:i]); del buf[:i + 1]
    return json.loads(line)
def out(data, fd=1):
    if isinstance(data, str):  # latin-1 sends the exact bytes a test asks for; utf-8 what latin-1 cannot hold
        data = data.encode("latin-1") if all(ord(c) < 256 for c in data) else data.encode("utf-8")
    while data:
        data = data[os.write(fd, data):]
cfg = readline()
for line in json.loads(cfg["source"]):
    out(line)
while True:
    req = readline()
    mode, payload = req["args"]
    rid = req["id"]
    ok = '{"ok": %s, "cpu": 0.0, "id": %d}\n' % (json.dumps(payload), rid)
    if mode == "raw":
        out(payload.replace("ID", str(rid)))
    elif mode == "echo":
        out(ok)
    elif mode == "huge":
        out(b"[" * payload)
        out(b"\n")
    elif mode == "late":  # the reply, then another line after the host has taken the first
        out(ok); time.sleep(0.2); out(ok)
    elif mode == "ahead":  # this reply and the next one's, in one write
        out(ok + ok.replace('"id": %d' % rid, '"id": %d' % (rid + 1)))
    elif mode == "stderr":
        out(ok, fd=2); time.sleep(60)
    elif mode == "close":
        os.close(1); time.sleep(60)
    elif mode == "hang":
        time.sleep(60)
    elif mode == "trickle":
        for b in ok.encode():
            out(bytes([b])); time.sleep(0.05)
    elif mode == "exit":
        os._exit(0)
'''
READY = ['{"phase": "loading"}\n', '{"ready": true}\n']


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sandbox_mod, "_CHILD", FAKE)
    yield


@pytest.fixture
def box(fake: None) -> Iterator[Sandbox]:
    with Sandbox(json.dumps(READY), timeout_s=1.0, max_output_bytes=4096) as b:
        yield b


def test_the_fake_worker_speaks_the_protocol(box: Sandbox) -> None:
    assert box.call("echo", {"a": [1, 2.5, "s", None, True]}) == {"a": [1, 2.5, "s", None, True]}
    assert box.call("raw", '{"ok": "\\u2028 \\u00e9", "cpu": 0, "id": ID}\n') == "\u2028 \u00e9"  # escaped: fine


BAD_CALL_REPLIES = {
    "not-json": "not json\n",
    "empty-line": "\n",
    "forged-cpu": '{"ok": "forged", "cpu": "x", "id": ID}\n',
    "cpu-nan": '{"ok": 1, "cpu": NaN, "id": ID}\n',
    "cpu-inf": '{"ok": 1, "cpu": Infinity, "id": ID}\n',
    "cpu-overflow": '{"ok": 1, "cpu": 1e999, "id": ID}\n',
    "cpu-negative": '{"ok": 1, "cpu": -1, "id": ID}\n',
    "cpu-bool": '{"ok": 1, "cpu": true, "id": ID}\n',
    "cpu-missing": '{"ok": 1, "id": ID}\n',
    "cpu-huge-int": '{"ok": 1, "cpu": 1' + "0" * 400 + ', "id": ID}\n',
    "ok-nan": '{"ok": NaN, "cpu": 0, "id": ID}\n',
    "ok-overflow": '{"ok": [1e999], "cpu": 0, "id": ID}\n',
    "ok-surrogate": '{"ok": "\\ud800", "cpu": 0, "id": ID}\n',
    "ok-surrogate-key": '{"ok": {"\\udfff": 1}, "cpu": 0, "id": ID}\n',
    "ok-too-deep": '{"ok": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + ', "cpu": 0, "id": ID}\n',
    "ok-depth-bomb": '{"ok": ' + "[" * 3000 + "]" * 3000 + ', "cpu": 0, "id": ID}\n',
    "ok-huge-int": '{"ok": 1' + "0" * 5000 + ', "cpu": 0, "id": ID}\n',
    "raw-line-separator": '{"ok": "\u2028", "cpu": 0, "id": ID}\n',  # not ASCII: the worker never sends it
    "binary": "\x00\xff\xfe{}\n",
    "list": "[1, 2]\n",
    "string": '"ok"\n',
    "null": "null\n",
    "number": "1\n",
    "extra-key": '{"ok": 1, "cpu": 0, "id": ID, "isolation": "none"}\n',
    "no-id": '{"ok": 1, "cpu": 0}\n',
    "id-string": '{"ok": 1, "cpu": 0, "id": "ID"}\n',
    "id-stale": '{"ok": 1, "cpu": 0, "id": 0}\n',
    "id-bool": '{"ok": 1, "cpu": 0, "id": true}\n',
    "raised-string": '{"raised": "boom", "cpu": 0, "id": ID}\n',
    "raised-type-int": '{"raised": {"type": 1, "message": "m", "line": null}, "cpu": 0, "id": ID}\n',
    "raised-type-empty": '{"raised": {"type": "", "message": "m", "line": null}, "cpu": 0, "id": ID}\n',
    "raised-type-long": '{"raised": {"type": "' + "E" * 201 + '", "message": "m", "line": null}, "cpu": 0, "id": ID}\n',
    "raised-message-long": '{"raised": {"type": "E", "message": "' + "m" * 2001 + '", "line": 1}'
    + ', "cpu": 0, "id": ID}\n',
    "raised-line-string": '{"raised": {"type": "E", "message": "m", "line": "3"}, "cpu": 0, "id": ID}\n',
    "raised-line-bool": '{"raised": {"type": "E", "message": "m", "line": true}, "cpu": 0, "id": ID}\n',
    "raised-line-zero": '{"raised": {"type": "E", "message": "m", "line": 0}, "cpu": 0, "id": ID}\n',
    "raised-missing-key": '{"raised": {"type": "E", "message": "m"}, "cpu": 0, "id": ID}\n',
    "raised-extra-key": '{"raised": {"type": "E", "message": "m", "line": 1, "tb": "x"}, "cpu": 0, "id": ID}\n',
    "error-unknown": '{"error": "nope", "cpu": 0, "id": ID}\n',
    "error-list": '{"error": ["memory"], "cpu": 0, "id": ID}\n',
    "output-size-string": '{"error": "output", "size": "big", "cpu": 0, "id": ID}\n',
    "output-size-small": '{"error": "output", "size": 5, "cpu": 0, "id": ID}\n',
    "bad-return-message-int": '{"error": "bad_return", "message": 5, "cpu": 0, "id": ID}\n',
    "ready-again": '{"ready": true}\n',
    "two-replies": '{"ok": 1, "cpu": 0, "id": ID}\n{"ok": 2, "cpu": 0, "id": ID}\n',
    "two-in-one-line": '{"ok": 1, "cpu": 0, "id": ID}{"ok": 2, "cpu": 0, "id": ID}\n',
}


@pytest.mark.parametrize("line", list(BAD_CALL_REPLIES.values()), ids=list(BAD_CALL_REPLIES))
def test_a_malformed_reply_kills_the_worker(box: Sandbox, line: str) -> None:
    restarts = box.restarts
    with pytest.raises(SandboxCrashed, match="broke the protocol"):
        box.call("raw", line)
    assert box.call("echo", "next") == "next" and box.restarts == restarts + 1


def test_legitimate_error_replies_still_mean_what_they_say(box: Sandbox) -> None:
    from crystallise.sandbox import CodeRaised

    with pytest.raises(CodeRaised, match="ValueError at line 3: no"):
        box.call("raw", '{"raised": {"type": "ValueError", "message": "no", "line": 3}, "cpu": 0, "id": ID}\n')
    with pytest.raises(SandboxError, match="5000 bytes of JSON, over the 4096-byte limit"):
        box.call("raw", '{"error": "output", "size": 5000, "cpu": 0, "id": ID}\n')
    with pytest.raises(SandboxCrashed, match="ran out of memory"):
        box.call("raw", '{"error": "memory", "cpu": 0, "id": ID}\n')
    assert box.call("echo", 1) == 1


def test_an_oversized_line_kills_the_worker(box: Sandbox) -> None:
    with pytest.raises(SandboxCrashed, match="over .* bytes"):
        box.call("huge", 4096 + 65536 + 10)
    assert box.call("echo", 2) == 2


def test_a_reply_nobody_asked_for_is_caught(box: Sandbox) -> None:
    assert box.call("late", "first") == "first"
    time.sleep(0.4)  # the second line is waiting in the pipe before the next request
    with pytest.raises(SandboxCrashed, match="before the request"):
        box.call("echo", "second")
    with pytest.raises(SandboxCrashed, match="more than one reply"):
        box.call("ahead", "x")
    assert box.call("echo", 3) == 3


# Closing its stdout is not EOF for the host while bwrap holds its own copy: it is silence, then a timeout.
@pytest.mark.parametrize("mode, error", [("hang", SandboxTimeout), ("stderr", SandboxTimeout),
                                         ("trickle", SandboxTimeout), ("close", (SandboxTimeout, SandboxCrashed)),
                                         ("exit", SandboxCrashed)])  # fmt: skip
def test_silence_hangs_and_deaths(box: Sandbox, mode: str, error: type[SandboxError]) -> None:
    start = time.monotonic()
    with pytest.raises(error):
        box.call(mode, "x")
    assert time.monotonic() - start < 3
    assert box.call("echo", 4) == 4


BAD_STARTS = {
    "ready-first": ['{"ready": true}\n'],
    "phase-unknown": ['{"phase": "loaded"}\n'],
    "ready-not-true": ['{"phase": "loading"}\n', '{"ready": "yes"}\n'],
    "ready-extra-key": ['{"phase": "loading"}\n', '{"ready": true, "isolation": "none"}\n'],
    "ready-then-more": ['{"phase": "loading"}\n', '{"ready": true}\n{"ok": 1}\n'],
    "rejected-message-int": ['{"error": "rejected", "message": 5}\n'],
    "load-error-unknown": ['{"phase": "loading"}\n', '{"error": "rejected"}\n'],
    "garbage": ["\x00\x01\n"],
    "list": ["[]\n"],
}


@pytest.mark.parametrize("lines", list(BAD_STARTS.values()), ids=list(BAD_STARTS))
def test_a_malformed_start_raises_sandbox_crashed(fake: None, lines: list[str]) -> None:
    with pytest.raises(SandboxCrashed, match="broke the protocol while loading"):
        Sandbox(json.dumps(lines), timeout_s=1.0)


def test_start_silence_and_death(fake: None) -> None:
    with pytest.raises(SandboxTimeout):
        Sandbox(json.dumps([]), timeout_s=0.5, start_timeout_s=0.5)  # reads the config, then waits forever
    with pytest.raises(SandboxCrashed, match="exited"):
        Sandbox("not a JSON list", timeout_s=0.5)  # the fake dies on it
    with pytest.raises(SandboxError, match="rejected: nope"):
        Sandbox(json.dumps(['{"error": "rejected", "message": "nope"}\n']))


@settings(max_examples=40, deadline=None)
@given(line=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))))
def test_any_bytes_from_the_worker_raise_only_sandbox_errors(line: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sandbox_mod, "_CHILD", FAKE)
        with Sandbox(json.dumps(READY), timeout_s=0.5) as box:
            try:
                box.call("raw", line.decode("latin-1") + "\n")
            except SandboxError:
                pass


# -- the checks on their own ---------------------------------------------------------------------------


def test_check_reply_accepts_the_worker_s_shapes() -> None:
    assert check_reply({"ok": {"a": [1, 2.5, None, True, "é"]}, "cpu": 0.25, "id": 7}, 100, 7)["ok"]
    assert check_reply({"raised": {"type": "E", "message": "", "line": None}, "cpu": 0, "id": 1}, 100, 1)
    assert check_reply({"error": "output", "size": 101, "cpu": 0, "id": 1}, 100, 1)
    assert check_reply({"error": "bad_return", "message": "m", "cpu": 0, "id": 1}, 100, 1)
    assert check_reply({"error": "memory", "cpu": 0, "id": 1}, 100, 1)
    assert check_start({"phase": "loading"}) and check_start({"error": "unavailable", "message": "m"})
    assert check_ready({"ready": True}) and check_ready({"error": "memory"})


WORDS = ["ok", "cpu", "id", "raised", "error", "memory", "output", "size", "message", "type", "line", "x"]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400) | st.floats() | st.text(max_size=5)
    | st.sampled_from(WORDS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(WORDS), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(reply=JSONISH)
def test_the_checks_raise_only_protocol_errors(reply: Any) -> None:
    for check in (lambda r: check_reply(r, 100, 1), check_start, check_ready, check_value):
        try:
            check(reply)
        except ProtocolError:
            pass


def test_check_value_is_iterative_and_bounded() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ProtocolError, match="deeper than"):
        check_value(deep)
    ok: list[Any] = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    check_value(ok)
    for bad in (math.nan, math.inf, {1: 2}, (1,), b"x", {"a": {1, 2}}, object()):
        with pytest.raises(ProtocolError):
            check_value(bad)
