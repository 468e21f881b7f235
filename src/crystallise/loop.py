"""Moved to `crystallise.engine.loop` (kept as a re-export for one release)."""

from crystallise.engine.loop import *  # noqa: F403
from crystallise.engine.loop import __all__  # noqa: F401
from crystallise.engine.task import define_task  # noqa: F401
