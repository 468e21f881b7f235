"""Crystallise inside the agent frameworks users already run: their traces become crystallise traces.

    from crystallise.integrations.openai_agents import CrystalliseTracingProcessor   # extra `agents`
    agents.set_trace_processors([CrystalliseTracingProcessor(home, org="acme")])

    from crystallise.integrations.langchain import CrystalliseCallbackHandler         # extra `langchain`
    graph.invoke(state, config={"callbacks": [CrystalliseCallbackHandler(home, agent="support")]})

Both build a whole `Trace` (spans: llm / tool / task) while the run goes, and write it once when
its root ends — through `home.store.write_trace`, so redaction, tenancy labels and OTLP export
apply as for any trace. A store failure is logged, never raised into the agent (`recorder.py`).
The modules sit at the edge of the layering: they import the engine's Home and the types, and
nothing in crystallise imports them.
"""
