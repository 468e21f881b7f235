"""Models a user already has: a local GGUF file, or one on a Hugging Face hub, registered by name.

    crystallise models pull --file ~/Downloads/phi-3-mini-q4.gguf --name phi3    -> models/phi3.gguf + phi3.json
    crystallise models pull --hf bartowski/SmolLM2-135M-Instruct-GGUF:SmolLM2-135M-Instruct-Q4_K_M.gguf

Either way the file is copied into the models folder while its sha256 is computed, checked to be
a GGUF (magic bytes `GGUF`), renamed into place, and a manifest `NAME.json` records where it came
from and its checksum — the same layout `catalog.pull` leaves, so `local:NAME`, `models list`
and the proxy's model routing find it. A name that belongs to the catalog is refused (its
checksum is the catalog's to say); a different file under an existing name is refused too.

`--hf` needs the `huggingface_hub` package (extra `hub`); where the hub cannot be reached the
error says so and points at `--file`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crystallise.backends.catalog import CATALOG, PullError, default_models_dir
from crystallise.errors import ConfigError

try:
    import huggingface_hub
except ImportError:  # pragma: no cover - depends on the extras installed
    huggingface_hub = None  # type: ignore[assignment]

__all__ = ["HUB_EXTRA", "import_file", "pull_hf"]

HUB_EXTRA = "pip install 'crystallise[hub]'"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CHUNK = 1 << 20


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith(".gguf"):
        raise ConfigError(f"model name {name!r}: use 1-100 letters, digits, '.', '_' or '-' (no .gguf suffix), "
                          "e.g. --name phi3-mini")
    if name in CATALOG:
        raise ConfigError(f"{name!r} is a catalog model (`crystallise models pull {name}` assembles and verifies "
                          "it): register your file under another name with --name")
    return name


def import_file(path: Path | str, models_dir: Path | None = None, *, name: str | None = None,
                source: dict[str, Any] | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Copy the GGUF at `path` into `models_dir/NAME.gguf` with a manifest; return the new path.

    `name` defaults to the file's name without `.gguf`. The same file again is a no-op.

    Example:

        >>> import_file("~/models/phi3.Q4_K_M.gguf", name="phi3")  # doctest: +SKIP
        PosixPath('.crystallise/models/phi3.gguf')
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise ConfigError(f"model file {src} does not exist: check the path")
    with src.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ConfigError(f"{src} is not a GGUF file (it starts with {magic!r}, not b'GGUF'): convert it with "
                          "llama.cpp's convert_hf_to_gguf.py, or download a .gguf build")
    name = _check_name(name or src.name.removesuffix(".gguf"))
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    models_dir.mkdir(parents=True, exist_ok=True)
    final, manifest_path = models_dir / f"{name}.gguf", models_dir / f"{name}.json"
    size = src.stat().st_size
    part = models_dir / f"{name}.gguf.part"
    digest, done = hashlib.sha256(), 0
    try:
        with src.open("rb") as inp, part.open("wb") as out:
            while block := inp.read(_CHUNK):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, size)
        sha = digest.hexdigest()
        if final.exists():
            old = _manifest(manifest_path)
            if old.get("sha256") == sha:
                return final
            raise ConfigError(f"a different model is already registered as {name!r} ({final}): pick another "
                              f"--name, or delete {final} and {manifest_path} first")
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    manifest = {"name": name, "sha256": sha, "size": done, "source": source or {"kind": "file", "path": str(src)},
                "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = models_dir / f"{name}.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    return final


def _manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _hub() -> Any:
    if huggingface_hub is None:
        raise ConfigError(f"--hf needs the huggingface_hub package: {HUB_EXTRA} (or use --file PATH with a .gguf "
                          "you downloaded)")
    return huggingface_hub


def pull_hf(spec: str, models_dir: Path | None = None, *, name: str | None = None,
            progress: Callable[[int, int], None] | None = None) -> Path:
    """Download `REPO[:FILE]` from the hub (huggingface_hub's cache) and register it like `import_file`.

    Without `:FILE` the repository must hold exactly one `.gguf` file.
    """
    repo, _, filename = spec.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"--hf {spec!r}: use OWNER/REPO or OWNER/REPO:FILE.gguf")
    hub = _hub()
    try:
        if not filename:
            ggufs = [f for f in hub.list_repo_files(repo) if f.endswith(".gguf")]
            if len(ggufs) != 1:
                listed = ", ".join(ggufs[:10]) or "none"
                raise ConfigError(f"{repo} has {len(ggufs)} .gguf files ({listed}): name one as --hf {repo}:FILE")
            filename = ggufs[0]
        local = hub.hf_hub_download(repo_id=repo, filename=filename)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the hub's errors are many (HTTP, offline, gated): one message
        raise PullError(f"could not download {filename or 'the .gguf'} from the hub repository {repo} "
                        f"({type(exc).__name__}: {exc}): check the name and your network (HF_ENDPOINT, HF_TOKEN), "
                        "or download the file another way and use `crystallise models pull --file PATH`") from exc
    source = {"kind": "hf", "repo": repo, "file": filename}
    return import_file(local, models_dir, name=name or Path(filename).name.removesuffix(".gguf"), source=source,
                       progress=progress)
