"""OTLP/HTTP trace ingest: OpenTelemetry GenAI spans become crystallise traces.

Mounted by `create_app` at `/otlp`, so exporters use the standard path under it:

    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:8400/otlp/v1/traces
    OTEL_EXPORTER_OTLP_TRACES_HEADERS="Authorization=Bearer%20cr_..."

`create_otlp_app(home, keys)` is a complete app by itself too (serve it on :4318 and the
path is exactly `/v1/traces`). Per request:

    1. decode protobuf or JSON (otlp_decode) -> raw spans; spans with unusable ids are rejected
    2. group by trace id; a group holding its root span is joined with the spans that waited
       for it (otlp_spool) and written as one Trace (otlp_map) in one store transaction;
       a group without its root waits durably in the spool
    3. answer ExportTraceServiceResponse, with partial_success counting rejected spans

A retried export of spans already written is accepted again (nothing is duplicated); spans that
arrive after their trace was written are rejected with a message (traces are immutable).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from crystallise.api import logsafe
from crystallise.api.auth import KeyRing, Principal
from crystallise.engine import access
from crystallise.api.deps import get_principal
from crystallise.api.hostile import refuse
from crystallise.api.otlp_decode import BadPayload, UnsupportedMedia, decode_request, encode_response, raw_spans
from crystallise.api.otlp_map import build_trace, crystallise_span_id, crystallise_trace_id, find_root, scope_of
from crystallise.api.otlp_spool import Spool
from crystallise.api.problems import Problem, install_handlers
from crystallise.errors import NotFoundError, StoreError, UserError
from crystallise.engine.home import Home
from crystallise.engine.periodic import every
from crystallise.types import Trace

__all__ = ["Ingestor", "create_otlp_app"]

log = logging.getLogger("crystallise.api.otlp")


class Ingestor:
    """Turns raw spans into written traces, holding incomplete traces in the spool."""

    def __init__(self, home: Home, flush_after_s: float = 300.0) -> None:
        self.home = home
        self.spool = Spool(Path(home.path) / "otlp-pending", flush_after_s)
        self._lock = threading.Lock()

    def ingest(self, spans: list[dict[str, Any]], org: str | None) -> tuple[int, list[str]]:
        """Write or spool `spans` for a caller whose writes land in `org` (None: as the spans say).

        Returns (rejected span count, messages). StoreError propagates (the exporter retries).
        """
        groups: dict[str, list[dict[str, Any]]] = {}
        for s in spans:
            groups.setdefault(s["trace_id"], []).append(s)
        rejected, messages = 0, []
        with self._lock:
            for trace_hex, group in groups.items():
                problem = self._one(trace_hex, group, org)
                if problem:
                    rejected += len(group)
                    messages.append(problem)
        with access.every_org():  # stale traces of any org are written in their own org, not the caller's
            self.flush_stale()
        return rejected, messages

    def _one(self, trace_hex: str, group: list[dict[str, Any]], org: str | None) -> str | None:
        root = find_root(group)
        asked = scope_of(group, root)["org"]
        if org is not None and asked is not None and asked != org:
            return (f"trace {trace_hex}: spans name org {asked!r} but this API key writes to org {org!r}; "
                    "drop crystallise.org or use that org's key")
        org = org if org is not None else asked
        key = _spool_key(trace_hex, org)  # ids are per org: another org's same trace id is another trace
        with self.spool.locked(key):  # another server process of this home may hold spans of this trace
            return self._one_locked(trace_hex, key, group, org)

    def _one_locked(self, trace_hex: str, key: str, group: list[dict[str, Any]], org: str | None) -> str | None:
        existing = self._existing(trace_hex, org)  # under the lock: another process may have just written it
        if existing is not None:
            return self._late(existing, group, org)
        waiting, waiting_org = self.spool.org(key)
        if waiting and waiting_org != org:
            return f"trace {trace_hex} is being recorded for another org: its spans must come from one org's key"
        if not any(s.get("parent_id") is None for s in group):
            self.spool.add(key, group, org)
            return None
        everything = self.spool.read(key) + group
        try:
            trace = _build(everything, org)
            self.home.store.write_trace(trace)
        except UserError as e:  # cannot ever be written: keep the evidence, tell the exporter
            kept = self.spool.fail(key)
            log.warning("OTLP trace %s rejected (%s); waiting spans kept in %s", trace_hex, logsafe.redact(e), kept)
            return f"trace {trace_hex}: {e}"
        self.spool.drop(key)
        return None

    def _existing(self, trace_hex: str, org: str | None) -> Trace | None:
        try:
            return self.home.store.get_trace(  # type: ignore[no-any-return]
                access.stored_id(org, crystallise_trace_id(trace_hex)))
        except NotFoundError:
            return None

    @staticmethod
    def _late(existing: Trace, group: list[dict[str, Any]], org: str | None) -> str | None:
        """A retry of what was written is fine; anything new for a written trace is rejected."""
        known = {s.id for s in existing.spans}
        if existing.org_id == org and all(access.stored_id(org, crystallise_span_id(s["span_id"])) in known
                                          for s in group):
            return None
        return (f"trace {existing.id} was already recorded when its root span arrived; spans that end after "
                "their root span are not kept (end child spans before the root)")

    def flush_stale(self, now: float | None = None) -> int:
        """Write every trace whose root never came and whose spans have waited long enough."""
        written = 0
        for trace_hex in self.spool.stale(now):
            with self._lock, self.spool.locked(trace_hex):
                waiting, org = self.spool.org(trace_hex)
                spans = self.spool.read(trace_hex)
                if not waiting or not spans:
                    self.spool.drop(trace_hex)
                    continue
                try:
                    if self._existing(spans[0]["trace_id"], org) is not None:
                        raise UserError("the trace was already recorded")
                    self.home.store.write_trace(_build(spans, org))
                except StoreError as e:
                    log.warning("OTLP trace %s not flushed yet: %s", trace_hex, logsafe.redact(e))
                    continue
                except UserError as e:
                    log.warning("OTLP trace %s cannot be recorded (%s); kept in %s", trace_hex, logsafe.redact(e),
                                self.spool.fail(trace_hex))
                    continue
                self.spool.drop(trace_hex)
                written += 1
        return written


def _spool_key(trace_hex: str, org: str | None) -> str:
    """The spool's name for an OTLP trace id sent to `org` (32 hex digits, as the spool wants)."""
    if org is None:
        return trace_hex
    return hashlib.sha256(f"{org}\0{trace_hex}".encode()).hexdigest()[:32]


