"""The integrations with the REAL frameworks: the OpenAI Agents SDK (a Runner.run against a fake OpenAI server, a
tool call included) through CrystalliseTracingProcessor, and LangChain / LangGraph (a fake chat model, a tool, a
tiny graph) through CrystalliseCallbackHandler — each run recorded as one crystallise trace in the home."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the fake server needs the `serve` extra")
agents = pytest.importorskip("agents", reason="the Agents integration needs the `agents` extra")
pytest.importorskip("langchain_core", reason="the LangChain integration needs the `langchain` extra")
pytest.importorskip("langgraph", reason="the LangGraph test needs the `langchain` extra")

from fastapi import FastAPI, Request  # noqa: E402
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from crystallise.engine.home import Home  # noqa: E402
from crystallise.errors import StoreError  # noqa: E402
from crystallise.integrations.langchain import CrystalliseCallbackHandler  # noqa: E402
from crystallise.integrations.openai_agents import CrystalliseTracingProcessor  # noqa: E402
from crystallise.testing import Server  # noqa: E402


@pytest.fixture
def home(tmp_path) -> Iterator[Home]:
    h = Home.init(tmp_path / "home")
    yield h
    h.close()


def traces_of(home: Home) -> list[Any]:
    return [home.store.get_trace(t.id) for t in home.store.list_traces(limit=20)]


# -- OpenAI Agents SDK --------------------------------------------------------------------------------


def tool_calling_openai() -> FastAPI:
    """Chat completions: first a call of `refund_days`, then (given the tool's result) the final answer."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        last = body["messages"][-1]
        head = {"id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}
        if last["role"] != "tool":
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "refund_days", "arguments": json.dumps({"plan": "acme"})}}]}
            return {**head, "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
        message = {"role": "assistant", "content": f"Refunds within {last['content']} days."}
        return {**head, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    return app


@agents.function_tool
def refund_days(plan: str) -> str:
    """How many days a plan's customers have to ask for a refund."""
    return "60" if plan == "acme" else "30"


def test_an_agents_run_with_a_tool_call_is_one_trace(home):
    processor = CrystalliseTracingProcessor(home, org="acme", user="u1")
    with Server(tool_calling_openai()) as srv:
        model = agents.OpenAIChatCompletionsModel(
            model="gpt-test", openai_client=AsyncOpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0))
        support = agents.Agent(name="support", instructions="Answer refund questions.", tools=[refund_days],
                               model=model)
        agents.set_trace_processors([processor])  # replaces the SDK's uploader: nothing leaves the machine
        try:
            result = agents.Runner.run_sync(support, "What is the refund window?")
        finally:
            agents.set_trace_processors([])
    assert result.final_output == "Refunds within 60 days."
    [trace] = traces_of(home)
    assert (trace.agent_id, trace.org_id, trace.user_id, trace.status) == ("support", "acme", "u1", "ok")
    assert trace.metadata["framework"] == "openai-agents" and processor.recorder.written == [trace.id]
    kinds = [s.kind for s in trace.spans]
    assert kinds.count("llm") == 2 and kinds.count("tool") == 1 and "task" in kinds
    llm = [s for s in trace.spans if s.kind == "llm"]
    assert all(s.attributes["model"] == "gpt-test" and s.attributes["prompt_tokens"] == 20
               and s.attributes["completion_tokens"] == 5 for s in llm)
    tool_span = next(s for s in trace.spans if s.kind == "tool")
    assert (tool_span.name, tool_span.input, tool_span.output) == ("refund_days", {"plan": "acme"}, "60")
    agent_span = next(s for s in trace.spans if s.kind == "task")
    parents = {s.id: s.parent_id for s in trace.spans}

    def under_agent(span_id: str | None) -> bool:
        while span_id is not None:
            if span_id == agent_span.id:
                return True
            span_id = parents.get(span_id)
        return False

    assert under_agent(tool_span.parent_id) and all(under_agent(s.parent_id) for s in llm)
    assert "Refunds within 60 days." in json.dumps(trace.output)


def test_a_store_failure_never_breaks_the_agent_run(home, monkeypatch):
    def down(trace: Any) -> Any:
        raise StoreError("database is locked")

    monkeypatch.setattr(home.store, "write_trace", down)
    processor = CrystalliseTracingProcessor(home)
    with Server(tool_calling_openai()) as srv:
        model = agents.OpenAIChatCompletionsModel(
            model="gpt-test", openai_client=AsyncOpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0))
        agents.set_trace_processors([processor])
        try:
            result = agents.Runner.run_sync(agents.Agent(name="a", model=model, tools=[refund_days]), "hello")
        finally:
            agents.set_trace_processors([])
    assert result.final_output and processor.recorder.errors == 1


