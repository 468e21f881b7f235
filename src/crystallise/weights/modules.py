"""Adapters as modules: a plain-text manifest in git, the weights beside it, content-addressed.

    artifacts/adapters/<level>/<owner>/adapter.json        the adapter this scope serves (git: versioned,
                                                           diffable, revertible; one commit per adapter)
    artifacts/adapters/<level>/<owner>/suites/<task>.jsonl the adapter's target suite, kept so later adapters
                                                           of the scope are tested for forgetting it
    $CRYSTALLISE_HOME/adapters/<sha256>/                   the PEFT weights (adapter_config.json,
                                                           adapter_model.safetensors), named by their hash
    $CRYSTALLISE_HOME/datasets/<sha256>.jsonl              the exact training data

`<level>` is `agent` or `org`. Serving resolves a scope to the narrowest adapter that exists —
the org's (tenant) adapter, else the agent's, else none (the base model) — and only serves one
trained on the same base (the manifest's `base.sha256`). Because the manifest is an artifact,
`crystallise revert N` of an adapter's version restores the previous manifest (the previous
adapter), or removes it (back to the base); the weights of every adapter stay on disk.

A manifest (keys sorted, two-space indent):

    {"schema": 1, "name": "support-v3", "scope": {"level": "agent", "owner": "support"},
     "base": {"name": "smollm2-135m", "sha256": "b179c9…"},
     "weights": {"sha256": "5e0d…", "files": {"adapter_model.safetensors": "…"}},
     "data": {"sha256": "…", "examples": 120, "replay_examples": 40, "tasks": ["triage"]},
     "hyperparameters": {...}, "training": {...}, "metrics": {...}, "verdict": {...},
     "provenance": ["tr_…", …], "parent": "<previous weights sha256 or null>"}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crystallise.artifacts import ArtifactRepo
from crystallise.errors import ArtifactError, NotFoundError, ValidationError
from crystallise.types import ChangeSet, Delta, Scope, Verdict

__all__ = [
    "Resolution",
    "adapter_changeset",
    "current_manifest",
    "dataset_path",
    "manifest_path",
    "resolve",
    "scope_key",
    "store_dataset",
    "store_weights",
    "suite_path",
    "weights_dir",
    "weights_digest",
]

SCHEMA = 1


def scope_key(scope: Scope) -> tuple[str, str]:
    """(level, owner) an adapter of `scope` is filed under: ("org", org) or ("agent", agent)."""
    if scope.user:
        raise ValidationError("adapters are per agent or per org, never per user: drop the user from the scope")
    return ("org", scope.org) if scope.org else ("agent", scope.agent or "default")


def manifest_path(level: str, owner: str) -> str:
    return f"adapters/{level}/{owner}/adapter.json"


def suite_path(level: str, owner: str, name: str) -> str:
    return f"adapters/{level}/{owner}/suites/{name}.jsonl"


def weights_digest(folder: Path) -> tuple[str, dict[str, str]]:
    """sha256 over the folder's files (sorted names, each name and content hash), and each file's sha256."""
    files: dict[str, str] = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            files[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    if not files:
        raise ValidationError(f"{folder} holds no adapter files")
    h = hashlib.sha256()
    for name, digest in files.items():
        h.update(name.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest(), files


class WeightsHome(Protocol):
    """The parts of a home the weight layer reads: its folder (adapter weights, datasets), the artifact
    repository (manifests) and the models folder (GGUF bases). `crystallise.engine.home.Home` is one."""

    path: Path
    repo: ArtifactRepo
    models_dir: Path


def _adapters_root(home: WeightsHome) -> Path:
    return home.path / "adapters"


def store_weights(home: WeightsHome, folder: Path) -> tuple[str, dict[str, str]]:
    """Copy an adapter folder into $HOME/adapters/<sha256>/ (idempotent); its digest and file hashes."""
    digest, files = weights_digest(folder)
    dest = _adapters_root(home) / digest
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}.", dir=dest.parent))
        try:
            for name in files:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(folder) / name, tmp / name)
            os.replace(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not dest.is_dir():
                raise
    return digest, files


def weights_dir(home: WeightsHome, digest: str, *, verify: bool = True) -> Path:
    """The folder of adapter `digest`; NotFoundError if missing, ArtifactError if its content changed."""
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValidationError(f"bad adapter digest {digest!r}: expected 64 hex characters")
    path = _adapters_root(home) / digest
    if not path.is_dir():
        raise NotFoundError(f"adapter weights {digest[:12]}… are not in {path.parent}: copy them from the "
                            "home that trained them, or retrain with `crystallise weights train`")
    if verify and weights_digest(path)[0] != digest:
        raise ArtifactError(f"adapter weights in {path} do not match their digest: the files were changed; "
                            "delete the folder and retrain")
    return path


def dataset_path(home: WeightsHome, digest: str) -> Path:
    return home.path / "datasets" / f"{digest}.jsonl"


def store_dataset(home: WeightsHome, text: str) -> str:
    """Keep the exact training data as $HOME/datasets/<sha256>.jsonl (outside git: it may hold user data)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path = dataset_path(home, digest)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return digest


