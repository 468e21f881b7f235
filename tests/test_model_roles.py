"""Model roles (docs/models.md): the online answerer, the offline coder and the offline critic each have
a model; learning jobs and dreaming use them, say so when one is missing, and `models pull --roles`
(what `make models` runs) pulls what the roles use. No model is loaded here: a home's models folder is
empty, so the local defaults are "not pulled", which is the case every new user starts from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from crystallise.backends import catalog
from crystallise.backends.scripted import ScriptedBackend
from crystallise.cli import main
from crystallise.engine import jobs
from crystallise.engine.dream import dream
from crystallise.engine.home import Home
from crystallise.engine.task_defs import define
from crystallise.errors import ValidationError
from crystallise.harness.runtime import close_sandboxes
from crystallise.types import Scope
from tests.test_jobs import ACME, _learn_home


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A home with the roles' defaults in force (the suite's conftest pins them for other tests)."""
    monkeypatch.delenv("CRYSTALLISE_CODER_MODEL", raising=False)
    monkeypatch.delenv("CRYSTALLISE_CRITIC_MODEL", raising=False)
    monkeypatch.setenv("CRYSTALLISE_MODELS_DIR", str(tmp_path / "models"))
    home = Home.init(tmp_path / "home")
    yield home
    home.close()


def test_role_specs_come_from_the_environment_then_config_then_the_defaults(bare: Home, monkeypatch) -> None:
    assert bare.role_spec("coder") == f"local:{catalog.ROLES['coder']}"
    assert bare.role_spec("critic") == f"local:{catalog.ROLES['critic']}"
    assert bare.role_spec("answer") == bare.model_spec == "local"
    bare.config.update({"coder_model": "openai:big-coder", "critic_model": "answer", "model": "scripted:x"})
    assert bare.role_spec("coder") == "openai:big-coder"
    assert bare.role_spec("critic") == "scripted:x"  # "answer": the answer model
    monkeypatch.setenv("CRYSTALLISE_CODER_MODEL", "none")
    assert bare.role_backend("coder") == (None, "no coder model (coder_model is none)")
    with pytest.raises(ValidationError, match="answer, coder or critic"):
        bare.role_spec("judge")


def test_a_role_whose_model_is_not_pulled_is_named_with_the_fix(bare: Home) -> None:
    backend, why = bare.role_backend("coder")
    assert backend is None
    assert catalog.ROLES["coder"] in why and f"crystallise models pull {catalog.ROLES['coder']}" in why


def test_a_learn_job_without_its_coder_says_so_and_learns_model_free(bare: Home) -> None:
    _learn_home(bare)
    job = jobs.submit(bare, "learn", scope=Scope(org="acme"), params={"task": "ratio", "learners": ["crystallise"]},
                      actor=ACME)
    done = jobs.run(bare, job.id, worker="w1")
    assert done.status == "succeeded", done.error
    assert done.result["versions"]  # arithmetic needs no model
    said = " ".join(entry["line"] for entry in done.log)
    assert "the coder model" in said and "model-free synthesis only" in said and "models pull" in said
    close_sandboxes()


def test_a_learn_job_hands_the_coder_role_its_model(bare: Home, monkeypatch) -> None:
    """With a coder configured, the job's learner runs the coder strategy with that model."""
    seen: list[str] = []
    coder = ScriptedBackend(lambda r: "```python\ndef solve(x):\n    return '0'\n```")
    original = Home.backend

    def backend(self: Home, spec: str | None = None):
        if spec == "scripted:the-coder":
            seen.append(spec)
            return coder
        return original(self, spec)

    monkeypatch.setattr(Home, "backend", backend)
    bare.config["coder_model"] = "scripted:the-coder"
    define(bare, "ratio", metric="numeric")
    _learn_home(bare)
    job = jobs.submit(bare, "learn", scope=Scope(org="acme"), params={"task": "ratio", "learners": ["crystallise"]},
                      actor=ACME)
    done = jobs.run(bare, job.id, worker="w1")
    assert done.status == "succeeded", done.error
    assert seen and not any("model-free synthesis only" in e["line"] for e in done.log)
    close_sandboxes()


def test_dreaming_uses_the_critic_role_and_says_when_it_falls_back(bare: Home, monkeypatch) -> None:
    said: list[str] = []
    bare.config["model"] = "scripted:ok"
    dream(bare, Scope(agent="support"), dry_run=True, progress=said.append)
    # nothing to critique yet is fine; what matters is which model was asked for, and the note
    monkeypatch.setattr(Home, "role_backend", lambda self, role: (None, f"the {role} model X is not available"))
    said.clear()
    from crystallise.engine import dream as dream_mod

    assert dream_mod._critic_backend(bare, said.append).name.startswith("scripted")
    assert said == ["dream: the critic model X is not available; the answer model critiques instead"]
    monkeypatch.setattr(Home, "role_backend", lambda self, role: (ScriptedBackend(["lesson"]), "scripted:critic"))
    assert isinstance(dream_mod._critic_backend(bare, said.append), ScriptedBackend) and len(said) == 1


def test_models_roles_and_pull_roles(bare: Home, monkeypatch) -> None:
    runner = CliRunner()
    env = {"CRYSTALLISE_HOME": str(bare.path)}
    shown = runner.invoke(main, ["models", "roles", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    rows = {r["role"]: r for r in json.loads(shown.output)}
    assert rows["coder"]["spec"] == f"local:{catalog.ROLES['coder']}" and rows["coder"]["installed"] is False
    pulled: list[str] = []
    monkeypatch.setattr(catalog, "pull", lambda name, models_dir, progress=None: pulled.append(name) or
                        Path(models_dir) / f"{name}.gguf")
    done = runner.invoke(main, ["models", "pull", "--roles"], env=env)
    assert done.exit_code == 0, done.output
    assert pulled == list(dict.fromkeys(catalog.ROLES.values()))  # each model once, in role order
    bare.config["coder_model"] = "openai:remote"  # a remote coder needs nothing pulled
    bare.save_config()
    pulled.clear()
    assert runner.invoke(main, ["models", "pull", "--roles"], env=env).exit_code == 0
    assert catalog.ROLES["coder"] not in pulled or catalog.ROLES["critic"] == catalog.ROLES["coder"]
    assert runner.invoke(main, ["models", "pull", "--roles", "smollm2-135m"], env=env).exit_code == 2
