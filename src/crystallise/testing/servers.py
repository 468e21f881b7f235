"""Real servers for the interface tests and the benchmarks: an ASGI app under uvicorn in a thread, and a
small fake OpenAI-compatible upstream (streaming and not) for the proxy.

    with Server(create_app(home)) as api, Server(fake_openai()) as up:
        httpx.get(api.url + "/v1/health")

The fake upstream answers `echo: <last user message>` and keeps every request body it got in
`app.state.requests`, so a test sees exactly what the proxy forwarded. The model name picks a
behaviour: `fail-500` answers an OpenAI-style 500 error, `fail-400` a 400, `flaky-2-x` fails its first
2 requests with 503 (a client retries them); any other model works.
A stream is the reply in three content chunks (plus a usage chunk when
`stream_options.include_usage` is set), framed as OpenAI frames it. `POST /v1/embeddings` answers
3-d vectors `[len(text), index, 1.0]`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
except ImportError as exc:  # pragma: no cover - depends on the extras installed
    raise ImportError(f"crystallise.testing's servers need the serve extra: pip install 'crystallise[serve]' "
                      f"({exc})") from exc

__all__ = ["Server", "fake_openai"]


class Server:
    """The app under uvicorn in a thread, on a loopback socket bound before it starts (no port race).

    `log_level` is uvicorn's; `start_timeout` the seconds to wait for it to start (RuntimeError past it).
    """

    def __init__(self, app: Any, *, log_level: str = "warning", start_timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return str(m["content"])
    return ""


def fake_openai(chunk_delay_s: float = 0.0) -> FastAPI:
    """A minimal OpenAI-compatible server (see the module docstring)."""
    app = FastAPI()
    app.state.requests = []
    app.state.flaky = {}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "t"}]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append({"body": body, "headers": dict(request.headers)})
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        return {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 2, "total_tokens": 2},
                "data": [{"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 1.0]}
                         for i, t in enumerate(texts)]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append({"body": body, "headers": dict(request.headers)})
        model = body.get("model", "")
        if model.startswith("flaky-"):  # flaky-N-...: the first N requests naming it fail with 503
            failed = app.state.flaky.get(model, 0)
            if failed < int(model.split("-")[1]):
                app.state.flaky[model] = failed + 1
                return JSONResponse({"error": {"message": "fake flaky upstream", "type": "server_error",
                                               "code": None, "param": None}}, status_code=503)
        if model.startswith("fail-"):
            status = int(model.split("-")[1])
            return JSONResponse({"error": {"message": f"fake upstream failure {status}", "type": "server_error",
                                           "code": None, "param": None}}, status_code=status)
        text = "echo: " + _last_user(body)
        usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
        head = {"id": "chatcmpl-fake1", "created": 1700000000, "model": model + "-0001", "system_fingerprint": "fp"}
        if not body.get("stream"):
            return {**head, "object": "chat.completion", "usage": usage,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                 "logprobs": None, "finish_reason": "stop"}]}

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + json.dumps({**head, "object": "chat.completion.chunk", "choices": choices,
                                           **extra}).encode() + b"\n\n"

        third = max(1, len(text) // 3)
        pieces = [text[:third], text[third:2 * third], text[2 * third:]]

        async def stream() -> Any:
            yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            for piece in pieces:
                await asyncio.sleep(chunk_delay_s)
                yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if (body.get("stream_options") or {}).get("include_usage"):
                yield event([], usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app