def _build(spans: list[dict[str, Any]], org: str | None) -> Trace:
    """The trace of `spans`, its ids (all derived from the exporter's) stored per org."""
    return access.qualify_trace(build_trace(_unique(spans), org), org)


def _unique(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One copy of each span id (a retried export may have spooled a span twice)."""
    seen: dict[str, dict[str, Any]] = {}
    for s in spans:
        seen.setdefault(s["span_id"], s)
    return list(seen.values())


def periodic_flush(ingestor: Ingestor) -> AbstractAsyncContextManager[None]:
    """Background task: flush traces whose root never came, while the server runs (the spool keeps
    the spans if a flush fails)."""
    interval = max(1.0, min(30.0, ingestor.spool.flush_after_s / 4))
    return every(interval, ingestor.flush_stale, what="flushing pending OTLP traces")


def create_otlp_app(home: Home, keys: KeyRing, *, flush_after_s: float = 300.0,
                    max_body_bytes: int = 16 << 20) -> FastAPI:
    """The OTLP/HTTP receiver over `home` (auth as in the main API)."""
    ingestor = Ingestor(home, flush_after_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with periodic_flush(ingestor):
            yield

    app = FastAPI(title="crystallise OTLP/HTTP receiver", version="1", lifespan=lifespan,
                  description="POST OpenTelemetry traces (protobuf or JSON) to /v1/traces.")
    app.state.home, app.state.keys, app.state.ingestor = home, keys, ingestor
    install_handlers(app)

    @app.post("/v1/traces", summary="OTLP/HTTP trace export (protobuf or JSON)",
              responses={200: {"content": {"application/x-protobuf": {}, "application/json": {}},
                               "description": "ExportTraceServiceResponse"}})
    async def export(request: Request) -> Response:
        who: Principal = await get_principal(request)
        if who.user is not None:
            raise Problem(403, f"this API key is bound to user {who.user!r}: OTLP exporters send every user's spans, "
                               "so they need an org key (`crystallise serve --create-key ORG`)")
        body = await request.body()
        try:
            message, kind = decode_request(body, request.headers.get("content-type"),
                                           request.headers.get("content-encoding"), max_body_bytes)
        except UnsupportedMedia as e:
            raise Problem(415, str(e)) from None
        except BadPayload as e:
            raise Problem(400, f"{e}: send an OTLP ExportTraceServiceRequest") from None
        spans, problems = raw_spans(message)
        refuse(spans, "$.spans")  # NaN/Infinity doubles or lone surrogates: 422, nothing stored (hostile.py)
        org = None if who.admin else who.org
        rejected, messages = await run_in_threadpool(ingestor.ingest, spans, org)
        rejected += len(problems)
        text = "; ".join((problems + messages)[:5])
        if rejected:
            log.info("OTLP export: %d of %d span(s) rejected: %s", rejected, len(spans) + len(problems),
                     logsafe.redact(text))
        return Response(encode_response(rejected, text, kind), media_type=kind)

    return app
