"""Moved to `crystallise.engine.committer` (kept as a re-export for one release)."""

from crystallise.engine.committer import *  # noqa: F403
from crystallise.engine.committer import TRAILER_CS, TRAILER_LEARNER, TRAILER_PROV, TRAILER_VERDICT  # noqa: F401
from crystallise.engine.committer import __all__  # noqa: F401