def current_manifest(home: WeightsHome, level: str, owner: str) -> dict[str, Any] | None:
    """The manifest the scope serves now (working tree of the artifact repository), or None."""
    text = home.repo.read(manifest_path(level, owner))
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{manifest_path(level, owner)} is not valid JSON ({e}): revert the version that "
                            "wrote it") from e
    return data


@dataclass(frozen=True)
class Resolution:
    """Which adapter serves a scope: `manifest` None means the base model."""

    manifest: dict[str, Any] | None
    level: str | None
    owner: str | None
    reason: str

    @property
    def digest(self) -> str | None:
        return self.manifest["weights"]["sha256"] if self.manifest else None


def resolve(home: WeightsHome, scope: Scope, base_sha256: str) -> Resolution:
    """The org's adapter, else the agent's, else the base; an adapter of another base is passed over."""
    skipped: list[str] = []
    candidates = ([("org", scope.org)] if scope.org else []) + [("agent", scope.agent or "default")]
    for level, owner in candidates:
        m = current_manifest(home, level, owner)
        if m is None:
            continue
        if m.get("base", {}).get("sha256") != base_sha256:
            skipped.append(f"{level} {owner}'s adapter is for base {m.get('base', {}).get('name')}")
            continue
        return Resolution(m, level, owner, f"{level} {owner}'s adapter {m.get('name')}")
    why = "; ".join(skipped) or "no adapter for this scope"
    return Resolution(None, None, None, f"base model ({why})")


def adapter_changeset(
    home: WeightsHome,
    scope: Scope,
    manifest: dict[str, Any],
    verdict: Verdict,
    *,
    suites: dict[str, str] | None = None,
    provenance: list[str] | None = None,
) -> ChangeSet:
    """The change set that makes `manifest` the scope's adapter (and adds its suites' new cases)."""
    level, owner = scope_key(scope)
    path = manifest_path(level, owner)
    before = home.repo.read(path)
    text = json.dumps({**manifest, "schema": SCHEMA, "verdict": verdict.to_dict()}, indent=2, sort_keys=True)
    deltas = [Delta(op="set", target="artifact", path=path, before=before, after=text + "\n",
                    reason=f"serve adapter {manifest.get('name')}")]
    for name, jsonl in (suites or {}).items():
        spath = suite_path(level, owner, name)
        old = home.repo.read(spath) or ""
        have = {json.loads(line)["id"] for line in old.split("\n") if line.strip()}  # "\n" only: see View.jsonl
        new_lines = [line for line in jsonl.split("\n") if line.strip() and json.loads(line)["id"] not in have]
        if new_lines:  # learners may add eval cases, never change one
            deltas.append(Delta(op="set", target="artifact", path=spath, before=old or None,
                                after=old + "".join(line + "\n" for line in new_lines),
                                reason=f"+{len(new_lines)} cases in suite {name}"))
    return ChangeSet(learner="weights", layer="weights", deltas=deltas, scope=scope,
                     summary=f"adapter {manifest.get('name')} for {level} {owner}"[:200],
                     provenance=list(provenance or manifest.get("provenance", [])),
                     evidence={"weights": manifest["weights"]["sha256"], "metrics": manifest.get("metrics", {})},
                     verdict=verdict)
