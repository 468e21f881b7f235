"""`crystallise forget --user U`: hard-delete everything of one user, and what was derived only from it.

    reports = forget_user(home, "u1", org="acme")
    reports[0].counts   # {"traces": 12, "spans": 40, "feedback": 7, "items": 5, "item_deltas": 9, ...}

Deleted, in one store transaction per (user, org):

- the user's traces with their spans and feedback (and rows of any table keyed by trace_id);
- the user's items, their ledger rows and the user's change sets (the user ledger), and
  versions that only changed the user's items (from before user-level changes had a ledger
  of their own);
- agent/org items *derived only from the user*: provenance non-empty and entirely the
  user's traces (e.g. a reflection bullet learned from one of their failed runs, or an org
  memory an operator saved from their conversation). They are first taken out of the
  served knowledge by a version (`Committer.purge`: the playbook is re-rendered without
  them) and then deleted with their ledger rows;
- references elsewhere are scrubbed: the user's trace ids leave provenance lists, their
  pseudonym leaves promoted items' evidence, deltas about purged items become tombstones.

- the task files (issue 15): the user's rows leave `examples.jsonl`, `evals.jsonl` and
  `lifecycle.jsonl` of every namespace, and a program that quotes the user's strings or was
  learned from their runs is retired (`harness/forget.py`), in one data-deletion version
  (`Committer.erase`) whose change set holds no text; the loop learns the task again from the
  evidence that is left when its next runs arrive;
- the user's strings (inputs, answers, corrections) leave every change set's deltas, evidence and
  summary, and the ledger's snapshots (`Store.delete_user_data(strings=...)`);
- spans of the user still waiting for their root in the OTLP spool (`HOME/otlp-pending/`).

Kept, on purpose: agent/org items backed by other users' traces too (their provenance
loses the user's traces; a promoted lesson keeps its text, which several users
contributed), and git history, which is the audit trail of agent/org knowledge — the
commits before the deletion still hold the text. For a user who asks for it,
`rewrite_history(home, report.strings)` rewrites every commit without those strings (the
version records keep their numbers; commit shas change, so clones must re-fetch).
User-level data never enters git, so a user's own memories and traces are gone from every
table (and, on SQLite, from the file: deletes run with secure_delete and the WAL is
truncated; PostgreSQL tables are vacuumed).

A user id is unique only within an org. When the user exists in several orgs, pass the
org (or `all_orgs=True`); deletion never guesses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from crystallise.context.index import forget_user_block
from crystallise.context.items import validate_scope
from crystallise.errors import NotFoundError, ValidationError
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.engine.serving import clear_core_cache
from crystallise.harness import forget as task_files
from crystallise.types import Trace

__all__ = ["DeletionReport", "forget_user", "rewrite_history"]

SPOOL = "otlp-pending"  # api/otlp_spool.py: spans waiting for their root, one file per OTLP trace
_USER_KEYS = ("crystallise.user", "user.id", "enduser.id")


@dataclass
class DeletionReport:
    user: str
    org: str | None
    counts: dict[str, int] = field(default_factory=dict)
    purge_version: int | None = None  # the version that took derived agent/org items out of the playbooks
    strings: list[str] = field(default_factory=list, repr=False)  # what `rewrite_history` takes out of git
    programs: list[str] = field(default_factory=list)  # task folders whose program was learned from the user

    @property
    def total(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "scrubbed_rows")

    def to_dict(self) -> dict[str, object]:
        return {"user": self.user, "org": self.org, "counts": dict(self.counts), "purge_version": self.purge_version,
                "total": self.total}


def forget_user(home: Home, user: str, *, org: str | None = None, all_orgs: bool = False) -> list[DeletionReport]:
    """Hard-delete `user` (in `org`, or in every org with `all_orgs`); one report per org.

    Irreversible. Raises NotFoundError when the user has nothing stored, ValidationError when
    the user exists in several orgs and neither `org` nor `all_orgs` says which.
    """
    validate_scope("default", org, user)
    store = home.store
    orgs = store.user_orgs(user)
    if not orgs:  # nothing stored yet: spans may still wait for their root in the spool
        spooled = _forget_spool(Path(home.path) / SPOOL, user, org)
        if spooled:
            return [DeletionReport(user=user, org=org, counts={"spool_files": spooled})]
        raise NotFoundError(f"user {user!r} has no traces, items or changes in this store: nothing to delete")
    if all_orgs:
        targets = orgs
    elif org is not None:
        if org not in orgs:
            raise NotFoundError(f"user {user!r} has nothing stored in org {org!r} (orgs with data: "
                                f"{', '.join(o or '(none)' for o in orgs)})")
        targets = [org]
    elif len(orgs) == 1:
        targets = orgs
    else:
        raise ValidationError(
            f"user {user!r} has data in several orgs ({', '.join(o or '(none)' for o in orgs)}): user ids are "
            "unique only within an org, so pass --org ORG (or --all-orgs to delete every one)"
        )
    reports = []
    for target in targets:
        runs = [t for t in store.list_traces(user=user, limit=1_000_000, with_children=True) if t.org_id == target]
        strings = task_files.user_strings(runs)
        erased, learned, programs = _erase_task_files(home, runs, strings, target)
        derived = store.derived_items(user, org=target)
        version = None
        if derived:
            made = Committer(home).purge(derived, reason=f"forget --user (org {target or 'none'})")
            version = made.number if made else None
        counts = store.delete_user_data(user, org=target, purge_items=[it.id for it in derived], strings=strings,
                                        derived_changesets=learned)
        forget_user_block(target, user, [it.id for it in derived])  # nor in this process's retrieval index
        clear_core_cache(store)  # nor in its cache of core memory blocks
        counts["task_files"] = erased
        counts["spool_files"] = _forget_spool(Path(home.path) / SPOOL, user, target)
        reports.append(DeletionReport(user=user, org=target, counts=counts, purge_version=version, strings=strings,
                                      programs=programs))
    return reports


def _erase_task_files(home: Home, runs: list[Trace], strings: list[str],
                      org: str | None) -> tuple[int, list[str], list[str]]:
    """Take the user's rows and strings out of every task file; retire programs learned from their runs.
    Returns (files changed, the change sets learned from the user's runs, the folders of their programs)."""
    ids = {t.id for t in runs}
    derived: set[str] = set()
    learned: list[str] = []
    for cs in home.store.list_changesets(limit=100_000):
        if cs.layer == "harness" and ids & set(cs.provenance):
            learned.append(cs.id)
            derived.update(d.path.rpartition("/")[0] + "/" for d in cs.deltas
                           if d.target == "artifact" and d.path and d.path.endswith("/program.json"))
    repo = home.repo
    paths = [p for p in repo.list_files() if p.startswith(("tasks/", "orgs/"))]
    files = task_files.plan(repo.read, paths, ids, strings, derived)
    Committer(home).erase(files, reason=f"forget --user (org {org or 'none'})",
                          evidence={"task_files": len(files)})
    return len(files), learned, sorted(derived)


def _forget_spool(folder: Path, user: str, org: str | None) -> int:
    """Delete the spool files (one OTLP trace each) whose spans name `user` in `org`."""
    if not folder.is_dir():
        return 0
    gone = 0
    for f in sorted(folder.glob("*.jsonl*")):
        try:
            spans = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            continue
        if any(_names(s, user, org) for s in spans if isinstance(s, dict)):
            f.unlink(missing_ok=True)
            gone += 1
    return gone


def _names(span: dict, user: str, org: str | None) -> bool:
    attrs = {**(span.get("resource") or {}), **(span.get("attributes") or {})}
    if not any(attrs.get(k) == user for k in _USER_KEYS):
        return False
    named = attrs.get("crystallise.org", span.get("_org"))
    return org is None or named in (None, org) or span.get("_org") == org


def rewrite_history(home: Home, report: DeletionReport) -> dict[str, str]:
    """Rewrite every commit of the artifact repository without the user's strings, for a user who asks that
    their deletion reach the audit trail too (`crystallise forget --user U --rewrite-history`). In a file a
    line quoting one of `report.strings` is dropped, and the program files of `report.programs` (learned from
    the user's runs; a program can hold their data as constants) leave every commit. Commit shas change
    (clones must re-fetch); version records keep their numbers, and the `Crystallise-Changeset` trailer of
    each rewritten commit still names its change set. Returns old sha -> new sha."""
    wanted = [s for s in report.strings if s]
    programs = tuple(folder + name for folder in report.programs for name in task_files.PROGRAM_FILES)

    def scrub(path: str, text: str) -> str | None:
        if path in programs:
            return ""
        if not any(s in text or json.dumps(s, ensure_ascii=False)[1:-1] in text for s in wanted):
            return None
        escaped = [json.dumps(s, ensure_ascii=False)[1:-1] for s in wanted]
        return "".join(line for line in text.splitlines(keepends=True)
                       if not any(s in line for s in (*wanted, *escaped)))

    return home.repo.rewrite_history(scrub) if wanted or programs else {}
