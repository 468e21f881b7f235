"""OpenAI's Responses API and embeddings on the proxy: `/v1/responses` and `/v1/embeddings`.

    client.responses.create(model="gpt-4o-mini", input="What is the refund window?")        # or stream=True
    client.responses.create(model=..., instructions="Be brief.", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "..."}]}])
    client.embeddings.create(model="minilm-l6-v2", input=["a", "b"])

A Responses request is translated into a chat completion and goes the chat path of proxy.py: the
same scope headers, the learned context merged into the system message, the same upstream, one
trace (named `responses`) written before the answer ends. The chat answer is translated back:

    request  instructions -> system message; input (a string, or message items with input_text /
             input_image parts, function_call and function_call_output items) -> messages;
             max_output_tokens -> max_completion_tokens; function tools, tool_choice and
             text.format (json_schema) -> their chat forms
    answer   {"object": "response", "output": [message item | function_call items], "usage":
             {"input_tokens", "output_tokens", "total_tokens"}, "status": "completed" | "incomplete"}
    stream   response.created, output_item.added, content_part.added, output_text.delta ...,
             output_text.done, content_part.done, output_item.done, response.completed (each an SSE
             event with `event:` and a `sequence_number`); the trace is durable before `completed`

Stateful features (`previous_response_id`, `conversation`, `background`) are refused with a 400:
the proxy stores no responses. Embeddings are forwarded to an HTTP upstream, or answered by the
home's embedder with the home's own backend (proxy_upstream.py); they are not recorded as traces.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.problems import problem_response
from crystallise.api.proxy import Call, _bad_gateway, _summary, openai_problem, read_scope
from crystallise.api.proxy_upstream import Reply, UpstreamUnavailable
from crystallise.api.sse import SseRecorder
from crystallise.errors import ValidationError
from crystallise.types import new_id

__all__ = ["EmbeddingsRequest", "ResponsesRequest", "chat_answer_to_response", "responses_to_chat", "router"]

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible proxy"])

_REFUSED = {"previous_response_id": "the proxy stores no responses: send the whole conversation as `input`",
            "conversation": "the proxy stores no conversations: send the whole conversation as `input`",
            "background": "the proxy answers in the foreground only: leave `background` out"}
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "seed", "stop", "user")


class ResponsesRequest(BaseModel):
    """An OpenAI Responses request. Fields not listed are translated where chat has them (see module)."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=500)]
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1, max_length=100_000)]
    instructions: Annotated[str, Field(max_length=1_000_000)] | None = None
    stream: StrictBool = False
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    user: Annotated[str, Field(max_length=200)] | None = None


class EmbeddingsRequest(BaseModel):
    """An OpenAI embeddings request."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=500)]
    input: str | Annotated[list[Any], Field(min_length=1, max_length=2048)]


# -- translation ----------------------------------------------------------------------------------


def _part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise ValidationError(f"{where}: a content part must be an object such as {{'type': 'input_text', ...}}")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")}}
    raise ValidationError(f"{where}: content part type {kind!r} is not supported by the proxy (use input_text, "
                          "output_text or input_image with an image_url)")


def _message(item: dict[str, Any], i: int) -> dict[str, Any]:
    kind = item.get("type", "message")
    if kind == "function_call":
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": str(item.get("call_id") or item.get("id") or ""), "type": "function",
            "function": {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", ""))}}]}
    if kind == "function_call_output":
        output = item.get("output")
        return {"role": "tool", "tool_call_id": str(item.get("call_id", "")),
                "content": output if isinstance(output, str) else json.dumps(output)}
    if kind != "message":
        raise ValidationError(f"input[{i}]: item type {kind!r} is not supported by the proxy (use message, "
                              "function_call or function_call_output items)")
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise ValidationError(f"input[{i}].role must be user, assistant, system or developer, got {role!r}")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if isinstance(content, list):
        parts = [_part(p, f"input[{i}].content[{j}]") for j, p in enumerate(content)]
        if all(p["type"] == "text" for p in parts):  # plain text: the form every chat template takes
            return {"role": role, "content": "".join(p["text"] for p in parts)}
        return {"role": role, "content": parts}
    raise ValidationError(f"input[{i}].content must be a string or a list of content parts")


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not tool.get("name"):
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise ValidationError(f"tools: only function tools with a name can go through the proxy, got {kind!r}")
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": fn}


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion request a Responses request means (`ValidationError` naming what cannot be sent).

    >>> responses_to_chat({"model": "m", "instructions": "Be brief.", "input": "hi", "max_output_tokens": 9})
    {'model': 'm', 'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'hi'}], \
'max_completion_tokens': 9}
    """
    for field, why in _REFUSED.items():
        if body.get(field):
            raise ValidationError(f"{field}: {why}")
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    given = body["input"]
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    else:
        messages += [_message(item, i) for i, item in enumerate(given)]
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    chat.update({k: body[k] for k in _PASSED if body.get(k) is not None})
    if body.get("tools"):
        chat["tools"] = [_tool(t) for t in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


def _usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    given, made = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"input_tokens": given, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": made,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": given + made}


