"""Skills in the Agent Skills format: `skills/<name>/SKILL.md` in the artifact repository.

    skills/pdf-processing/SKILL.md          the skill, byte for byte as imported or learned
    skills/pdf-processing/scripts/...       any other files of the skill folder (text files)
    context/skills/pdf-processing.json      crystallise's record: scope, source, trust, provenance

A SKILL.md is YAML front matter + a Markdown body (agentskills.io specification):

    ---
    name: pdf-processing              1-64 chars, a-z 0-9 and single hyphens, = the folder name
    description: Extract PDF text...  1-1024 chars: what it does and when to use it
    license: Apache-2.0               optional
    compatibility: Requires poppler   optional, at most 500 chars
    metadata: {author: example-org}   optional, string -> string
    allowed-tools: Bash(git:*) Read   optional (experimental): a string or a list of strings
    ---
    # the instructions ...

Progressive disclosure: each skill is also an item (kind "skill", text "name: description")
so that assembly can show names and descriptions among the other items; the body is read
from the repository only when the skill is loaded (`read_skill`; for a home `engine.skills.load_skill`,
or a trigger, engine/serving.py). Everything here reads the artifact repository passed in; the
commits (import, learned skills) are `crystallise.engine.skills`.
Skills are agent- or org-level knowledge, so they change only through change sets and
land as versions; the record keeps where a skill came from (import, learned) and its trust,
because a skill file is instructions the agent will follow. So an import is checked like any
untrusted text: a description or body that tries to override the agent ("ignore previous
instructions", chat-template markers, exfiltration orders; `skill_flags`) is imported but its
item is quarantined — not listed in packs, not loaded — until `crystallise items accept`. A
folder with symbolic links, a SKILL.md over 1 MB, or a name that another scope's skill already
has (an org may not replace another org's skill, nor shadow it at agent level) is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystallise.artifacts import ArtifactRepo
from crystallise.context.injection import RULES, SQUASHED_RULES, RuleDetector
from crystallise.context.injection import detect as detect_instructions
from crystallise.errors import NotFoundError, ValidationError
from crystallise.store.base import Store
from crystallise.types import ChangeSet, Delta, Item, Scope, Verdict

__all__ = [
    "Skill",
    "export_skills",
    "import_changeset",
    "list_skills",
    "parse_skill",
    "read_skill",
    "render_skill",
    "skill_changeset",
]

NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
FIELDS = ("name", "description", "license", "compatibility", "metadata", "allowed-tools")
MAX_FILE_BYTES = 1_000_000
# A skill body *is* instructions ("run the following command", "the agent must always ..."), so the
# body is checked for overriding the agent only; the description, shown in every pack, by every rule.
_BODY_OK = {"role-marker", "system-prompt", "system-prompt-i18n", "model-must", "execute", "from-now-on",
            "obey-only"}
_BODY_DETECTOR = RuleDetector([r for r in RULES if r[0] not in _BODY_OK],
                              squashed=[r for r in SQUASHED_RULES if r[0] not in _BODY_OK])


@dataclass
class Skill:
    """One skill: its front matter, body, other files, and crystallise's record of it."""

    name: str
    description: str
    body: str = ""
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    allowed_tools: list[str] | None = None
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text, besides SKILL.md
    text: str = ""  # the SKILL.md exactly as stored
    level: str = "agent"
    agent: str = "default"
    org: str | None = None
    source: str = "import"
    trust: float = 0.5
    provenance: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # instruction rules its text trips: the item is quarantined

    @property
    def path(self) -> str:
        return f"skills/{self.name}/SKILL.md"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "agent": self.agent, "org": self.org,
                "source": self.source, "trust": self.trust, "provenance": self.provenance,
                "files": sorted(self.files)}

    def item(self) -> Item:
        return Item(
            id=f"it_skill_{self.name}", text=f"{self.name}: {' '.join(self.description.split())}", kind="skill",
            level="org" if self.level == "org" else "agent", agent_id=self.agent,
            org_id=self.org if self.level == "org" else None, section="skills", source=self.source,
            trust=self.trust, provenance=list(self.provenance), status="quarantined" if self.flags else "active",
            meta={"skill": self.name, "path": self.path,
                  **({"injection": self.flags, "quarantine": {
                      "reason": "the skill's description or body tries to override the agent", "rules": self.flags,
                      "release": f"review the skill, then `crystallise items accept it_skill_{self.name}`"}}
                     if self.flags else {})},
        )


