"""Attacks on the ingest fast path (api/fastpath.py) and the batch writer behind it (store/group.py,
`SqlStore.write_traces` / `_insert_batch_pg`), sent as a hostile client would send them.

Every request is built as raw ASGI (headers exactly as sent: duplicates, casing, lying lengths) and
sent once down the fast path and once down the full stack (a non-empty `dependency_overrides` makes
the fast path stand aside); the two must answer alike, and nothing the full stack refuses may be
stored by the fast path."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.api.auth import revoke_key  # noqa: E402
from crystallise.engine import session_end  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.errors import CrystalliseError, StoreError  # noqa: E402
from crystallise.store import open_store  # noqa: E402
from crystallise.types import Feedback, Span, Trace  # noqa: E402
from tests.pg import PostgresServer, postgres_unavailable  # noqa: E402
from crystallise.server import create_app  # noqa: E402

LIMIT = 1 << 20
TRACE = {"name": "answer", "agent": "support", "input": "2+2?", "output": "4",
         "spans": [{"name": "chat", "kind": "llm", "output": "4"}], "feedback": [{"score": 1.0}]}


class Api:
    """An app with keys for two orgs and a user-bound key, driven by raw ASGI messages."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.keys = {org: create_key(home.path, org)[0] for org in ("acme", "globex")}
        self.user_key, self.user_record = create_key(home.path, "acme", user="alice")
        self.app = create_app(home)

    def send(self, fast: bool, *, body: bytes, headers: list[tuple[bytes, bytes]], method: str = "POST",
             path: str = "/v1/traces", root_path: str = "", query: bytes = b"",
             chunks: list[bytes] | None = None) -> tuple[int, list[tuple[bytes, bytes]], Any]:
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
                 "root_path": root_path, "scheme": "http", "server": ("testserver", 80),
                 "client": ("203.0.113.9", 5), "http_version": "1.1", "headers": headers, "app": None}
        del scope["app"]
        parts = chunks if chunks is not None else [body]
        messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
        pending = iter(messages)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            try:
                return next(pending)
            except StopIteration:
                await asyncio.sleep(3600)  # a client that sent everything waits for its answer
                raise

        async def out(message: dict[str, Any]) -> None:
            sent.append(message)

        self.app.dependency_overrides = {} if fast else {_unused: _unused}
        try:
            asyncio.run(self.app(scope, receive, out))
        finally:
            self.app.dependency_overrides = {}
        start = next(m for m in sent if m["type"] == "http.response.start")
        raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        raw = re.sub(rb"(tr|sp|fb)_[0-9a-f]{16}", rb"\1_ID", raw)  # generated ids differ between the sends
        heads = [(k.lower(), re.sub(rb"tr_[0-9a-f]{16}", b"tr_ID", v)) for k, v in start["headers"]
                 if k.lower() != b"content-length"]
        doc = json.loads(raw) if raw else None
        if isinstance(doc, dict) and isinstance(doc.get("seq"), int):
            doc["seq"] = "SEQ"
        return start["status"], heads, doc

    def both(self, **request: Any) -> tuple[Any, Any, int, int]:
        """(fast answer, full answer, traces stored by the fast send, by the full send)."""
        n0 = self.home.store.count_traces()
        fast = self.send(True, **request)
        n1 = self.home.store.count_traces()
        full = self.send(False, **request)
        n2 = self.home.store.count_traces()
        return fast, full, n1 - n0, n2 - n1


def _unused() -> None:
    return None


def _headers(body: bytes, key: str | None, ctype: bytes = b"application/json") -> list[tuple[bytes, bytes]]:
    h = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    return h + ([(b"authorization", b"Bearer " + key.encode())] if key else [])


@pytest.fixture
def api(sqlite_home: Home) -> Iterator[Api]:
    a = Api(sqlite_home)
    with TestClient(a.app):  # the lifespan: the app's state is up
        yield a


def _same(api: Api, **request: Any) -> tuple[Any, int]:
    fast, full, stored_fast, stored_full = api.both(**request)
    assert fast == full
    assert stored_fast == stored_full  # nothing stored that the full stack refuses (nor the reverse)
    if fast[0] >= 400:
        assert fast[2]["status"] == fast[0]  # a problem document, never a stray 500
    return fast, stored_fast


BODY = json.dumps(TRACE).encode()
AUTH = b"authorization"


