"""Structured output above every backend: parse, validate, repair once.

Backends that can constrain decoding to a JSON schema do so (llama.cpp grammars,
`response_format` on OpenAI-compatible servers); the rest are caught here. Either
way the caller gets a value that validates, or a `ModelOutputError`:

    request + schema ─► backend ─► parse (strip ```json fences / prose, first JSON value)
                                     │ valid ─────────────────────────────► (value, completion, False)
                                     │ invalid ─► ONE repair turn with the error
                                     │              │ valid ──────────────► (value, completion, True)
                                     │              │ invalid ─► ModelOutputError(raw=...)
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import jsonschema

from crystallise.backends.base import Backend, Completion, CompletionRequest, Message
from crystallise.errors import ModelOutputError, ValidationError
from crystallise.schemas import validator

__all__ = ["complete_json", "complete_text", "extract_json"]

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_MAX_STARTS = 50  # how many '{' / '[' positions to try before giving up on prose-wrapped JSON


class _ParseFailure(Exception):
    """The reply holds no JSON value, or one that breaks the schema; the message says which."""


def extract_json(text: str) -> Any:
    """The first JSON value in a model reply: fenced, bare, or after leading prose.

    Raises `ValueError` when there is none.

    Example:

        >>> extract_json('Sure! ```json\\n{"a": 1}\\n``` Hope that helps.')
        {'a': 1}
        >>> extract_json('The answer is [1, 2] as requested')
        [1, 2]
    """
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text.strip()]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        starts = [i for i, ch in enumerate(candidate) if ch in "{["][:_MAX_STARTS]
        for start in starts:
            try:
                value, _end = decoder.raw_decode(candidate, start)
                return value
            except ValueError:
                continue
    raise ValueError("the reply contains no JSON value")


def _error_text(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def _parse(text: str, validator: Any) -> Any:
    try:
        value = extract_json(text)
    except ValueError as exc:
        raise _ParseFailure(f"{exc}; reply with a single JSON value") from None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        raise _ParseFailure(_error_text(error))
    return value


def _validator(schema: dict[str, Any]) -> Any:
    try:
        return validator(schema, check=True)  # never fetches a remote $ref
    except jsonschema.SchemaError as exc:
        raise ValidationError(
            f"the output schema is not a valid JSON schema: {exc.message}; fix the schema"
        ) from None


def complete_json(
    backend: Backend, request: CompletionRequest, schema: dict[str, Any]
) -> tuple[Any, Completion, bool]:
    """Ask `backend` for JSON matching `schema`; repair once on failure.

    Returns `(value, last_completion, repaired)`. The caller's `request` is not
    changed: a copy carries the schema (so constraining backends use it) and, for
    the repair, the bad reply plus the validation error as a follow-up turn.
    Raises `ModelOutputError` (with `.raw`, the last reply) when the repaired reply
    still fails, and `ValidationError` when `schema` itself is invalid.

    Example:

        >>> from crystallise.backends import ScriptedBackend
        >>> fake = ScriptedBackend(['{"n": "x"}', '{"n": 3}'])
        >>> schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        >>> request = CompletionRequest([Message("user", "n?")])
        >>> value, completion, repaired = complete_json(fake, request, schema)
        >>> value, repaired
        ({'n': 3}, True)
    """
    validator = _validator(schema)
    first = dataclasses.replace(request, schema=schema, messages=list(request.messages))
    completion = backend.complete(first)
    try:
        return _parse(completion.text, validator), completion, False
    except _ParseFailure as exc:
        first_error = str(exc)

    repair_messages = [
        *first.messages,
        Message("assistant", completion.text),
        Message(
            "user",
            f"Your reply did not match the required JSON schema: {first_error}\n"
            f"The schema is:\n{json.dumps(schema)}\n"
            "Reply with the corrected JSON only — no explanation, no code fences.",
        ),
    ]
    completion = backend.complete(dataclasses.replace(first, messages=repair_messages))
    try:
        return _parse(completion.text, validator), completion, True
    except _ParseFailure as exc:
        snippet = completion.text.strip().replace("\n", " ")
        snippet = snippet if len(snippet) <= 200 else snippet[:200] + "…"
        raise ModelOutputError(
            f"model {completion.model} broke the output schema even after one repair attempt: {exc} "
            f"(reply: {snippet!r}). Try a larger model (e.g. `local:qwen2.5-coder-1.5b` or an "
            "OpenAI-compatible one), or simplify the schema.",
            raw=completion.text,
        ) from None


def complete_text(backend: Backend, request: CompletionRequest) -> Completion:
    """Ask `backend` for free text; the reply comes back with surrounding whitespace stripped.

    The single place plain completions pass through, so tracing can hook in here later.

    Example:

        >>> from crystallise.backends import ScriptedBackend
        >>> complete_text(ScriptedBackend(["  hello\\n"]), CompletionRequest([Message("user", "hi")])).text
        'hello'
    """
    completion = backend.complete(request)
    return dataclasses.replace(completion, text=completion.text.strip())