def skill_flags(skill: Skill) -> list[str]:
    """Instruction rules a skill trips: every rule on its description, the overriding ones on its body."""
    return sorted(set(detect_instructions(skill.description)) | set(_BODY_DETECTOR.detect(skill.body)))


def _fail(where: str, problem: str) -> ValidationError:
    return ValidationError(f"{where}: {problem}")


def parse_skill(text: str, *, folder: str | None = None, where: str = "SKILL.md") -> Skill:
    """Parse and validate a SKILL.md; every problem raises ValidationError naming the fix."""
    import yaml

    if not isinstance(text, str):
        raise _fail(where, "must be UTF-8 text")
    lines = text.lstrip("\ufeff").split("\n")
    if not lines or lines[0].strip() != "---":
        raise _fail(where, "must start with a line '---' opening YAML front matter with `name` and `description`")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise _fail(where, "the YAML front matter is not closed: add a line '---' after it") from None
    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (front matter line {mark.line + 1})" if mark is not None else ""
        raise _fail(where, f"front matter is not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise _fail(where, "front matter must be a YAML mapping with `name` and `description`")
    unknown = sorted(str(k) for k in data if k not in FIELDS)
    if unknown:
        raise _fail(where, f"unknown front matter field(s) {unknown}: the spec allows {list(FIELDS)}; "
                           "put extra facts under `metadata:`")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(where, "front matter needs `name:` (lowercase letters, digits and hyphens, e.g. pdf-processing)")
    if len(name) > 64 or not NAME.match(name):
        raise _fail(where, f"name {name!r} is invalid: 1-64 characters of a-z, 0-9 and hyphens, not starting or "
                           "ending with a hyphen, no '--'")
    if folder is not None and folder != name:
        raise _fail(where, f"name {name!r} must match its folder name {folder!r}: rename one of them")
    desc = data.get("description")
    if not isinstance(desc, str) or not desc.strip():
        raise _fail(where, "front matter needs a non-empty `description:` (what the skill does and when to use it)")
    if len(desc) > 1024:
        raise _fail(where, f"description is {len(desc)} characters; the limit is 1024")
    compat = data.get("compatibility")
    if compat is not None and (not isinstance(compat, str) or not 1 <= len(compat) <= 500):
        raise _fail(where, "compatibility must be a string of 1-500 characters")
    lic = data.get("license")
    if lic is not None and not isinstance(lic, str):
        raise _fail(where, "license must be a string (a licence name or a bundled file name)")
    meta = data.get("metadata") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _fail(where, 'metadata must map strings to strings (quote numbers: version: "1.0")')
    tools = data.get("allowed-tools")
    if isinstance(tools, str):
        tools = tools.split()
    elif tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
        raise _fail(where, "allowed-tools must be a space-separated string or a list of strings")
    body = "\n".join(lines[end + 1 :])
    return Skill(name=name, description=desc.strip(), body=body, license=lic, compatibility=compat,
                 metadata=dict(meta), allowed_tools=tools, text=text)


def render_skill(skill: Skill) -> str:
    """SKILL.md text for a skill (front matter in the spec's field order, then the body)."""
    import yaml

    front: dict[str, Any] = {"name": skill.name, "description": skill.description}
    for key, value in (("license", skill.license), ("compatibility", skill.compatibility),
                       ("metadata", skill.metadata or None), ("allowed-tools", skill.allowed_tools)):
        if value is not None:
            front[key] = value
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=10_000).strip()
    return f"---\n{head}\n---\n\n{skill.body.strip()}\n"


def _record_path(name: str) -> str:
    return f"context/skills/{name}.json"


def _read_folder(folder: Path) -> tuple[Skill, list[str]]:
    """A skill folder from disk: SKILL.md parsed, other UTF-8 files kept, binary ones listed as skipped."""
    where = str(folder / "SKILL.md")
    for p in [folder / "SKILL.md", *folder.rglob("*")]:
        if p.is_symlink():
            raise _fail(str(p), "is a symbolic link: copy the file into the skill folder (links could import "
                                "files from outside it)")
    if (folder / "SKILL.md").stat().st_size > MAX_FILE_BYTES:
        raise _fail(where, f"is {(folder / 'SKILL.md').stat().st_size:,} bytes; the limit is {MAX_FILE_BYTES:,}: "
                           "move long material into files of the skill folder")
    raw = (folder / "SKILL.md").read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(where, "is not UTF-8 text") from None
    skill = parse_skill(text, folder=folder.name, where=where)
    skipped: list[str] = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or rel == "SKILL.md" or any(part.startswith(".") for part in rel.split("/")):
            continue
        data = p.read_bytes()
        try:
            if len(data) > MAX_FILE_BYTES:
                raise UnicodeDecodeError("utf-8", b"", 0, 1, "too large")
            skill.files[rel] = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(f"{folder.name}/{rel}")
    return skill, skipped