@pytest.mark.parametrize("extra", [
    [(b"content-type", b"text/plain")],                  # FastAPI reads this one, StrictJson the last
    [(b"content-type", b"application/json")],
    [(b"content-length", b"2000000")],                   # BodyLimit reads this one: 413
    [(b"content-length", b"3")],
    [(AUTH, b"Bearer cr_wrong")],                        # get_principal reads the first
    [(AUTH, b"Bearer KEY:globex")],
], ids=["ctype-text", "ctype-twice", "length-huge", "length-short", "auth-wrong", "auth-globex"])
def test_a_header_sent_twice_is_answered_as_the_full_stack_answers_it(api: Api, extra) -> None:
    extra = [(n, v.replace(b"KEY:globex", api.keys["globex"].encode())) for n, v in extra]
    for headers in (extra + _headers(BODY, api.keys["acme"]), _headers(BODY, api.keys["acme"]) + extra):
        _same(api, body=BODY, headers=headers)
    assert {t.org_id for t in api.home.store.list_traces()} <= {"acme", "globex"}


def test_a_body_longer_than_its_length_said_is_counted_and_refused_not_stored(api: Api) -> None:
    big = json.dumps({**TRACE, "input": "x" * (LIMIT + 10)}).encode()
    lying = [(b"content-type", b"application/json"), (b"content-length", b"100"),
             (AUTH, b"Bearer " + api.keys["acme"].encode())]
    answer, stored = _same(api, body=big, headers=lying)
    assert answer[0] == 413 and stored == 0
    # streamed in pieces, the first within the limit: the fast path stops reading past the limit
    pieces = [big[:1000], big[1000:LIMIT], big[LIMIT:]]
    answer, stored = _same(api, body=b"", headers=lying, chunks=pieces)
    assert answer[0] == 413 and stored == 0
    # a small body that says it is shorter or longer than it is: the full stack's answer, whatever it is
    for length in (b"10", str(len(BODY) + 5).encode(), b"0"):
        _same(api, body=BODY, headers=[(b"content-type", b"application/json"), (b"content-length", length),
                                       (AUTH, b"Bearer " + api.keys["acme"].encode())])


def test_no_body_writes_into_another_org_or_as_another_user(api: Api) -> None:
    acme, user = api.keys["acme"], api.user_key
    tricks = [
        b'{"name": "x", "org": "acme", "org": "globex"}',        # duplicate key: the last wins, on both paths
        b'{"name": "x", "org_id": "globex"}',
        b'{"name": "x", "org": "acme", "org_id": "globex"}',     # two aliases
        b'{"name": "x", "org": "ACME"}',
        rb'{"name": "x", "org": "acme\u0000"}',
        b'{"name": "x", "org": "*"}',
        b'{"name": "x", "metadata": {"org_id": "globex", "user_id": "bob"}}',
        b'{"name": "x", "user": "alice", "user": "bob"}',
        b'{"name": "x", "user_id": "bob"}',
        b'{"name": "x", "user": "alice", "user_id": "bob"}',
        b'{"name": "x", "spans": [{"name": "s", "attributes": {"org_id": "globex"}}]}',
    ]
    for body in tricks:
        _same(api, body=body, headers=_headers(body, user))
    rows = api.home.store.list_traces()
    assert rows and {(t.org_id, t.user_id) for t in rows} == {("acme", "alice")}  # the user-bound key's own
    for body in tricks:
        _same(api, body=body, headers=_headers(body, acme))
    assert {t.org_id for t in api.home.store.list_traces()} == {"acme"}


def test_a_revoked_key_stops_writing_at_once_on_the_fast_path(api: Api) -> None:
    key, record = create_key(api.home.path, "initech")
    assert api.send(True, body=BODY, headers=_headers(BODY, key))[0] == 201
    revoke_key(api.home.path, record["id"])
    answer, stored = _same(api, body=BODY, headers=_headers(BODY, key))
    assert answer[0] == 401 and stored == 0
    assert api.send(True, body=BODY, headers=_headers(BODY, api.user_key))[0] == 201  # the others still work


