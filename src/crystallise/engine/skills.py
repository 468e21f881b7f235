"""Skills against a home: import, list, load, export, and learned skills committed.

The rules (the SKILL.md format, what an import may contain, which procedures become skills and
how they are gated) are `crystallise.context.skills` and `crystallise.context.skill_learner`;
this module reads the home's artifact repository and commits what they decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from crystallise.context.skill_learner import Runner, SkillLearner
from crystallise.context.skills import Skill, import_changeset, read_skill
from crystallise.context.skills import export_skills as _export
from crystallise.context.skills import list_skills as _list
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.governance.review import PendingReview
from crystallise.types import ChangeSet, Trace, Version

__all__ = ["export_skills", "import_skills", "learn_skills", "list_skills", "load_skill"]


def import_skills(home: Home, path: Path, *, agent: str = "default", org: str | None = None,
                  trust: float = 0.5) -> tuple[Version | None, list[Skill], list[str]]:
    """Import one skill folder or a folder of them as one version; all or nothing.

    Returns (the version or None if nothing changed, the skills, skipped binary files).
    """
    cs, skills, skipped = import_changeset(home.repo, home.store, path, agent=agent, org=org, trust=trust)
    if not cs.deltas:
        return None, skills, skipped
    return Committer(home).commit(cs), skills, skipped


def list_skills(home: Home, *, agent: str | None = None, org: str | None = None) -> list[Skill]:
    """Skills of the home visible to a scope (all of them when neither is given), by name."""
    return _list(home.repo, agent=agent, org=org)


def load_skill(name: str, *, home: Home | None = None, agent: str | None = None, org: str | None = None) -> Skill:
    """A skill with its body: the progressive-disclosure step (only names and descriptions are in packs).

    With `agent`/`org`, the skill must be visible to that scope (NotFoundError otherwise).

    >>> load_skill("pdf-processing", agent="support").body   # doctest: +SKIP
    '# PDF processing\\n...'
    """
    return read_skill((home or Home.from_env()).repo, name, agent=agent, org=org)


def export_skills(home: Home, dest: Path, *, names: list[str] | None = None, agent: str | None = None,
                  org: str | None = None) -> list[Path]:
    """Write skill folders (SKILL.md + their files, exactly as stored) under `dest`; returns the folders."""
    return _export(home.repo, dest, names=names, agent=agent, org=org)


def learn_skills(home: Home, traces: Sequence[Trace], *, learner: SkillLearner | None = None,
                 agent: str = "default", org: str | None = None,
                 runner: Runner | None = None) -> list[tuple[ChangeSet, Version | None]]:
    """Propose, gate and commit: accepted skills become versions; the rest are kept as evidence."""
    results: list[tuple[ChangeSet, Version | None]] = []
    for cs in (learner or SkillLearner()).gated(home.repo, home.store, traces, agent=agent, org=org, runner=runner):
        if cs.verdict is not None and cs.verdict.decision == "accept":
            try:
                results.append((cs, Committer(home).commit(cs)))
            except PendingReview:  # a review rule holds learned skills: it waits, saved, for a person
                results.append((cs, None))
        else:
            cs.status = "rejected" if cs.verdict is not None and cs.verdict.decision == "reject" else "needs_review"
            home.store.save_changeset(cs)
            results.append((cs, None))
    return results
