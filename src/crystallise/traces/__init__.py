"""Observe: traces, spans and feedback, recorded into the store passed in.

`crystallise.trace` and `crystallise.wrap_openai` (crystallise.engine.observe) bind these to a home.
"""

from crystallise.traces.background import BackgroundWriter
from crystallise.traces.sdk import Recording, TraceHandle, TraceWriter, current_trace, recording

__all__ = ["BackgroundWriter", "Recording", "TraceHandle", "TraceWriter", "current_trace", "recording"]