def test_revoking_the_last_key_does_not_open_the_server_to_that_key(tmp_path, home_template) -> None:
    """With no key left the ring was empty, hence 'open': a loopback client (or everything behind a
    local reverse proxy) with the revoked key, or none, acted as admin and wrote into any org."""
    import shutil

    home = Home.open(shutil.copytree(home_template, tmp_path / "home"))
    try:
        key, record = create_key(home.path, "acme")
        app = create_app(home)
        body = json.dumps({**TRACE, "org": "globex"}).encode()
        with TestClient(app, client=("127.0.0.1", 5)) as client:
            r = client.post("/v1/traces", content=body, headers={"Authorization": f"Bearer {key}",
                                                                  "Content-Type": "application/json"})
            assert r.status_code == 403  # an acme key cannot write into globex
            revoke_key(home.path, record["id"])
            for headers in ({"Authorization": f"Bearer {key}"}, {}):
                for fast in (True, False):
                    app.dependency_overrides = {} if fast else {_unused: _unused}
                    r = client.post("/v1/traces", content=body, headers={**headers, "Content-Type": "application/json"})
                    app.dependency_overrides = {}
                    assert r.status_code == 401, (fast, r.status_code, r.text)
            assert client.get("/v1/health").json()["open"] is False
        assert home.store.count_traces() == 0
    finally:
        home.close()


@pytest.mark.parametrize(("method", "path", "root"), [
    ("POST", "/v1/traces/", ""), ("POST", "/v1//traces", ""), ("POST", "/V1/traces", ""),
    ("POST", "/v1/traces", "/v1"), ("POST", "/v1/traces", "/prefix"), ("HEAD", "/v1/traces", ""),
    ("PUT", "/v1/traces", ""), ("post", "/v1/traces", ""), ("POST", "/v1/traces%00", ""),
])
def test_other_methods_and_paths_are_the_full_stacks(api: Api, method: str, path: str, root: str) -> None:
    _same(api, body=BODY, headers=_headers(BODY, api.keys["acme"]), method=method, path=path, root_path=root)


# -- differential, with hypothesis ----------------------------------------------------------------

_HOSTILE_TEXT = st.sampled_from([r"\u0000", r"\ud800", r"\udfff\ud800", r"\u00e9", "%", "_", r"\\", r'\"',
                                 "\x00", "\u00e9", r"\u2028", "session_end", "a" * 70])
_NUMBER = st.sampled_from(["1e308", "1e309", "-1e999", "123456789012345678901234567890", "1" * 400, "0.1e-400",
                           "NaN", "-Infinity", "1E+400", "9" * 4301])


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    text = '"' + "".join(draw(st.lists(_HOSTILE_TEXT, max_size=4))) + '"'
    number = draw(_NUMBER) if draw(st.booleans()) else "2.5"
    depth = draw(st.sampled_from([0, 0, 0, 150, 198, 199, 200, 201, 205, 990]))
    nested = "[" * depth + "1" + "]" * depth
    fields = [f'"name": {text if draw(st.booleans()) else chr(34) + "n" + chr(34)}', f'"input": {nested}',
              f'"output": {number}' if draw(st.booleans()) else '"output": 1',
              f'"metadata": {{{text}: {text}, "k": {text}}}']
    if draw(st.booleans()):
        fields.append(draw(st.sampled_from(['"org": "acme"', '"org": "globex"', '"org": "acme", "org": "globex"',
                                            '"org": "globex", "org": "acme"', '"user": "bob"', '"user": "alice"',
                                            '"session": "s1", "session": "s2"', '"spans": []', '"feedback": [{}]'])))
    raw = ("{" + ", ".join(draw(st.permutations(fields))) + "}").encode()
    return draw(st.sampled_from([raw] * 6 + [raw + b" ", b"\xef\xbb\xbf" + raw, raw[:-1], raw.replace(b"{", b"[", 1)]))


_CTYPES = st.sampled_from([b"application/json"] * 8 + [b"Application/JSON", b"application/json;charset=latin-1",
                           b"application/json; charset=utf-8", b" application/json ", b"application/json\t",
                           b"application/jsonx", b"application/vnd.api+json", b"text/plain", b"",
                           b"application/json, text/plain", b"application/json;;"])


@st.composite
def _requests(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]], str]:
    body = draw(_bodies())
    who = draw(st.sampled_from(["acme", "acme", "globex", "user", "user", "none", "wrong", "basic"]))
    headers = [(b"content-type", draw(_CTYPES)), (b"content-length", str(len(body)).encode()),
               (AUTH, {"none": b"", "wrong": b"Bearer cr_nope", "basic": b"Basic x"}.get(who, b"KEY:" + who.encode()))]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # duplicates, odd casing, whitespace
        name = draw(st.sampled_from([b"content-type", b"content-length", AUTH, b"Content-Type", b"AUTHORIZATION",
                                     b"content-encoding", b"transfer-encoding"]))
        value = draw(st.sampled_from([b"application/json", b"text/plain", b"5", b"99999999", b"Bearer KEY:globex",
                                      b"identity", b"chunked", b" 12", b"-1"]))
        headers.insert(draw(st.integers(0, len(headers))), (name, value))
    headers = [(n, v) for n, v in headers if v]
    return body, headers, who


