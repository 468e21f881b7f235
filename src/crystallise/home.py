"""Moved to `crystallise.engine.home` (kept as a re-export for one release)."""

from crystallise.engine.home import *  # noqa: F403
from crystallise.engine.home import __all__  # noqa: F401
