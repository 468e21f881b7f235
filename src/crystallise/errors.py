"""Every error crystallise raises on purpose, as one tree.

    CrystalliseError
    ├── UserError                 bad input or set-up; the message names the fix
    │   ├── ConfigError           missing home, bad setting, unknown model name
    │   ├── ValidationError       malformed record, schema-violating value, bad scope
    │   └── NotFoundError         unknown trace / version / task / item
    └── RuntimeFailure            something outside the caller's control failed
        ├── BackendError          a model backend failed (unreachable endpoint, bad reply)
        │   └── ModelOutputError  the model's output broke the schema, even after repair
        ├── StoreError            the trace/item store failed
        ├── ArtifactError         the git artifact repository failed or conflicts
        ├── ProtectedError        a change set touched a grader, an eval case or a log
        └── SandboxError          crystallised code broke a limit

`UserError`s are the caller's to fix and print without a traceback in the CLI;
`RuntimeFailure`s are ours or the environment's.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRecorded",
    "ArtifactError",
    "BackendError",
    "ConfigError",
    "CrystalliseError",
    "ModelOutputError",
    "NotFoundError",
    "ProtectedError",
    "RuntimeFailure",
    "SandboxError",
    "StoreError",
    "UserError",
    "ValidationError",
]


class CrystalliseError(Exception):
    """Root of every error crystallise raises on purpose."""


class UserError(CrystalliseError):
    """Bad input or set-up; the message says how to fix it."""


class ConfigError(UserError):
    """Missing home, bad setting or unknown model name."""


class ValidationError(UserError):
    """A value does not have the shape it must have."""


class AlreadyRecorded(ValidationError):
    """A record with this id was stored before (records are immutable: a retry of a write that succeeded)."""


class NotFoundError(UserError):
    """A named thing (trace, version, task, item) does not exist."""


class RuntimeFailure(CrystalliseError):
    """Something outside the caller's control failed."""


class BackendError(RuntimeFailure):
    """A model backend failed: unreachable, refused, or answered nonsense."""


class ModelOutputError(BackendError):
    """The model's output violated the requested schema, even after a repair attempt."""

    def __init__(self, message: str, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw


class StoreError(RuntimeFailure):
    """The trace/item store failed."""


class ArtifactError(RuntimeFailure):
    """The git artifact repository failed, or a change conflicts with a later one."""


class SandboxError(RuntimeFailure):
    """Crystallised code broke a limit (time, memory, imports)."""


class ProtectedError(RuntimeFailure):
    """A change set tried to change what learners may not: graders, existing eval cases, logs.
    It is refused by the committer and kept as rejected evidence (`governance/protect.py`)."""
