"""Observe: traces, spans and feedback from the SDK and the OpenAI client wrapper."""

from crystallise.traces.openai_wrap import wrap_openai
from crystallise.traces.sdk import TraceHandle, current_trace, trace

__all__ = ["TraceHandle", "current_trace", "trace", "wrap_openai"]
