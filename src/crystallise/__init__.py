"""crystallise: record what agents do, learn gated and revertible changes from the outcomes.

    import crystallise

    with crystallise.trace("answer", agent="support", user="u1", input=q) as t:
        pack = crystallise.context(agent="support", user="u1", query=q)
        t.output = my_agent(pack.text, q)
    t.feedback(score=0.0, correction="the right answer")
    crystallise.remember("prefers metric units", agent="support", user="u1")   # now, for u1 only

See docs/loop.md for the whole loop and docs/cli.md for the command line.
"""

from crystallise.engine.home import Home
from crystallise.engine.memory import forget, remember
from crystallise.engine.memory_api import AsyncMemory, Memory
from crystallise.engine.observe import trace, wrap_openai
from crystallise.engine.serving import ContextPack, assemble
from crystallise.engine.task import Task, task
from crystallise.errors import CrystalliseError, UserError
from crystallise.traces import TraceHandle, current_trace
from crystallise.version import __version__ as __version__

# `crystallise.context(...)` is the serving call of DESIGN.md; the sub-package of the same
# name stays importable as `crystallise.context.<module>` (it is already in sys.modules).
context = assemble

__all__ = [
    "AsyncMemory",
    "ContextPack",
    "CrystalliseError",
    "Home",
    "Memory",
    "Task",
    "TraceHandle",
    "UserError",
    "context",
    "current_trace",
    "forget",
    "remember",
    "task",
    "trace",
    "wrap_openai",
]