def chat_answer_to_response(body: dict[str, Any], *, rid: str, text: str | None, tool_calls: list[dict[str, Any]],
                            model: str | None, usage: dict[str, Any] | None, finish: str | None,
                            status: str = "completed") -> dict[str, Any]:
    """A Responses `response` object for a chat answer (text and/or tool calls)."""
    output: list[dict[str, Any]] = []
    if text:
        output.append(_message_item(rid, text, "completed"))
    for call in tool_calls:
        fn = call.get("function") or {}
        output.append({"type": "function_call", "id": "fc_" + str(call.get("id") or new_id("")), "status": "completed",
                       "call_id": str(call.get("id") or ""), "name": str(fn.get("name", "")),
                       "arguments": str(fn.get("arguments", ""))})
    incomplete = finish == "length" and status == "completed"
    return {"id": rid, "object": "response", "created_at": int(time.time()),
            "status": "incomplete" if incomplete else status,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None, "error": None,
            "model": model or body.get("model"), "output": output, "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True), "temperature": body.get("temperature"),
            "top_p": body.get("top_p"), "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "text": body.get("text") or {"format": {"type": "text"}}, "usage": _usage(usage)}


def _message_item(rid: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": "msg_" + rid.removeprefix("resp_"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text or
            status == "completed" else []}


def _chat_doc(reply: Reply) -> tuple[str | None, list[dict[str, Any]]]:
    doc = json.loads(reply.content)
    message = ((doc.get("choices") or [{}])[0]).get("message") or {}
    return message.get("content"), list(message.get("tool_calls") or [])


# -- routes ---------------------------------------------------------------------------------------


@router.post("/responses", summary="OpenAI Responses API (streaming or not), through the chat path",
             responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}})
async def responses(
    request: Request, home: HomeDep, who: PrincipalDep, body: Annotated[ResponsesRequest, Body()],
) -> Response:
    """A Responses request with the learned context injected, recorded as a trace named `responses`.

    Same scope headers as `/v1/chat/completions`; the answer carries `X-Crystallise-Trace-Id`.
    """
    payload = await request.json()
    scope = read_scope(request, who, body)
    if "x-crystallise-trace-name" not in request.headers:
        scope.name = "responses"
    try:
        chat = responses_to_chat(payload)
    except ValidationError as e:
        raise openai_problem(e) from e
    upstream = request.app.state.upstream
    stream = bool(payload.get("stream"))
    if stream:
        chat |= {"stream": True, "stream_options": {"include_usage": True}}
    call = Call(home, upstream.label, scope, chat)
    await call.assemble()
    try:
        reply = await (upstream.open_stream(call.forward_body()) if stream else upstream.complete(call.forward_body()))
    except UpstreamUnavailable as e:
        ok = await call.record(call.trace(status=None, output=None, model=None, usage=None, finish=None,
                                          error=str(e)))
        return _bad_gateway(call, str(e), ok, "/v1/responses")
    except ValidationError as e:
        raise openai_problem(e) from e
    rid = "resp_" + call.trace_id.removeprefix("tr_")
    if reply.chunks is None:
        output, model, usage, finish, error = _summary(reply)
        ok = await call.record(call.trace(status=reply.status, output=output, model=model, usage=usage,
                                          finish=finish, error=error))
        if error is not None:  # the upstream's own error, passed on as it sent it
            return Response(reply.content, status_code=reply.status, headers={**reply.headers, **call.headers(ok)},
                            media_type=reply.headers.get("content-type", "application/json"))
        text, tool_calls = _chat_doc(reply)
        doc = chat_answer_to_response(payload, rid=rid, text=text, tool_calls=tool_calls, model=model,
                                      usage=usage, finish=finish)
        return Response(json.dumps(doc), status_code=200, headers=call.headers(ok), media_type="application/json")
    return StreamingResponse(_relay(call, reply, payload, rid), status_code=200, headers=call.headers(True),
                             media_type="text/event-stream")