# -- LangChain / LangGraph -------------------------------------------------------------------------------


def fake_model(*replies: AIMessage) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(replies))


def test_a_langchain_model_call_and_tool_are_recorded(home):
    handler = CrystalliseCallbackHandler(home, agent="support", org="acme")
    model = fake_model(AIMessage(content="Thirty days.", usage_metadata={"input_tokens": 9, "output_tokens": 2,
                                                                         "total_tokens": 11}))
    answer = model.invoke([HumanMessage(content="What is the refund window?")], config={"callbacks": [handler]})
    assert answer.content == "Thirty days."

    @tool
    def lookup(plan: str) -> str:
        """Look a plan up."""
        return f"{plan}: 60 days"

    assert lookup.invoke({"plan": "acme"}, config={"callbacks": [handler]}) == "acme: 60 days"
    by_name = {t.name: t for t in traces_of(home)}
    chat = next(t for n, t in by_name.items() if n.startswith("chat"))
    [llm] = chat.spans
    assert (chat.agent_id, chat.org_id, chat.status, llm.kind) == ("support", "acme", "ok", "llm")
    assert llm.input == [{"role": "user", "content": "What is the refund window?"}] and llm.output == "Thirty days."
    assert (llm.attributes["prompt_tokens"], llm.attributes["completion_tokens"]) == (9, 2)
    assert chat.output == "Thirty days."
    [tool_span] = by_name["lookup"].spans
    assert (tool_span.kind, tool_span.input, tool_span.output) == ("tool", {"plan": "acme"}, "acme: 60 days")


def test_a_langgraph_run_is_one_trace_with_its_nodes_and_model_call(home):
    model = fake_model(AIMessage(content="Refunds within 30 days."))

    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def check(state: MessagesState) -> dict[str, Any]:
        if "days" not in state["messages"][-1].content:
            raise ValueError("no number of days in the answer")
        return {}

    graph = StateGraph(MessagesState)
    graph.add_node("answer", answer)
    graph.add_node("check", check)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", "check")
    graph.add_edge("check", END)
    app = graph.compile()
    handler = CrystalliseCallbackHandler(home, agent="support", user="u1")
    out = app.invoke({"messages": [HumanMessage(content="Refund window?")]}, config={"callbacks": [handler]})
    assert out["messages"][-1].content == "Refunds within 30 days."
    [trace] = traces_of(home)
    assert (trace.agent_id, trace.user_id, trace.status) == ("support", "u1", "ok")
    names = [s.name for s in trace.spans]
    assert "answer" in names and "check" in names
    llm = next(s for s in trace.spans if s.kind == "llm")
    node = next(s for s in trace.spans if s.name == "answer")
    assert llm.output == "Refunds within 30 days." and llm.parent_id == node.id
    assert trace.output["messages"][-1] == {"role": "assistant", "content": "Refunds within 30 days."}

    failing = fake_model(AIMessage(content="Ask support."))
    bad = StateGraph(MessagesState)
    bad.add_node("answer", lambda s: {"messages": [failing.invoke(s["messages"])]})
    bad.add_node("check", check)
    bad.add_edge(START, "answer")
    bad.add_edge("answer", "check")
    bad.add_edge("check", END)
    with pytest.raises(ValueError, match="no number of days"):
        bad.compile().invoke({"messages": [HumanMessage(content="Refund window?")]}, config={"callbacks": [handler]})
    failed = next(t for t in traces_of(home) if t.id != trace.id)
    assert failed.status == "error" and "no number of days" in failed.error
    assert next(s for s in failed.spans if s.name == "check").error
