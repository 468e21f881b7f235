"""`crystallise models pull --file PATH` and `--hf REPO[:FILE]`: a GGUF the user has, registered by name with its
checksum. The hub is unreachable here, so `--hf` is tested through its clear error paths and, in unit tests,
with huggingface_hub's download replaced by a double that hands over a local file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from crystallise.backends import catalog, model_import
from crystallise.backends.catalog import PullError
from crystallise.cli import main
from crystallise.errors import ConfigError


def gguf(path: Path, payload: bytes = b"weights") -> Path:
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + payload)
    return path


def run(home: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.delenv("CRYSTALLISE_MODELS_DIR", raising=False)
    return CliRunner().invoke(main, ["--home", str(home), "models", "pull", *args])


def test_pull_file_registers_the_gguf_with_its_checksum(tmp_path, monkeypatch):
    src = gguf(tmp_path / "Phi-3-mini.Q4.gguf")
    result = run(tmp_path / "home", monkeypatch, "--file", str(src), "--name", "phi3")
    assert result.exit_code == 0, result.output
    models = tmp_path / "home" / "models"
    assert (models / "phi3.gguf").read_bytes() == src.read_bytes()
    manifest = json.loads((models / "phi3.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert manifest["size"] == src.stat().st_size and manifest["source"] == {"kind": "file", "path": str(src)}
    assert catalog.model_path("phi3", models) == models / "phi3.gguf"  # local:phi3 finds it
    assert "phi3" in [m["name"] for m in catalog.installed(models)]
    listed = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "models", "list", "--json"])
    assert any(r["name"] == "phi3" and r["installed"] for r in json.loads(listed.output))
    again = run(tmp_path / "home", monkeypatch, "--file", str(src), "--name", "phi3")
    assert again.exit_code == 0  # the same file again: nothing to do


def test_pull_file_refuses_what_is_not_a_gguf_or_would_overwrite(tmp_path, monkeypatch):
    models = tmp_path / "models"
    notgguf = tmp_path / "model.bin"
    notgguf.write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(ConfigError, match="not a GGUF"):
        model_import.import_file(notgguf, models)
    with pytest.raises(ConfigError, match="does not exist"):
        model_import.import_file(tmp_path / "missing.gguf", models)
    with pytest.raises(ConfigError, match="catalog model"):
        model_import.import_file(gguf(tmp_path / "a.gguf"), models, name=catalog.DEFAULT_MODEL)
    with pytest.raises(ConfigError, match="model name"):
        model_import.import_file(gguf(tmp_path / "b.gguf"), models, name="../escape")
    model_import.import_file(gguf(tmp_path / "c.gguf", b"one"), models, name="mine")
    with pytest.raises(ConfigError, match="different model is already registered"):
        model_import.import_file(gguf(tmp_path / "d.gguf", b"two"), models, name="mine")
    assert (models / "mine.gguf").read_bytes().endswith(b"one") and not list(models.glob("*.part"))


def test_pull_hf_without_huggingface_hub_names_the_extra_and_file(tmp_path, monkeypatch):
    monkeypatch.setattr(model_import, "huggingface_hub", None)
    result = run(tmp_path / "home", monkeypatch, "--hf", "owner/repo:model.gguf")
    assert result.exit_code != 0
    assert "crystallise[hub]" in result.output and "--file" in result.output


def test_pull_hf_unreachable_hub_is_a_clear_pull_error(tmp_path, monkeypatch):
    def offline(**_: object) -> str:
        raise OSError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(model_import, "huggingface_hub", SimpleNamespace(hf_hub_download=offline))
    with pytest.raises(PullError, match="models pull --file PATH"):
        model_import.pull_hf("owner/repo:model.gguf", tmp_path / "models")
    with pytest.raises(ConfigError, match="OWNER/REPO"):
        model_import.pull_hf("not-a-repo", tmp_path / "models")


def test_pull_hf_registers_the_downloaded_file_with_its_source(tmp_path, monkeypatch):
    cached = gguf(tmp_path / "cache-SmolLM2-Q4_K_M.gguf")
    calls: list[dict[str, str]] = []

    def download(**kw: str) -> str:
        calls.append(kw)
        return str(cached)

    files = ["README.md", "SmolLM2-Q4_K_M.gguf"]
    monkeypatch.setattr(model_import, "huggingface_hub",
                        SimpleNamespace(hf_hub_download=download, list_repo_files=lambda repo: files))
    path = model_import.pull_hf("owner/SmolLM2-GGUF", tmp_path / "models")
    assert calls == [{"repo_id": "owner/SmolLM2-GGUF", "filename": "SmolLM2-Q4_K_M.gguf"}]
    assert path.name == "SmolLM2-Q4_K_M.gguf"
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["source"] == {"kind": "hf", "repo": "owner/SmolLM2-GGUF", "file": "SmolLM2-Q4_K_M.gguf"}
    files.append("other.gguf")  # two candidates: the user must say which
    with pytest.raises(ConfigError, match="name one as --hf"):
        model_import.pull_hf("owner/SmolLM2-GGUF", tmp_path / "models")


def test_pull_hf_with_the_real_library_offline_is_a_clear_error(tmp_path, monkeypatch):
    """The real huggingface_hub (the weights extra brings it), kept offline: no request leaves the machine."""
    hub = pytest.importorskip("huggingface_hub")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(model_import, "huggingface_hub", hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PullError) as err:
        model_import.pull_hf("owner/repo:model.gguf", tmp_path / "models")
    assert "owner/repo" in str(err.value) and "--file PATH" in str(err.value)
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())
