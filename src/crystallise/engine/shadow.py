"""Shadow checks: for a share of code answers, ask the LLM too, off the hot path, and record what it said.

    checker = ShadowChecker(home, "ratio", metric, rate=0.05)        # background thread
    if checker.wanted(key):                                          # a stable 5 % of answers
        checker.submit(trace_id=..., value=x, code_output=out, runtime=rt, scope=scope)
    ...
    checker.flush()                                                  # before reading evidence

The caller has already returned the code's answer (and its trace is written) when the
check runs: `submit` only queues it. A worker thread asks `runtime.llm_answer` (the task
as the LLM would serve it, no code), compares with the task's metric, and writes one
trace named `shadow:<task>` whose metadata says `shadow_of` (the answer's trace id) and
whose single LLM span carries `agree`, `code_output` and the LLM's output. Traces are
immutable once written, which is why the check is its own trace and not a span added
to the answer's. At most `max_pending` checks wait; more are dropped and counted (the
hot path never blocks on the LLM). `background=False` runs the check inline, for tests
and benchmarks that want a fixed order of model calls.

A disagreement is evidence, not a verdict: the LLM may be the one that is wrong (on ACE
Formula it nearly always is). Once feedback gives the right answer, the lifecycle turns
the disagreement into an eval case (`grades.evidence(...).new_cases`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from crystallise.errors import ValidationError
from crystallise.harness.answers import shadow_name
from crystallise.engine.home import Home
from crystallise.types import Scope, Span, Trace, now

__all__ = ["ShadowChecker", "shadow_name"]


class ShadowChecker:
    """Shadow-checks a stable share of a task's code answers with the LLM (see the module docstring)."""

    def __init__(self, home: Home, task: str, metric: Callable[[Any, Any], bool], *, rate: float,
                 background: bool = True, max_pending: int = 64) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValidationError(f"shadow rate must be in [0, 1], e.g. 0.05; got {rate!r}")
        self.home = home
        self.task = task
        self.metric = metric
        self.rate = float(rate)
        self.background = background
        self.max_pending = max_pending
        self.submitted = self.done = self.dropped = self.failed = 0
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def wanted(self, key: str) -> bool:
        """Whether this answer is one of the shadow-checked share: a hash of `key` (the loop passes the
        answer's number in the stream and its input, so a rerun of the same stream checks the same answers)."""
        if self.rate <= 0:
            return False
        if self.rate >= 1:
            return True
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < self.rate

    def submit(self, *, trace_id: str, value: Any, code_output: Any, runtime: Any, scope: Scope,
               record: dict[str, Any] | None = None) -> bool:
        """Queue (or, inline, run) one check; False when it was dropped because too many wait."""
        job = (trace_id, value, code_output, runtime, scope, record)
        if not self.background:
            self.submitted += 1
            self._check(*job)
            return True
        with self._lock:
            self._pending = {f for f in self._pending if not f.done()}
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                return False
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"shadow-{self.task}")
            self.submitted += 1
            self._pending.add(self._pool.submit(self._check, *job))
        return True

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued check is written (the loop calls this before it reads evidence)."""
        with self._lock:
            pending = set(self._pending)
        if pending:
            wait(pending, timeout=timeout)

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _check(self, trace_id: str, value: Any, code_output: Any, runtime: Any, scope: Scope,
               record: dict[str, Any] | None) -> None:
        name = shadow_name(self.task)
        span = Span(name=name, kind="llm", input=value, attributes={"shadow_of": trace_id, "code_output": code_output})
        start = time.perf_counter()
        try:
            ans = runtime.llm_answer(value, record=record)
        except Exception as e:  # noqa: BLE001 - a failed check is recorded, never raised into serving
            span.error = f"{type(e).__name__}: {e}"
            self.failed += 1
        else:
            span.output = ans.output
            agree = ans.output is not None and bool(self.metric(code_output, ans.output))
            span.attributes.update(agree=agree, llm_calls=ans.llm_calls, prompt_tokens=ans.prompt_tokens,
                                   completion_tokens=ans.completion_tokens)
        span.ended_at = now()
        span.attributes["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
        t = Trace(name=name, agent_id=scope.agent, org_id=scope.org, user_id=scope.user, input=value,
                  output=span.output, metadata={"shadow_of": trace_id, "task": self.task}, ended_at=now())
        if span.error:
            t.status, t.error = "error", span.error
        span.trace_id = t.id
        t.spans.append(span)
        try:
            self.home.store.write_trace(t)
        except Exception:  # noqa: BLE001 - a check that cannot be stored is lost evidence, not a serving error
            self.failed += 1
            return
        self.done += 1