def skill_folders(path: Path) -> list[Path]:
    """`path` itself if it holds a SKILL.md, else its sub-folders that do."""
    path = Path(path)
    if not path.is_dir():
        raise ValidationError(f"no such folder: {path} (pass a skill folder or a folder of skill folders)")
    if (path / "SKILL.md").is_file():
        return [path]
    found = sorted(p.parent for p in path.glob("*/SKILL.md"))
    if not found:
        raise ValidationError(f"{path} holds no SKILL.md, neither itself nor in a sub-folder <name>/SKILL.md")
    return found


def skill_changeset(repo: ArtifactRepo, store: Store, skills: list[Skill], *, learner: str, summary: str,
                    evidence: dict[str, Any] | None = None) -> ChangeSet:
    """Deltas that add or replace skills: their files, their records and their items (not yet gated)."""
    deltas: list[Delta] = []
    for skill in skills:
        skill.text = skill.text or render_skill(skill)
        files = {skill.path: skill.text, **{f"skills/{skill.name}/{rel}": t for rel, t in skill.files.items()}}
        old_record = repo.read(_record_path(skill.name))
        old_files = set(json.loads(old_record).get("files", [])) if old_record else set()
        for rel in sorted(old_files - set(skill.files)):  # files the new version no longer has
            files[f"skills/{skill.name}/{rel}"] = None  # type: ignore[assignment]
        files[_record_path(skill.name)] = json.dumps(skill.record(), indent=2, sort_keys=True) + "\n"
        for path, text in files.items():
            before = repo.read(path)
            if before != text:
                deltas.append(Delta(op="set", target="artifact", path=path, before=before, after=text,
                                    reason=f"skill {skill.name}"))
        item = skill.item()
        try:
            current = store.get_item(item.id)
        except NotFoundError:
            current = None
        if current is None:
            deltas.append(Delta(op="add", target="item", item_id=item.id, after=item.to_dict(),
                                reason=f"skill {skill.name}"))
        else:
            after = current.to_dict() | {k: v for k, v in item.to_dict().items()
                                         if k not in ("shown", "helpful", "harmful", "created_at")}
            after["status"] = item.status
            keep = ("shown", "helpful", "harmful", "created_at", "updated_at")
            if {k: v for k, v in after.items() if k not in keep} == {
                    k: v for k, v in current.to_dict().items() if k not in keep}:
                continue
            deltas.append(Delta(op="update", target="item", item_id=item.id, before=current.to_dict(), after=after,
                                reason=f"skill {skill.name}"))
    scope = Scope(agent=skills[0].agent, org=skills[0].org if skills[0].level == "org" else None) if skills else Scope()
    return ChangeSet(learner=learner, layer="context", deltas=deltas, summary=summary, scope=scope,
                     provenance=[p for s in skills for p in s.provenance], evidence=evidence or {})


