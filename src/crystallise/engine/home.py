"""The home directory: every piece of state crystallise keeps, in one place.

    $CRYSTALLISE_HOME (default ./.crystallise)
    ├── config.json      settings (model spec, store URL, "pii" redaction); optional
    ├── store.db         the SQLite store (unless config/env names a PostgreSQL URL)
    ├── artifacts/       the git repository of learned agent/org-level artifacts
    └── models/          GGUF files assembled by `crystallise models pull`

`Home` is passed explicitly to everything that needs state (no global settings);
`Home.from_env()` and the settings below read the environment through `crystallise.config`
(the one module that reads it), then `config.json`, then a default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystallise.config import (
    ENV_CODER_MODEL,
    ENV_CRITIC_MODEL,
    ENV_EMBEDDER,
    ENV_HOME,
    ENV_MODEL,
    ENV_MODELS_DIR,
    ENV_REGISTRY,
    ENV_STORE,
    default_home_path,
    env,
    models_dir_for,
)
from crystallise.artifacts import ArtifactRepo
from crystallise.artifacts.gitcli import atomic_write
from crystallise.artifacts.registry import SharedArtifactRepo
from crystallise.backends import get_backend
from crystallise.backends.catalog import ROLES
from crystallise.backends.base import Backend
from crystallise.context.embed import Embedder, get_embedder
from crystallise.context.pii import policy_from_config
from crystallise.store import open_store
from crystallise.store.locks import exclusive
from crystallise.store.sql import SqlStore
from crystallise.traces.otlp_export import exporter_from_config
from crystallise.errors import ConfigError, CrystalliseError, ValidationError

__all__ = ["ENV_HOME", "ENV_MODELS_DIR", "Home", "default_home_path", "models_dir_for"]



@dataclass
class Home:
    """Handle on a crystallise home. Opening is lazy: nothing touches disk until used."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    _store: SqlStore | None = field(default=None, repr=False)
    _repo: ArtifactRepo | None = field(default=None, repr=False)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_env(cls) -> Home:
        return cls.open(default_home_path())

    @classmethod
    def open(cls, path: str | Path) -> Home:
        """An existing home; ConfigError naming `crystallise init` when there is none."""
        p = Path(path).resolve()
        if not (p / "artifacts").is_dir():
            raise ConfigError(
                f"no crystallise home at {p}: run `crystallise init` (or set {ENV_HOME} to an existing home)"
            )
        return cls(path=p, config=_read_config(p))

    @classmethod
    def init(
        cls, path: str | Path, *, store_url: str | None = None, model: str | None = None, registry: str | None = None
    ) -> Home:
        """Create (or complete) a home: directories, config, store schema, artifact repo (a clone of
        `registry` when one is given: machines that share a store share their versions through it)."""
        p = Path(path).resolve()
        (p / "models").mkdir(parents=True, exist_ok=True)
        config = _read_config(p)
        if store_url:
            config["store_url"] = store_url
        if model:
            config["model"] = model
        if registry:
            config["registry"] = registry
        (p / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        home = cls(path=p, config=config)
        home.repo.init()
        home.store  # noqa: B018 - opening migrates the schema
        return home

    # -- parts ---------------------------------------------------------------------------
    @property
    def store_url(self) -> str:
        return env(ENV_STORE) or self.config.get("store_url") or f"sqlite:///{self.path / 'store.db'}"

    @property
    def store(self) -> SqlStore:
        """The trace and item store (SQLite or PostgreSQL: one implementation), opened and migrated on first use."""
        if self._store is None:
            self._store = open_store(self.store_url)
            self._store.redactor = policy_from_config(self.config)  # PII redaction: on unless config says off
            self._store.exporter = exporter_from_config(self.config)  # OTLP export, when configured
        return self._store

    @property
    def registry(self) -> str | None:
        """The central artifact repository this home's clone pushes to (None: the local repository is the one)."""
        return env(ENV_REGISTRY) or self.config.get("registry") or None

    @property
    def repo(self) -> ArtifactRepo:
        """The git repository of agent- and org-level artifacts: a local one, or a clone of `registry`
        whose commits are serialised across machines by the store's `artifacts` lock (store/locks.py)."""
        if self._repo is None:
            if self.registry:
                self._repo = SharedArtifactRepo(
                    self.path / "artifacts", str(self.registry), lock=lambda: exclusive(self.store, "artifacts"),
                    sync_s=float(self.config.get("registry_sync_s", 2.0)),
                )
            else:
                self._repo = ArtifactRepo(self.path / "artifacts")
        return self._repo

    @property
    def models_dir(self) -> Path:
        return models_dir_for(self.path)

    @property
    def model_spec(self) -> str:
        return env(ENV_MODEL) or self.config.get("model") or "local"

    @property
    def embedder_spec(self) -> str:
        return env(ENV_EMBEDDER) or self.config.get("embedder") or "auto"

    def embedder(self) -> Embedder:
        """The embedder the home is configured with (`context/embed.py`: `auto`, `hash`, `minilm`, ...)."""
        return get_embedder(str(self.embedder_spec))

    def backend(self, spec: str | None = None) -> Backend:
        """The model backend for `spec` (default: the configured model, else `local`)."""
        return get_backend(spec or self.model_spec, models_dir=self.models_dir)

    # -- model roles (docs/models.md) ------------------------------------------------------
    def role_spec(self, role: str) -> str:
        """The model spec a role uses: `answer` is `model_spec`; `coder` and `critic` come from their
        variable, then config.json ("coder_model", "critic_model"), then `local:<the role's default>`
        (`catalog.ROLES`). "answer" as a value means the answer model, "none" no model (coder only)."""
        if role == "answer":
            return self.model_spec
        variable = {"coder": ENV_CODER_MODEL, "critic": ENV_CRITIC_MODEL}.get(role)
        if variable is None:
            raise ValidationError(f"unknown model role {role!r}: answer, coder or critic")
        spec = env(variable) or self.config.get(f"{role}_model") or f"local:{ROLES[role]}"
        return self.model_spec if spec == "answer" else str(spec)

    def role_backend(self, role: str) -> tuple[Backend | None, str]:
        """(the role's backend, its spec), or (None, why) when its model cannot be opened (not pulled,
        no llama.cpp): offline learning goes on without it and says why, naming the fix."""
        spec = self.role_spec(role)
        if spec == "none":
            return None, f"no {role} model ({role}_model is none)"
        try:
            return self.backend(spec), spec
        except CrystalliseError as e:
            return None, f"the {role} model {spec} is not available ({e})"

    def save_config(self) -> None:
        """Write `config` back to `config.json` (atomically: a torn config would lock the user out)."""
        atomic_write(self.path / "config.json", (json.dumps(self.config, indent=2, sort_keys=True) + "\n").encode())

    def close(self) -> None:
        if self._store is not None:
            if self._store.exporter is not None:
                self._store.exporter.shutdown()  # type: ignore[attr-defined]  # what is queued goes out first
            self._store.close()
            self._store = None


def _read_config(path: Path) -> dict[str, Any]:
    f = path / "config.json"
    if not f.exists():
        return {}
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{f} is not valid JSON ({e}): fix or delete it") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{f} must hold a JSON object: fix or delete it")
    return data
