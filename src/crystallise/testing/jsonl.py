"""The one JSONL reader of the benchmarks and tests.

    for n, row in read_jsonl(Path("stream.jsonl")):    # n: the 1-based line number, for error messages
        ...

Lines are split on "\\n" only: a JSON string may hold U+2028 or a lone "\\r" (both valid inside
JSON text), and `str.splitlines` would cut the record there. Blank lines are skipped; a line that
is not JSON raises `ValidationError` naming the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crystallise.errors import ValidationError

__all__ = ["read_jsonl"]


def read_jsonl(path: Path, *, what: str = "JSON object",
               hint: str = "pass --data PATH to a JSONL file") -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of `path`, read lazily.

    `what` names a record in the error for a bad line ("each line must be one <what>"); `hint`
    is the fix printed when the file does not exist.
    """
    if not path.is_file():
        raise ValidationError(f"no such data file: {path} ({hint})")
    with path.open(encoding="utf-8", newline="\n") as f:  # newline="\n": lines end at "\n" only
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValidationError(f"{path}, line {n}: not valid JSON ({e.msg}); each line must be one {what}"
                                      ) from e
            yield n, value
