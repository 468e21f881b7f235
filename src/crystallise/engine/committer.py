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

User-level change sets (every delta about one user's items) never become versions and
never enter git (user data must stay deletable): `commit` sends them to the store's own
ledger (`Store.commit_user_changeset`) after the same staleness check, and returns a
`Version` with number 0 and no commit to say so. A mixed change set (an undo by user, say)
becomes a version of its agent/org/artifact deltas while its user-level deltas go to the
user ledger, one change set per user. `revert_user(changeset_id)` undoes a user-level
change the way `revert` undoes a version: by committing the inverted deltas.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from crystallise.context.guard import guard_changeset
from crystallise.errors import ArtifactError, NotFoundError, ProtectedError, ValidationError
from crystallise.governance.protect import APPEND_ONLY, Actor, check_protected, is_protected_path
from crystallise.governance.review import PendingReview, load_rules, requires_review
from crystallise.engine import jobctx
from crystallise.engine.home import Home
from crystallise.store.engine import org_scope
from crystallise.store.userdata import is_tombstone
from crystallise.types import ChangeSet, Delta, Item, Scope, Verdict, Version, now

__all__ = ["Committer", "playbook_path", "render_playbook"]

TRAILER_CS = "Crystallise-Changeset"
TRAILER_PROV = "Crystallise-Provenance"
TRAILER_VERDICT = "Crystallise-Verdict"
TRAILER_LEARNER = "Crystallise-Learner"
TRAILER_ACTOR = "Crystallise-Actor"

_F = TypeVar("_F", bound=Callable[..., Any])


def _unscoped(method: _F) -> _F:
    """Run `method` outside any org's database scope (PostgreSQL row-level security, store
    migrations 5 and 7): the committer numbers versions and checks staleness over every row, and
    whether a caller may commit, revert or purge this was decided before (engine/access.py)."""

    @functools.wraps(method)
    def inner(*args: Any, **kwargs: Any) -> Any:
        with org_scope(None):
            return method(*args, **kwargs)

    return inner  # type: ignore[return-value]


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

    def __init__(self, home: Home, *, recover: bool = True, actor: Actor | None = None) -> None:
        self.home = home
        self.actor = actor  # the authenticated person every commit of this committer acts for (None: learners)
        self.store = home.store
        self.repo = home.repo
        if recover:  # online user-level writes skip it: they never touch git
            self.recover()

    # -- commit ----------------------------------------------------------------------------
    @_unscoped
    def commit(self, cs: ChangeSet, *, actor: Actor | None = None) -> Version:
        """Commit an accepted change set: a version (git + store), or for a user-level change set
        the store's user ledger (returned as a Version with number 0 and no commit).

        `actor` (or the committer's own): the authenticated person this commit is for; without
        one the change set is a learner's, whatever its `learner` name says (governance/protect.py)."""
        actor = actor or self.actor
        evidence = {k: v for k, v in cs.evidence.items() if k != "actor"}  # never self-declared
        cs.evidence = {**evidence, "actor": actor.to_dict()} if actor is not None else evidence
        if cs.verdict is None or cs.verdict.decision != "accept":
            raise ValidationError(
                f"change set {cs.id} has no accept verdict ({cs.verdict.decision if cs.verdict else 'not gated'}): "
                "only gated change sets are committed; run it through the gate or approve it in review"
            )
        redactor = getattr(self.store, "redactor", None)
        if redactor is not None:  # before git sees anything: the playbook is rendered from these
            cs.deltas = [redactor.redact_delta(d) for d in cs.deltas]
        jobctx.stamp(cs)  # inside a job: the job id + what it changes (a re-run never commits it twice)
        if _user_level(cs):
            self._hold_for_review(cs, actor)  # a review rule for user-level learning holds these too
            guard_changeset(cs)  # a learned item never goes live with instruction-like text (context/guard.py)
            return self._commit_user(cs)
        # One committer at a time (threads and processes): the protection and staleness checks,
        # the rendered playbooks, the git commit and the version number all see the same state.
        with self.repo.transaction():
            if (number := jobctx.already_committed(self.store, cs)) is not None:
                return self.store.get_version(number)  # this job committed this change already
            self._refuse_protected(cs, actor)
            self._hold_for_review(cs, actor)
            guard_changeset(cs)
            return self._commit_locked(cs)

    def _commit_user(self, cs: ChangeSet) -> Version:
        self._check_fresh(cs.deltas)
        users = {(snap.get("user_id"), snap.get("org_id")) for d in cs.deltas for snap in (d.before, d.after)
                 if isinstance(snap, dict) and snap.get("level") == "user"}
        if len(users) == 1 and not cs.scope.user:
            user, org = next(iter(users))
            cs.scope = Scope(agent=cs.scope.agent, org=org, user=user)
        stored = self.store.commit_user_changeset(cs)
        cs.status = stored.status
        return Version(number=0, changeset_id=cs.id, commit="", message=cs.summary or cs.learner,
                       provenance=list(cs.provenance), verdict=cs.verdict.to_dict() if cs.verdict else None)

    def _commit_locked(self, cs: ChangeSet) -> Version:
        """A version of `cs`; user-level deltas in it (an undo by user, say) go to the user ledger."""
        parts = _split_user_parts(cs)
        for part in parts:
            self._check_fresh(part.deltas)
        version = self._commit_version(cs)
        for part in parts:
            self.store.commit_user_changeset(part)
        return version

    def _commit_version(self, cs: ChangeSet) -> Version:
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

    def _check_fresh(self, deltas: list[Delta]) -> None:
        """Every item delta's `before` is still what the store holds (a stale change set is refused)."""
        for d in deltas:
            if d.target != "item" or d.op == "add":
                continue
            current_item = self._item_or_none(d.item_id)
            before = current_item.to_dict() if current_item else None
            if not _same_item(before, d.before):
                raise ArtifactError(
                    f"item {d.item_id} changed since the change set was proposed: re-run the learner"
                )

    def _hold_for_review(self, cs: ChangeSet, actor: Actor | None) -> None:
        """A learned change set under a review rule waits for a person (governance/review.py)."""
        rule = requires_review(cs, load_rules(self.home.config), actor)
        if rule is None:
            return
        cs.status = "needs_review"
        cs.evidence = {**cs.evidence, "review": {"required_by": rule.describe(), "at": now()}}
        self.store.save_changeset(cs)
        raise PendingReview(cs, rule)

    def _refuse_protected(self, cs: ChangeSet, actor: Actor | None) -> None:
        """Graders, existing eval cases and logs are outside a learner's reach, whatever the gate said."""
        violations = check_protected(cs, read=self.repo.read, actor=actor)
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
        self._check_fresh(deltas)
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
                for snap in (d.before, d.after):
                    if snap and _owner(snap):
                        owners.add(_owner(snap))  # type: ignore[arg-type]
        for level, owner in sorted(owners):
            files[playbook_path(level, owner)] = render_playbook(level, owner, self._items_after(level, owner, deltas))
        return files

    def _items_after(self, level: str, owner: str, deltas: list[Delta]) -> list[Item]:
        kw = {"agent": owner} if level == "agent" else {"org": owner}
        statuses = ("active", "retired", "quarantined", "candidate")
        items = {it.id: it for it in self.store.query_items(levels=(level,), status=statuses, limit=1_000_000, **kw)}
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
        actor = cs.evidence.get("actor")
        if isinstance(actor, dict):
            trailers[TRAILER_ACTOR] = f"{actor.get('via')}:{actor.get('name')}".replace("\n", " ")
        if cs.provenance:
            more = f" (+{len(cs.provenance) - 20} more in the store)" if len(cs.provenance) > 20 else ""
            trailers[TRAILER_PROV] = ", ".join(cs.provenance[:20]) + more
        if cs.verdict:
            trailers[TRAILER_VERDICT] = cs.verdict.reason.replace("\n", " ")
        return trailers

    # -- revert ----------------------------------------------------------------------------
    @_unscoped
    def revert(self, number: int, *, reason: str = "requested by the user", actor: Actor | None = None) -> Version:
        """Undo version `number` by committing its inverse (`actor`: the person asking; without
        one, a revert that would touch graders, cases or logs is refused like a learner's)."""
        version = self.store.get_version(number)
        if version.reverted_by:
            raise ValidationError(f"version {number} was already reverted by version {version.reverted_by}")
        cs = self.store.get_changeset(version.changeset_id)
        undo = _inverse(cs.deltas)
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
        if _user_level(revert_cs):  # a version of user items only (older stores): its undo is a version too
            with self.repo.transaction():
                new = self._commit_version(revert_cs)
        else:
            new = self.commit(revert_cs, actor=actor)
        self.store.mark_reverted(number, new.number)
        return new

    @_unscoped
    def revert_user(self, changeset_id: str, *, reason: str = "requested by the user") -> ChangeSet:
        """Undo a user-level change set of the store's user ledger by committing its inverse there."""
        cs = self.store.get_changeset(changeset_id)
        if not cs.scope.user or cs.status != "committed":
            hint = (" (it is not committed)" if cs.status != "committed" else
                    ": agent/org changes are versions, undo them with `crystallise revert N`")
            raise ValidationError(f"change set {changeset_id} is not a user-level change{hint}")
        done = self.store.changeset_reverted_by(changeset_id)
        if done:
            raise ValidationError(f"change set {changeset_id} was already reverted by {done}")
        undo = ChangeSet(
            learner="revert",
            layer=cs.layer,
            deltas=_inverse(cs.deltas),
            summary=f"Revert {changeset_id}: {cs.summary or cs.learner}"[:200],
            scope=cs.scope,
            provenance=list(cs.provenance),
            evidence={"reverts_changeset": changeset_id},
            verdict=Verdict(decision="accept", reason=f"revert of {changeset_id}: {reason}"),
        )
        if not undo.deltas:
            raise ValidationError(f"change set {changeset_id} has nothing left to revert (its items were purged)")
        try:
            self._commit_user(undo)
        except ArtifactError as error:
            raise ValidationError(
                f"cannot revert {changeset_id}: {error}. A later change touched the same item; revert the later "
                f"change first (see `crystallise items history --user {cs.scope.user}`)"
            ) from None
        self.store.mark_changeset_reverted(changeset_id, undo.id)
        return undo

    # -- purge (data deletion) -----------------------------------------------------------------
    @_unscoped
    def purge(self, doomed: list[Item], *, reason: str) -> Version | None:
        """Take agent/org items out of the served knowledge for a data-deletion request.

        Re-renders the playbooks of their owners without them and commits that as a version
        whose change set holds no item text (so the store keeps none); the caller then
        hard-deletes the rows (`Store.delete_user_data(purge_items=...)`). Git history keeps
        the old commits: it is the audit trail of agent knowledge (docs/context.md).
        """
        with self.repo.transaction():
            return self._purge_locked(doomed, reason)

    def _purge_locked(self, doomed: list[Item], reason: str) -> Version | None:
        gone = {it.id for it in doomed}
        owners = sorted({o for it in doomed if (o := _owner(it.to_dict()))})
        files: dict[str, str | None] = {}
        for level, owner in owners:
            kept = [it for it in self._items_after(level, owner, []) if it.id not in gone]
            files[playbook_path(level, owner)] = render_playbook(level, owner, kept)
        cs = ChangeSet(
            learner="forget-user",
            layer="context",
            summary=f"Remove {len(gone)} item(s) derived only from a deleted user's traces",
            evidence={"purged_items": len(gone)},
            verdict=Verdict(decision="accept", reason=f"data deletion: {reason}"),
        )
        if not files:
            return None
        self.store.save_changeset(cs)
        sha = self.repo.commit(files, self._message(cs), self._trailers(cs))
        version = Version(number=0, changeset_id=cs.id, commit=sha or "", message=cs.summary,
                          verdict=cs.verdict.to_dict() if cs.verdict else None)
        return self.store.add_version(version, cs)

    @_unscoped
    def erase(self, files: dict[str, str | None], *, reason: str, evidence: dict[str, Any]) -> Version | None:
        """Write a data-deletion version: `files` (rows of a deleted user taken out of task files,
        derived programs retired) committed as they are, past the append-only rule (a deletion is
        not a learner rewriting its grader), with a change set that holds no file text (so the store
        keeps none). Like `purge`, git history keeps the old commits unless it is rewritten."""
        if not files:
            return None
        with self.repo.transaction():
            cs = ChangeSet(learner="forget-user", layer="harness",
                           summary=f"Remove a deleted user's data from {len(files)} task file(s)",
                           evidence=evidence, verdict=Verdict(decision="accept", reason=f"data deletion: {reason}"))
            self.store.save_changeset(cs)
            sha = self.repo.commit(files, self._message(cs), self._trailers(cs))
            if sha is None:
                return None
            version = Version(number=0, changeset_id=cs.id, commit=sha, message=cs.summary,
                              verdict=cs.verdict.to_dict() if cs.verdict else None)
            return self.store.add_version(version, cs)

    # -- recovery ----------------------------------------------------------------------------
    @_unscoped
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


def _user_level(cs: ChangeSet) -> bool:
    """Whether every delta of `cs` is an item delta about user-level items (and there is one).

    A change set mixing user-level deltas with agent/org ones becomes a version of the
    latter, its user-level part going to the user ledger (`_split_user_parts`): user data
    never enters a version.
    """
    kinds = set()
    for d in cs.deltas:
        if d.target != "item":
            kinds.add("artifact")
            continue
        levels = {snap.get("level") for snap in (d.before, d.after) if isinstance(snap, dict) and "level" in snap}
        kinds.add("user" if levels == {"user"} else "other" if levels else "unknown")
    return kinds == {"user"}


def _split_user_parts(cs: ChangeSet) -> list[ChangeSet]:
    """Take the user-level item deltas out of a mixed change set: one user-ledger change set per user.

    What stays in `cs` becomes the version; a version never belongs to a user, so its scope
    loses the user id (user data must stay deletable without holes in the version history).
    """
    groups: dict[tuple[str, str | None], list[Delta]] = {}
    rest: list[Delta] = []
    for d in cs.deltas:
        snaps = [s for s in (d.before, d.after) if isinstance(s, dict) and "level" in s]
        if d.target == "item" and snaps and all(s.get("level") == "user" for s in snaps):
            groups.setdefault((snaps[0].get("user_id"), snaps[0].get("org_id")), []).append(d)
        else:
            rest.append(d)
    if cs.scope.user:
        cs.scope = Scope(agent=cs.scope.agent, org=cs.scope.org)
    if not groups:
        return []
    parts = [
        ChangeSet(learner=cs.learner, layer=cs.layer, deltas=deltas, summary=f"{cs.summary} (user-level part)"[:200],
                  scope=Scope(agent=cs.scope.agent, org=org, user=user), provenance=list(cs.provenance),
                  evidence={"part_of": cs.id}, verdict=cs.verdict)
        for (user, org), deltas in groups.items()
    ]
    cs.deltas = rest
    cs.evidence = {**cs.evidence, "user_ledger_parts": [p.id for p in parts]}
    return parts


def _inverse(deltas: list[Delta]) -> list[Delta]:
    """The deltas that undo `deltas`, last first. Deltas about purged items are skipped, and so are
    eval cases the version recorded: they are evidence about the task, not part of the change (and
    an append-only file cannot be shortened, by a revert either)."""
    undo = []
    for d in reversed(deltas):
        if d.target == "item" and (is_tombstone(d.before) or is_tombstone(d.after)):
            continue
        if is_protected_path(d.path, APPEND_ONLY):
            continue
        inv = d.inverted()
        if inv.target == "item":
            inv.op = "add" if inv.before is None else "update"
        undo.append(inv)
    return undo


def _same_item(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal apart from the credit counters and timestamps, which move without deltas."""
    if a is None or b is None:
        return a is b
    skip = {"shown", "helpful", "harmful", "updated_at"}
    return json.dumps({k: v for k, v in a.items() if k not in skip}, sort_keys=True, default=str) == json.dumps(
        {k: v for k, v in b.items() if k not in skip}, sort_keys=True, default=str
    )
