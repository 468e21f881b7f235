"""OTLP/HTTP request bodies -> raw spans (plain dicts), for both encodings.

    application/x-protobuf   ExportTraceServiceRequest, binary protobuf
    application/json         the OTLP JSON encoding: lowerCamelCase keys, trace and span ids as
                             hex strings (not base64), enums as integers, int64 as strings or numbers

`Content-Encoding: gzip` (or deflate) is accepted; the inflated size is capped like the body.
Malformed input raises `BadPayload` (answered 400), an unknown content type `UnsupportedMedia` (415).
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["BadPayload", "UnsupportedMedia", "decode_request", "encode_response", "media_type", "raw_spans"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BadPayload(ValueError):
    """The body is not a valid ExportTraceServiceRequest in the declared encoding."""


class UnsupportedMedia(ValueError):
    """Neither protobuf nor JSON."""


def media_type(content_type: str | None) -> str:
    """`application/x-protobuf` or `application/json` (parameters such as charset ignored)."""
    base = (content_type or "").split(";")[0].strip().lower()
    if base in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if base == JSON:
        return JSON
    raise UnsupportedMedia(
        f"Content-Type {content_type or '(none)'!r} is not OTLP: send application/x-protobuf or application/json"
    )


def _inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "deflate"):
        raise UnsupportedMedia(f"Content-Encoding {encoding!r} is not supported: use gzip or none")
    try:
        d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadPayload(f"the body is not valid {enc} data ({e})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise BadPayload(f"the inflated body is over {limit} bytes: send smaller batches")
    return out


def _b64_id(value: Any) -> str:
    """OTLP JSON ids are hex; protobuf's JSON parser wants base64. Bad hex -> "" (the span is rejected)."""
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return ""


def _fix_json_ids(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise BadPayload("the OTLP JSON body must be an object with `resourceSpans`")
    for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
        for ss in (rs.get("scopeSpans") or rs.get("scope_spans") or []) if isinstance(rs, dict) else []:
            for sp in (ss.get("spans") or []) if isinstance(ss, dict) else []:
                if not isinstance(sp, dict):
                    continue
                for holder in [sp, *[ln for ln in sp.get("links") or [] if isinstance(ln, dict)]]:
                    for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                        if key in holder:
                            holder[key] = _b64_id(holder[key])


def decode_request(body: bytes, content_type: str | None, encoding: str | None = None,
                   limit: int = 16 << 20) -> tuple[ExportTraceServiceRequest, str]:
    """The request message and the media type to answer in."""
    kind = media_type(content_type)
    data = _inflate(body, encoding, limit)
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise BadPayload(f"the body is not a protobuf ExportTraceServiceRequest ({e})") from None
        return request, kind
    try:
        doc = json.loads(data or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadPayload(f"the body is not JSON ({e})") from None
    _fix_json_ids(doc)
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, binascii.Error) as e:
        raise BadPayload(f"the JSON is not an OTLP ExportTraceServiceRequest ({e})") from None
    return request, kind


def encode_response(rejected: int, message: str, kind: str) -> bytes:
    """ExportTraceServiceResponse, with partial_success only when something was rejected."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if kind == PROTOBUF:
        return response.SerializeToString()
    return json.dumps(json_format.MessageToDict(response)).encode()


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def raw_spans(request: ExportTraceServiceRequest) -> tuple[list[dict[str, Any]], list[str]]:
    """Every span as a raw-span dict (see otlp_map), and a message per span that has unusable ids."""
    spans: list[dict[str, Any]] = []
    problems: list[str] = []
    for rs in request.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for sp in ss.spans:
                if len(sp.trace_id) != 16 or len(sp.span_id) != 8 or sp.trace_id == bytes(16):
                    problems.append(f"span {sp.name!r} has no valid trace_id (16 bytes) and span_id (8 bytes)")
                    continue
                start = sp.start_time_unix_nano / 1e9 if sp.start_time_unix_nano else None
                end = sp.end_time_unix_nano / 1e9 if sp.end_time_unix_nano else None
                if start is None:
                    problems.append(f"span {sp.name!r} has no start_time_unix_nano")
                    continue
                spans.append({
                    "trace_id": sp.trace_id.hex(),
                    "span_id": sp.span_id.hex(),
                    "parent_id": sp.parent_span_id.hex() if len(sp.parent_span_id) == 8 else None,
                    "name": sp.name,
                    "kind": int(sp.kind),
                    "start": start,
                    "end": end if end is not None and end >= start else None,
                    "attrs": _attrs(sp.attributes),
                    "resource": resource,
                    "scope": scope,
                    "status_code": int(sp.status.code),
                    "status_message": sp.status.message,
                    "events": [{"name": e.name, "time": e.time_unix_nano / 1e9 if e.time_unix_nano else None,
                                "attrs": _attrs(e.attributes)} for e in sp.events],
                })
    return spans, problems
