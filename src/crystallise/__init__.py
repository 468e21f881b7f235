"""crystallise: record what agents do, learn gated and revertible changes from the outcomes.

    import crystallise

    with crystallise.trace("answer", agent="support", user="u1", input=q) as t:
        pack = crystallise.get_context(agent="support", user="u1", query=q)
        t.output = my_agent(pack.text, q)
    t.feedback(score=0.0, correction="the right answer")
    crystallise.remember("prefers metric units", agent="support", user="u1")   # now, for u1 only

    async with crystallise.trace("answer", input=q) as t:     # async: never waits on the store
        items = await crystallise.arecall(q, user="u1")

Traces are written in the background and never raise into the application (docs/sdk.md,
"Fail open"); `crystallise.flush()` waits for them. See docs/loop.md for the whole loop and
docs/cli.md for the command line.
"""

import sys
import warnings
from types import ModuleType
from typing import Any

from crystallise.engine.aio import aforget, aget_context, arecall, aremember
from crystallise.engine.home import Home
from crystallise.engine.learning import last_trace_id, learn, score
from crystallise.engine.memory import forget, remember
from crystallise.engine.memory_api import AsyncMemory, Memory
from crystallise.engine.observe import trace, wrap_openai
from crystallise.engine.serving import ContextPack, recall
from crystallise.engine.serving import assemble as get_context
from crystallise.engine.task import Task, task
from crystallise.engine.tracing import flush
from crystallise.engine.tracing import stats as tracing_stats
from crystallise.errors import CrystalliseError, UserError
from crystallise.traces import TraceHandle, current_trace
from crystallise.version import __version__ as __version__


class _ContextPackage(ModuleType):
    """`crystallise.context` is the sub-package (`crystallise.context.items`, ...); calling it is the
    old spelling of `crystallise.get_context(...)`, kept working for one release with a warning."""

    def __call__(self, **kwargs: Any) -> ContextPack:
        warnings.warn("crystallise.context(...) is deprecated: call crystallise.get_context(...) "
                      "(same arguments)", DeprecationWarning, stacklevel=2)
        return get_context(**kwargs)


sys.modules["crystallise.context"].__class__ = _ContextPackage

__all__ = [
    "AsyncMemory",
    "ContextPack",
    "CrystalliseError",
    "Home",
    "Memory",
    "Task",
    "TraceHandle",
    "UserError",
    "aforget",
    "aget_context",
    "arecall",
    "aremember",
    "current_trace",
    "flush",
    "forget",
    "get_context",
    "last_trace_id",
    "learn",
    "recall",
    "remember",
    "score",
    "task",
    "trace",
    "tracing_stats",
    "wrap_openai",
]
