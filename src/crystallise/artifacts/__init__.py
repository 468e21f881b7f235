"""The artifact store: learned agent/org knowledge as plain text in a git repository (DESIGN.md §4)."""

from __future__ import annotations

from crystallise.artifacts.repo import ArtifactRepo, CommitInfo

__all__ = ["ArtifactRepo", "CommitInfo"]