def _differential(api: Api, request: tuple[bytes, list[tuple[bytes, bytes]], str]) -> None:
    body, headers, _ = request
    keys = {**api.keys, "user": api.user_key}
    real = [(n, re.sub(rb"KEY:(\w+)", lambda m: b"Bearer " + keys[m.group(1).decode()].encode(), v))
            for n, v in headers]
    answer, _ = _same(api, body=body, headers=real)
    event(f"status {answer[0]}")  # --hypothesis-show-statistics: the mix of answers
    for t in api.home.store.list_traces(limit=1000):
        assert t.org_id in ("acme", "globex") and t.user_id in (None, "alice", "bob")


_RANDOM = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(_RANDOM, max_examples=200)
@given(request=_requests())
def test_random_requests_are_answered_alike_and_never_stored_where_refused(api: Api, request) -> None:
    _differential(api, request)


@pytest.fixture
def pg_api(pg_server, tmp_path) -> Iterator[Api]:
    home = Home.init(tmp_path / "pg-home", store_url=pg_server.create_database())
    try:
        a = Api(home)
        with TestClient(a.app):
            yield a
    finally:
        home.close()


@pytest.mark.postgres
@settings(_RANDOM, max_examples=60)
@given(request=_requests())
def test_random_requests_on_postgresql_are_answered_alike(pg_api: Api, request) -> None:
    """The same on PostgreSQL: the group commit's batches go over a connection of their own, as the
    table owner, outside any org scope; the rows must still land in the key's org and user."""
    _differential(pg_api, request)


# -- PostgreSQL batches (and SQLite's, the same contract) -----------------------------------------

async def _post_all(api: Api, requests: list[tuple[str, bytes]]) -> list[int]:
    """Send every (key, body) at once on one event loop (so they share group commits); their statuses."""

    async def post(key: str, body: bytes) -> int:
        sent: list[dict[str, Any]] = []
        done = False

        async def receive() -> dict[str, Any]:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            raise AssertionError

        async def out(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/traces", "raw_path": b"/v1/traces", "query_string": b"",
                 "root_path": "", "scheme": "http", "server": ("testserver", 80), "client": ("203.0.113.9", 5),
                 "http_version": "1.1", "headers": _headers(body, key)}
        await api.app(scope, receive, out)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    return list(await asyncio.gather(*(post(k, b) for k, b in requests)))


