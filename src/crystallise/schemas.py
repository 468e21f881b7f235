"""One JSON Schema validator factory, used everywhere a schema is checked.

Schemas come from task specs, learned output schemas and eval-case verifiers — some of them
written from data. A `$ref` may name any URI; jsonschema would fetch a remote one (an HTTP
request from the host to wherever the schema says). Here every reference that is not inside the
schema itself is refused: the schema is then invalid for that value, and nothing is fetched.

    >>> validator({"type": "string"}).is_valid("x")
    True
"""

from __future__ import annotations

from typing import Any

import jsonschema
from referencing import Registry
from referencing.exceptions import NoSuchResource

__all__ = ["validator"]


def _refuse(uri: str) -> Any:
    raise NoSuchResource(ref=uri)


_REGISTRY: Registry = Registry(retrieve=_refuse)  # type: ignore[call-arg]


def validator(schema: Any, *, check: bool = False) -> Any:
    """A validator for `schema` that resolves only references inside it; `check` first raises
    `jsonschema.SchemaError` for a schema that is not valid JSON Schema."""
    cls = jsonschema.validators.validator_for(schema)
    if check:
        cls.check_schema(schema)
    return cls(schema, registry=_REGISTRY)
