"""Commit and revert: the only code that writes learned changes.

    commit(change set with an accept verdict)
      1. check every delta still applies (the file / item is what the learner saw)
      2. write artifact files + re-rendered playbooks, one git commit whose trailers
         carry the change set id, provenance and verdict          (the audit trail)
      3. one store transaction: item deltas + ledger rows + the version record
    revert(version)
      = a new change set of the inverted deltas, committed the same way, so history
        only grows and "why was this undone?" is answerable too.

If the process dies between 2 and 3, `recover()` finds the git commit whose change set
has no version and finishes step 3 (it runs whenever a Committer is made).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from crystallise.errors import ArtifactError, NotFoundError, ProtectedError, ValidationError
from crystallise.governance.protect import APPEND_ONLY, check_protected, is_protected_path
from crystallise.governance.review import PendingReview, load_rules, requires_review
from crystallise.home import Home
from crystallise.types import ChangeSet, Delta, Item, Verdict, Version, now

__all__ = ["Committer", "playbook_path", "render_playbook"]

TRAILER_CS = "Crystallise-Changeset"
TRAILER_PROV = "Crystallise-Provenance"
TRAILER_VERDICT = "Crystallise-Verdict"
TRAILER_LEARNER = "Crystallise-Learner"


def playbook_path(level: str, owner: str) -> str:
    return f"context/{level}/{owner}/playbook.md"


def render_playbook(level: str, owner: str, items: Iterable[Item]) -> str:
    """Active bullets by section, with ids so a diff shows which item changed."""
    by_section: dict[str, list[Item]] = {}
    for it in sorted(items, key=lambda i: (i.section, i.created_at, i.id)):
        if it.status == "active":
            by_section.setdefault(it.section, []).append(it)
    lines = [f"# Playbook — {level} {owner}", ""]
    for section, its in sorted(by_section.items()):
        lines += [f"## {section}", ""] + [f"- {it.text}  <!-- {it.id} -->" for it in its] + [""]
    return "\n".join(lines)


def _owner(item: dict[str, Any]) -> tuple[str, str] | None:
    level = item.get("level")
    if level == "agent":
        return "agent", item.get("agent_id") or "default"
    if level == "org" and item.get("org_id"):
        return "org", item["org_id"]
    return None  # user-level items never enter git


class Committer:
    """Applies accepted change sets as versions; reverts versions."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.store = home.store
        self.repo = home.repo
        self.recover()

    # -- commit ----------------------------------------------------------------------------
    def commit(self, cs: ChangeSet) -> Version:
        if cs.verdict is None or cs.verdict.decision != "accept":
            raise ValidationError(
                f"change set {cs.id} has no accept verdict ({cs.verdict.decision if cs.verdict else 'not gated'}): "
                "only gated change sets are committed; run it through the gate or approve it in review"
            )
        # One committer at a time (threads and processes): the protection and staleness checks,
        # the rendered playbooks, the git commit and the version number all see the same state.
        with self.repo.transaction():
            self._refuse_protected(cs)
            self._hold_for_review(cs)
            return self._commit_locked(cs)

    def _commit_locked(self, cs: ChangeSet) -> Version:
        files = self._files_after(cs.deltas)
        cs.status = "accepted"
        self.store.save_changeset(cs)
        sha = self.repo.commit(files, self._message(cs), self._trailers(cs)) if files else None
        version = Version(
            number=0,
            changeset_id=cs.id,
            commit=sha or "",
            message=cs.summary or cs.learner,
            provenance=list(cs.provenance),
            verdict=cs.verdict.to_dict(),
            reverts=cs.evidence.get("reverts"),
        )
        return self.store.add_version(version, cs)

    def _hold_for_review(self, cs: ChangeSet) -> None:
        """A learned change set under a review rule waits for a person (governance/review.py)."""
        rule = requires_review(cs, load_rules(self.home.config))
        if rule is None:
            return
        cs.status = "needs_review"
        cs.evidence = {**cs.evidence, "review": {"required_by": rule.describe(), "at": now()}}
        self.store.save_changeset(cs)
        raise PendingReview(cs, rule)

    def _refuse_protected(self, cs: ChangeSet) -> None:
        """Graders, existing eval cases and logs are outside a learner's reach, whatever the gate said."""
        violations = check_protected(cs, read=self.repo.read)
        if not violations:
            return
        reason = "refused: " + "; ".join(str(v) for v in violations)
        cs.verdict = Verdict(decision="reject", reason=reason, details={"protected": [str(v) for v in violations]})
        cs.status = "rejected"
        self.store.save_changeset(cs)
        raise ProtectedError(f"change set {cs.id} from learner {cs.learner!r} {reason}")

    def _files_after(self, deltas: list[Delta]) -> dict[str, str | None]:
        files: dict[str, str | None] = {}
        owners: set[tuple[str, str]] = set()
        for d in deltas:
            if d.target == "artifact":
                if not d.path:
                    raise ValidationError("artifact delta without a path")
                current = self.repo.read(d.path)
                if current != d.before:
                    raise ArtifactError(
                        f"{d.path} changed since the change set was proposed: re-run the learner on the current version"
                    )
                files[d.path] = d.after
            else:
                current_item = self._item_or_none(d.item_id)
                before = current_item.to_dict() if current_item else None
                if d.op != "add" and not _same_item(before, d.before):
                    raise ArtifactError(
                        f"item {d.item_id} changed since the change set was proposed: re-run the learner"
                    )
                for snap in (d.before, d.after):
                    if snap and _owner(snap):
                        owners.add(_owner(snap))  # type: ignore[arg-type]
        for level, owner in sorted(owners):
            files[playbook_path(level, owner)] = render_playbook(level, owner, self._items_after(level, owner, deltas))
        return files

    def _items_after(self, level: str, owner: str, deltas: list[Delta]) -> list[Item]:
        kw = {"agent": owner} if level == "agent" else {"org": owner}
        statuses = ("active", "retired", "quarantined", "candidate")
        items = {it.id: it for it in self.store.query_items(levels=(level,), status=statuses, **kw)}
        for d in deltas:
            if d.target == "item" and d.item_id:
                if d.after is None:
                    items.pop(d.item_id, None)
                elif _owner(d.after) == (level, owner):
                    items[d.item_id] = Item.from_dict(d.after)
        return list(items.values())

    def _item_or_none(self, item_id: str | None) -> Item | None:
        if not item_id:
            return None
        try:
            return self.store.get_item(item_id)
        except NotFoundError:
            return None

    @staticmethod
    def _message(cs: ChangeSet) -> str:
        subject = (cs.summary or f"{cs.learner}: {len(cs.deltas)} deltas").splitlines()[0][:72]
        body = [f"{cs.layer} layer, learner {cs.learner}, {len(cs.deltas)} delta(s)."]
        if cs.verdict:
            body.append(f"Gate: {cs.verdict.reason}")
        return subject + "\n\n" + "\n".join(body)

    @staticmethod
    def _trailers(cs: ChangeSet) -> dict[str, str]:
        trailers = {TRAILER_CS: cs.id, TRAILER_LEARNER: cs.learner}
        if cs.provenance:
            more = f" (+{len(cs.provenance) - 20} more in the store)" if len(cs.provenance) > 20 else ""
            trailers[TRAILER_PROV] = ", ".join(cs.provenance[:20]) + more
        if cs.verdict:
            trailers[TRAILER_VERDICT] = cs.verdict.reason.replace("\n", " ")
        return trailers

    # -- revert ----------------------------------------------------------------------------
    def revert(self, number: int, *, reason: str = "requested by the user") -> Version:
        version = self.store.get_version(number)
        if version.reverted_by:
            raise ValidationError(f"version {number} was already reverted by version {version.reverted_by}")
        cs = self.store.get_changeset(version.changeset_id)
        # Eval cases recorded by the version stay: they are evidence about the task, not part of
        # the change (and an append-only file cannot be shortened, by a revert either).
        undo = [d.inverted() for d in reversed(cs.deltas) if not is_protected_path(d.path, APPEND_ONLY)]
        for d in undo:
            if d.target == "item":
                d.op = "add" if d.before is None else "update"
        verdict = Verdict(decision="accept", reason=f"revert of version {number}: {reason}")
        revert_cs = ChangeSet(
            learner="revert",
            layer=cs.layer,
            deltas=undo,
            summary=f"Revert version {number}: {cs.summary or cs.learner}"[:200],
            scope=cs.scope,
            provenance=list(cs.provenance),
            evidence={"reverts": number},
            verdict=verdict,
        )
        new = self.commit(revert_cs)
        self.store.mark_reverted(number, new.number)
        return new

    # -- recovery ----------------------------------------------------------------------------
    def recover(self) -> list[Version]:
        """Finish versions whose git commit landed but whose store record did not."""
        done: list[Version] = []
        if not self.repo.exists():
            return done
        with self.repo.transaction():  # a commit in flight in another process is not a crash
            return self._recover_locked(done)

    def _recover_locked(self, done: list[Version]) -> list[Version]:
        for info in reversed(self.repo.log(limit=20)):  # oldest first: numbers follow git's order
            for cs_id in info.trailers.get(TRAILER_CS, []):
                try:
                    cs = self.store.get_changeset(cs_id)
                except NotFoundError:
                    continue
                if cs.status == "committed":
                    continue
                v = Version(
                    number=0,
                    changeset_id=cs.id,
                    commit=info.sha,
                    message=cs.summary or cs.learner,
                    provenance=list(cs.provenance),
                    verdict=cs.verdict.to_dict() if cs.verdict else None,
                    reverts=cs.evidence.get("reverts"),
                )
                done.append(self.store.add_version(v, cs))
        for v in self.store.list_versions(limit=20):  # a revert recorded, its target not yet marked
            if v.reverts and self.store.get_version(v.reverts).reverted_by is None:
                self.store.mark_reverted(v.reverts, v.number)
        return done


def _same_item(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal apart from the credit counters and timestamps, which move without deltas."""
    if a is None or b is None:
        return a is b
    skip = {"shown", "helpful", "harmful", "updated_at"}
    return json.dumps({k: v for k, v in a.items() if k not in skip}, sort_keys=True, default=str) == json.dumps(
        {k: v for k, v in b.items() if k not in skip}, sort_keys=True, default=str
    )