def _incompressible(n: int) -> str:
    return secrets.token_hex(n // 2)  # a btree index row holds at most 2704 bytes, after compression


def test_a_batch_answers_each_trace_alone_and_keeps_no_part_of_a_refused_one(store) -> None:
    first = store.write_trace(Trace(name="first", org_id="acme"))
    again = Trace(name="again", org_id="globex", spans=[Span(name="s")])
    again.id = first.id
    twin = Trace(name="twin", org_id="acme")
    good = Trace(name="good-acme", org_id="acme", spans=[Span(name="s")], feedback=[Feedback(trace_id="", score=1.0)])
    batch = [good,
             again, Trace(name="nul\x00name", org_id="acme", spans=[Span(name="s")]),
             Trace(name="nul-in-json", org_id="globex", input={"k": "a\x00b", "\x00": [1e308]}), twin,
             Trace(name="good-globex", org_id="globex")]
    twin_again = Trace(name="twin-again", org_id="globex")
    twin_again.id = twin.id
    batch.append(twin_again)
    out = store.write_traces(batch)
    assert [type(r).__name__ for r in out] == ["Trace", "AlreadyRecorded", "ValidationError", "Trace", "Trace",
                                               "Trace", "AlreadyRecorded"]  # AlreadyRecorded: a ValidationError
    stored = {t.name: t for t in store.list_traces(with_children=True)}
    assert set(stored) == {"first", "good-acme", "nul-in-json", "twin", "good-globex"}
    assert stored["first"].org_id == "acme" and stored["first"].spans == []  # the refused twin left nothing
    assert stored["twin"].org_id == "acme" and stored["nul-in-json"].input == {"k": "a\x00b", "\x00": [1e308]}
    assert all(r.seq == stored[r.name].seq for r in out if isinstance(r, Trace))  # acknowledged is stored


def test_a_value_the_database_refuses_fails_its_trace_alone_not_its_batch(store) -> None:
    """An index row over PostgreSQL's limit is neither a DataError nor an IntegrityError: it failed the
    whole batch (every org's traces sharing the commit) as a StoreError. Now the batch is retried
    trace by trace."""
    huge = Trace(name="huge", org_id="acme", session_id=_incompressible(8000))
    innocent = [Trace(name=f"innocent-{i}", org_id="globex") for i in range(3)]
    out = store.write_traces([innocent[0], huge, *innocent[1:]])
    assert all(isinstance(r, Trace) for r in (out[0], *out[2:]))
    names = {t.name for t in store.list_traces()}
    assert {"innocent-0", "innocent-1", "innocent-2"} <= names
    if isinstance(out[1], Exception):  # PostgreSQL: the index refuses it; SQLite stores it
        assert isinstance(out[1], CrystalliseError) and "huge" not in names
    # and the batch connection is still good for the next batch
    assert isinstance(store.write_traces([Trace(name="after", org_id="acme")])[0], Trace)


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own (the test restarts it; the session's server is shared)."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


def _restart(server: PostgresServer) -> None:
    server._run("pg_ctl", "-D", server.data, "-l", os.path.join(server.directory, "server.log"),  # noqa: SLF001
                "-m", "fast", "-w", "-t", "30", "restart")


def test_a_postgresql_restart_fails_one_batch_then_the_next_connects_again(own_server: PostgresServer) -> None:
    store = open_store(own_server.create_database())
    try:
        acked = [r for r in store.write_traces([Trace(name=f"before-{i}", org_id="acme") for i in range(3)])]
        assert all(isinstance(r, Trace) for r in acked)
        _restart(own_server)
        with pytest.raises(StoreError):  # the batch connection died with the server: once
            store.write_traces([Trace(name="lost-0", org_id="acme"), Trace(name="lost-1", org_id="globex")])
        after = store.write_traces([Trace(name=f"after-{i}", org_id="globex") for i in range(2)])
        assert all(isinstance(r, Trace) for r in after)
        acked += after
        stored = {t.id: t for t in store.list_traces()}
        assert {t.id for t in acked} <= set(stored)  # nothing acknowledged is lost
        assert not any(t.name.startswith("lost") for t in stored.values())  # nor half of a failed batch
    finally:
        store.close()


def test_a_postgresql_restart_is_one_503_through_the_api_then_ingest_recovers(tmp_path,
                                                                               own_server: PostgresServer) -> None:
    home = Home.init(tmp_path / "home", store_url=own_server.create_database())
    try:
        api = Api(home)
        with TestClient(api.app):
            acme = api.keys["acme"]
            acked = []
            for i in range(3):
                body = json.dumps({**TRACE, "name": f"before-{i}"}).encode()
                status, heads, doc = api.send(True, body=body, headers=_headers(body, acme))
                assert status == 201
                acked.append(f"before-{i}")
            _restart(own_server)
            statuses = []
            for i in range(3):
                body = json.dumps({**TRACE, "name": f"after-{i}", "id": f"after-{i}"}).encode()
                status, _, doc = api.send(True, body=body, headers=_headers(body, acme))
                statuses.append(status)
                if status == 201:
                    acked.append(f"after-{i}")
                else:
                    assert status == 503 and doc["status"] == 503 and "postgres@" not in json.dumps(doc)
            assert statuses == [503, 201, 201]  # once, then the next batch connects again
            names = {t.name for t in home.store.list_traces()}
            assert set(acked) <= names and "after-0" not in names  # nothing acknowledged lost, nothing half
    finally:
        home.close()


def test_concurrent_posts_of_two_orgs_share_commits_and_each_lands_in_its_own_org(home: Home) -> None:
    """The batch is written outside any org scope (as the table owner on PostgreSQL): the org of each
    row must come from its request's key, never from the body or from a neighbour in the batch."""
    api = Api(home)
    keys = {"acme": api.keys["acme"], "globex": api.keys["globex"], "alice": api.user_key}
    bodies = []
    for i in range(60):
        sender = ("acme", "globex", "alice")[i % 3]
        lie = ['"org_id": "globex"', '"org": "acme"', '"user": "bob"', '"metadata": {"org_id": "globex"}',
               '"session": "s1"'][i % 5]
        bodies.append((sender, f'{{"name": "from-{sender}-{i}", {lie}}}'.encode()))

    with TestClient(api.app):
        statuses = asyncio.run(_post_all(api, [(keys[s], b) for s, b in bodies]))
    writer = api.app.state.trace_writer
    assert writer.batches < writer.written  # some traces did share a commit
    by_name = {t.name: t for t in home.store.list_traces(limit=1000)}
    for (sender, body), status in zip(bodies, statuses):
        name = json.loads(body)["name"]
        if status != 201:
            assert status == 403 and name not in by_name  # a lie about the org or user: refused
            continue
        t = by_name[name]
        assert t.org_id == ("globex" if sender == "globex" else "acme"), (name, t.org_id)
        if sender == "alice":
            assert t.user_id == "alice"


# -- sessions_after: hostile metadata never ends a session ------------------------------------------

def test_hostile_metadata_or_another_orgs_trace_never_ends_a_session(home: Home) -> None:
    t0 = 1_800_000_000.0

    def write(session: str | None, org: str, metadata: dict[str, Any]) -> None:
        home.store.write_trace(Trace(name="x", org_id=org, session_id=session, started_at=t0, ended_at=t0 + 1,
                                     metadata=metadata))

    hostile = [{"session%end": True}, {"session_end_x": True}, {"x": {"session_end": True}},
               {"session_end": "true"}, {"session_end": 1}, {"session_end": [True]}, {"note": '"session_end": true'},
               {"session.end": False}, {"SESSION_END": True}, {"session\\u005fend": True}, {"session_\x00end": True},
               {"session_end\x00": True}, {"%": "%session%end%", "_": "_"}, {"session_end": None}]
    for i, meta in enumerate(hostile):
        write("victim", "acme", meta)
        write(["%", "_", "s%", "victim%", "VICTIM"][i % 5], "acme", meta)
    write("victim", "globex", {"session_end": True})  # globex's own "victim" did end: acme's did not
    ended = session_end.due(home, idle_s=3600, at=t0 + 2)
    assert ended == ["victim@globex"]
    write("victim", "acme", {"session.end": True})
    assert session_end.due(home, idle_s=3600, at=t0 + 2) == ["victim@acme", "victim@globex"]


def test_huge_metadata_is_not_held_by_the_session_check(home: Home) -> None:
    pad = secrets.token_hex(250_000)  # 500 kB of metadata a trace, each mentioning a session end
    for i in range(12):
        home.store.write_trace(Trace(name="x", org_id="acme", session_id=f"s{i % 3}", started_at=1.0, ended_at=2.0,
                                     metadata={"session_end_pad": pad, "session_end": i == 11, "k": "session end"}))
    rows = home.store.sessions_after(after_seq=0, limit=100, marks=("session_end", "session.end"))
    assert len(json.dumps([r[3] for r in rows])) < 1000  # the end marks, not the metadata
    assert session_end.due(home, idle_s=1e12, at=3.0) == ["s2@acme"]


def test_the_same_id_posted_at_once_is_recorded_once_and_the_rest_are_409(home: Home) -> None:
    api = Api(home)
    body = json.dumps({**TRACE, "id": "retry-1"}).encode()
    other = json.dumps({**TRACE, "id": "retry-1", "name": "globex's own"}).encode()
    with TestClient(api.app):
        statuses = asyncio.run(_post_all(api, [(api.keys["acme"], body)] * 5 + [(api.keys["globex"], other)]))
    assert sorted(statuses[:5]) == [201, 409, 409, 409, 409] and statuses[5] == 201  # ids are per org
    assert sorted(t.org_id for t in home.store.list_traces()) == ["acme", "globex"]


@pytest.mark.parametrize("body", [
    rb'{"name": "a\u0000b"}', rb'{"name": "x", "error": "\u0000"}', rb'{"name": "x", "metadata": {"\u0000": "\u0000"}}',
    rb'{"name": "x", "spans": [{"name": "s\u0000"}]}', rb'{"name": "x", "input": 1e308, "output": -1e-320}',
    rb'{"name": "x", "session": "' + b"s" * 200 + rb'"}', rb'{"name": "x", "started_at": 1e300, "ended_at": 0}',
    rb'{"name": "x", "feedback": [{"score": 1, "correction": "\u0000"}]}',
], ids=["nul-name", "nul-error", "nul-json", "nul-span", "extreme-floats", "long-session", "odd-times", "nul-fb"])
def test_values_a_database_refuses_get_the_same_answer_on_both_paths(home: Home, body: bytes) -> None:
    api = Api(home)
    with TestClient(api.app):
        fast, full, stored_fast, stored_full = api.both(body=body, headers=_headers(body, api.keys["acme"]))
    assert fast == full and stored_fast == stored_full
    assert fast[0] in (201, 400, 422), fast  # refused as bad input, never a 500 or a 503