class _Events:
    """Responses SSE events, numbered."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        doc = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: {json.dumps(doc)}\n\n".encode()


async def _relay(call: Call, reply: Reply, body: dict[str, Any], rid: str) -> AsyncIterator[bytes]:
    """The chat stream re-framed as Responses events; the trace is written before `response.completed`."""
    rec, ev = SseRecorder(call.t0), _Events()
    item = _message_item(rid, "", "in_progress")
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    shell = chat_answer_to_response(body, rid=rid, text=None, tool_calls=[], model=None, usage=None, finish=None,
                                    status="in_progress")
    sent = 0

    def trace(error: str | None = None, abandoned: bool = False) -> Any:
        return call.trace(status=200, output=rec.output, model=rec.model, usage=rec.usage, finish=rec.finish,
                          error=error, ttft_ms=rec.ttft_ms, abandoned=abandoned)

    try:
        yield ev("response.created", response=shell)
        yield ev("response.in_progress", response=shell)
        yield ev("response.output_item.added", output_index=0, item=item)
        yield ev("response.content_part.added", item_id=item["id"], output_index=0, content_index=0, part=part)
        async for chunk in reply.chunks or _none():
            rec.feed(chunk)
            text = rec.output if isinstance(rec.output, str) else ""
            if len(text) > sent:
                yield ev("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0,
                         delta=text[sent:], logprobs=[])
                sent = len(text)
        rec.flush()
        text = rec.output if isinstance(rec.output, str) else ""
        tools = rec.output.get("tool_calls", []) if isinstance(rec.output, dict) else []
        error = rec.error or (None if rec.done else "the upstream stream ended without [DONE]")
        await call.record(trace(error))
        done = chat_answer_to_response(body, rid=rid, text=text, tool_calls=tools, model=rec.model, usage=rec.usage,
                                       finish=rec.finish, status="failed" if error else "completed")
        yield ev("response.output_text.done", item_id=item["id"], output_index=0, content_index=0, text=text,
                 logprobs=[])
        yield ev("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                 part={**part, "text": text})
        yield ev("response.output_item.done", output_index=0, item=_message_item(rid, text, "completed"))
        for i, out in enumerate(o for o in done["output"] if o["type"] == "function_call"):
            yield ev("response.output_item.added", output_index=i + 1, item=out)
            yield ev("response.output_item.done", output_index=i + 1, item=out)
        if error:
            yield ev("response.failed", response={**done, "error": {"code": "server_error", "message": error}})
        else:
            yield ev("response.completed", response=done)
    except UpstreamUnavailable as e:
        await call.record(trace(f"the upstream failed mid-stream: {e}"))
        yield ev("error", code="upstream_unavailable", message=str(e), param=None)
    finally:
        if not call.attempted:  # cancelled: the client hung up
            await call.record(trace("the client closed the stream before it ended", abandoned=True))
        if reply.close is not None:
            with anyio.CancelScope(shield=True):
                await reply.close()


async def _none() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


@router.post("/embeddings", summary="OpenAI-compatible embeddings (the home's embedder with a local upstream)")
async def embeddings(request: Request, who: PrincipalDep, body: Annotated[EmbeddingsRequest, Body()]) -> Response:
    """Forwarded to an HTTP upstream; answered by the home's embedder when the upstream is the home's backend."""
    payload = await request.json()
    try:
        reply = await request.app.state.upstream.embeddings(payload)
    except UpstreamUnavailable as e:
        return problem_response(502, str(e), "/v1/embeddings",
                                error={"message": str(e), "type": "upstream_unavailable", "code": 502, "param": None})
    except ValidationError as e:
        raise openai_problem(e) from e
    return Response(reply.content, status_code=reply.status, headers=reply.headers,
                    media_type=reply.headers.get("content-type", "application/json"))