def import_changeset(repo: ArtifactRepo, store: Store, path: Path, *, agent: str = "default", org: str | None = None,
                     trust: float = 0.5) -> tuple[ChangeSet, list[Skill], list[str]]:
    """The change set that imports one skill folder or a folder of them; all or nothing.

    Returns (the change set, the skills, skipped binary files). An import is a person's decision,
    so a change set with deltas carries an accept verdict that says so (like defining a task);
    learned skills go through the gate (skill_learner.py). `engine.skills.import_skills` commits it.
    """
    if not 0.0 <= trust <= 1.0:
        raise ValidationError(f"trust must be in [0, 1], not {trust}")
    folders = skill_folders(path)
    problems: list[str] = []
    skills: list[Skill] = []
    skipped: list[str] = []
    for folder in folders:
        try:
            skill, skip = _read_folder(folder)
        except ValidationError as e:
            problems.append(str(e))
            continue
        skill.level, skill.agent, skill.org = ("org" if org else "agent"), agent, org
        skill.source, skill.trust = "import", trust
        skill.provenance = []
        skill.flags = skill_flags(skill)
        owner = _record(repo, skill.name)
        if owner is not None and (owner.get("level"), owner.get("agent"), owner.get("org")) != (
                skill.level, skill.agent, skill.org):
            whose = f"org {owner.get('org')}" if owner.get("level") == "org" else f"agent {owner.get('agent')}"
            problems.append(f"skill {skill.name!r} already belongs to {whose}: import it under another name, "
                            "or have its owner remove it first")
            continue
        skills.append(skill)
        skipped += skip
    if problems:
        raise ValidationError("cannot import skills (nothing was imported):\n  " + "\n  ".join(problems))
    names = [s.name for s in skills]
    cs = skill_changeset(repo, store, skills, learner="skills-import",
                         summary=f"skills: import {', '.join(names)}"[:200], evidence={"from": str(path)})
    if cs.deltas:
        cs.verdict = Verdict(decision="accept", reason=f"skills imported by the user from {path}")
    return cs, skills, skipped


def _record(repo: ArtifactRepo, name: str) -> dict[str, Any] | None:
    raw = repo.read(_record_path(name))
    return json.loads(raw) if raw else None


def _visible(record: dict[str, Any], agent: str | None, org: str | None) -> bool:
    if agent is None and org is None:
        return True
    if record.get("level") == "org":
        return record.get("org") == org
    return agent is None or record.get("agent") == agent


def list_skills(repo: ArtifactRepo, *, agent: str | None = None, org: str | None = None) -> list[Skill]:
    """Skills in the artifact repository visible to a scope (all of them when neither is given), by name."""
    names = sorted({p.split("/")[1] for p in repo.list_files("skills/") if p.endswith("/SKILL.md")
                    and p.count("/") == 2})
    out = []
    for name in names:
        record = _record(repo, name) or {"level": "agent", "agent": "default", "source": "unknown", "trust": 0.5}
        if not _visible(record, agent, org):
            continue
        out.append(_skill_from_repo(repo, name, record))
    return out


def _skill_from_repo(repo: ArtifactRepo, name: str, record: dict[str, Any]) -> Skill:
    text = repo.read(f"skills/{name}/SKILL.md")
    if text is None:
        raise NotFoundError(f"skill {name!r} not found: run `crystallise skills list` to see the skills")
    skill = parse_skill(text, folder=name, where=f"skills/{name}/SKILL.md")
    skill.level = record.get("level", "agent")
    skill.agent = record.get("agent", "default")
    skill.org = record.get("org")
    skill.source = record.get("source", "unknown")
    skill.trust = float(record.get("trust", 0.5))
    skill.provenance = list(record.get("provenance", []))
    for rel in record.get("files", []):
        t = repo.read(f"skills/{name}/{rel}")
        if t is not None:
            skill.files[rel] = t
    return skill


def read_skill(repo: ArtifactRepo, name: str, *, agent: str | None = None, org: str | None = None) -> Skill:
    """A skill with its body from the artifact repository (`crystallise.engine.skills.load_skill` for a home).

    With `agent`/`org`, the skill must be visible to that scope (NotFoundError otherwise).
    """
    record = _record(repo, name)
    if record is None and repo.read(f"skills/{name}/SKILL.md") is None:
        raise NotFoundError(f"skill {name!r} not found: run `crystallise skills list` to see the skills")
    record = record or {"level": "agent", "agent": "default"}
    if not _visible(record, agent, org):
        raise NotFoundError(f"skill {name!r} is not available to agent {agent!r} / org {org!r}")
    return _skill_from_repo(repo, name, record)


def export_skills(repo: ArtifactRepo, dest: Path, *, names: list[str] | None = None, agent: str | None = None,
                  org: str | None = None) -> list[Path]:
    """Write skill folders (SKILL.md + their files, exactly as stored) under `dest`; returns the folders."""
    dest = Path(dest)
    skills = list_skills(repo, agent=agent, org=org)
    if names:
        missing = sorted(set(names) - {s.name for s in skills})
        if missing:
            raise NotFoundError(f"no such skill(s) {missing}: run `crystallise skills list`")
        skills = [s for s in skills if s.name in names]
    written = []
    for skill in skills:
        folder = dest / skill.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "SKILL.md").write_text(skill.text, encoding="utf-8")
        for rel, text in skill.files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        written.append(folder)
    return written
