"""A LangChain / LangGraph callback handler that records runs as crystallise traces (extra `langchain`).

    from crystallise.integrations.langchain import CrystalliseCallbackHandler

    handler = CrystalliseCallbackHandler(home, agent="support", org="acme", user="u1")
    chain.invoke(question, config={"callbacks": [handler]})
    graph.invoke({"messages": [...]}, config={"callbacks": [handler]})       # LangGraph: the same callbacks

The outermost run (a chain, a graph, or a lone model call) is the trace; each run under it is a
span, written with the trace when the outermost run ends:

    chat model / llm   llm    model (invocation params), prompt/completion tokens (usage_metadata or
                              llm_output.token_usage), the messages in and the text out
    tool               tool   name, input, output
    retriever          retrieval  query, documents' text
    chain / graph node task   its name (LangGraph node names), inputs and outputs

Errors on any run mark its span and the trace as errors. A store failure is logged, never raised
into the chain (`Recorder`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from crystallise.engine.home import Home
from crystallise.integrations.recorder import Recorder
from crystallise.types import Span, now

try:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult
except ImportError as exc:  # pragma: no cover - depends on the extras installed
    raise ImportError(f"the LangChain integration needs the `langchain` extra: pip install 'crystallise[langchain]' "
                      f"({exc})") from exc

__all__ = ["CrystalliseCallbackHandler"]


def _message(m: Any) -> dict[str, Any]:
    if isinstance(m, BaseMessage):
        role = {"human": "user", "ai": "assistant"}.get(m.type, m.type)
        return {"role": role, "content": m.content if isinstance(m.content, str) else str(m.content)}
    return {"role": "user", "content": str(m)}


def _plain(value: Any) -> Any:
    """Framework objects as JSON-able data (messages as role/content, the rest as text)."""
    if isinstance(value, BaseMessage):
        return _message(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class CrystalliseCallbackHandler(BaseCallbackHandler):
    """Records LangChain/LangGraph runs into `home`; one trace per outermost run."""

    raise_error = False  # a recording problem never stops the chain

    def __init__(self, home: Home, *, agent: str | None = None, org: str | None = None, user: str | None = None,
                 session: str | None = None) -> None:
        self.recorder = Recorder(home, agent=agent, org=org, user=user, session=session)
        self._runs: dict[UUID, tuple[UUID, Span]] = {}  # run id -> (root run id, its span)

    # -- the run tree -------------------------------------------------------------------------------

    def _start(self, run_id: UUID, parent_run_id: UUID | None, span: Span, trace_name: str, inp: Any) -> None:
        root = self._runs[parent_run_id][0] if parent_run_id in self._runs else run_id
        if root == run_id:
            self.recorder.begin(str(run_id), trace_id=f"tr_{run_id.hex}", name=trace_name, input=inp,
                                agent=trace_name, metadata={"framework": "langchain"})
        span.id, span.parent_id = f"sp_{run_id.hex}", f"sp_{parent_run_id.hex}" if parent_run_id else None
        self._runs[run_id] = (root, span)

    def _end(self, run_id: UUID, output: Any = None, error: BaseException | None = None) -> None:
        entry = self._runs.pop(run_id, None)
        if entry is None:
            return
        root, span = entry
        span.ended_at, span.output = now(), span.output if output is None else output
        if error is not None:
            span.error = f"{type(error).__name__}: {error}"
        self.recorder.span(str(root), span)
        if root == run_id:
            self.recorder.end(str(root), output=span.output if span.kind != "llm" else None, error=span.error)

    # -- chains and graph nodes -----------------------------------------------------------------------

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kw: Any) -> None:
        name = kw.get("name") or (serialized or {}).get("name") or "chain"
        self._start(run_id, parent_run_id, Span(name=str(name), kind="task", input=_plain(inputs),
                                                attributes={"framework": "langchain", "run_type": "chain"}),
                    str(name), _plain(inputs))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id, _plain(outputs))

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id, error=error)

    # -- models -------------------------------------------------------------------------------------

    def _model_start(self, serialized: dict[str, Any] | None, inp: Any, run_id: UUID, parent: UUID | None,
                     kw: dict[str, Any]) -> None:
        params = kw.get("invocation_params") or {}
        model = params.get("model") or params.get("model_name") or (kw.get("metadata") or {}).get("ls_model_name") \
            or params.get("_type") or (serialized or {}).get("name")
        span = Span(name=f"chat {model}", kind="llm", input=inp,
                    attributes={"framework": "langchain", "model": model,
                                "provider": (kw.get("metadata") or {}).get("ls_provider")})
        self._start(run_id, parent, span, f"chat {model}", inp)

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: list[list[Any]], *, run_id: UUID,
                            parent_run_id: UUID | None = None, **kw: Any) -> None:
        self._model_start(serialized, [_message(m) for m in (messages[0] if messages else [])], run_id,
                          parent_run_id, kw)

    def on_llm_start(self, serialized: dict[str, Any] | None, prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, **kw: Any) -> None:
        self._model_start(serialized, prompts[0] if len(prompts) == 1 else prompts, run_id, parent_run_id, kw)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kw: Any) -> None:
        entry = self._runs.get(run_id)
        if entry is None:
            return
        span = entry[1]
        first = response.generations[0][0] if response.generations and response.generations[0] else None
        text = getattr(first, "text", None)
        message = getattr(first, "message", None)
        usage = getattr(message, "usage_metadata", None) or {}
        token_usage = (response.llm_output or {}).get("token_usage") or {}
        given = usage.get("input_tokens", token_usage.get("prompt_tokens"))
        made = usage.get("output_tokens", token_usage.get("completion_tokens"))
        span.attributes.update({k: v for k, v in (("prompt_tokens", given), ("completion_tokens", made))
                                if v is not None})
        if message is not None and getattr(message, "tool_calls", None):
            self._end(run_id, {"tool_calls": _plain(message.tool_calls)})
        else:
            self._end(run_id, text)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id, error=error)

    # -- tools and retrievers ---------------------------------------------------------------------------

    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, **kw: Any) -> None:
        name = str((serialized or {}).get("name") or kw.get("name") or "tool")
        inputs = kw.get("inputs")
        span = Span(name=name, kind="tool", input=_plain(inputs) if inputs is not None else input_str,
                    attributes={"framework": "langchain", "tool": name})
        self._start(run_id, parent_run_id, span, name, span.input)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id, _plain(getattr(output, "content", output)))

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id, error=error)

    def on_retriever_start(self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, **kw: Any) -> None:
        span = Span(name=str((serialized or {}).get("name") or "retriever"), kind="retrieval",
                    input={"query": query}, attributes={"framework": "langchain"})
        self._start(run_id, parent_run_id, span, span.name, span.input)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id, [getattr(d, "page_content", str(d)) for d in documents])

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._end(run_id, error=error)
