"""The seeded home of the web UI and API tests: it lives in `crystallise.testing.seed` (the bench uses it too)."""

from crystallise.testing.seed import Seeded, seed

__all__ = ["Seeded", "seed"]
