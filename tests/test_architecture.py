"""The architecture as tests (docs/architecture.md): one direction, small modules, one place per rule.

`make test` also runs `lint-imports` (the contracts in pyproject.toml); these checks need no tool:
the package-level import graph below counts every import, function-local ones included.
"""

from __future__ import annotations

import ast
import pathlib
import re

import crystallise

ROOT = pathlib.Path(crystallise.__file__).parent
EDGES = {"cli"}  # the command line may import anything, lazily (start-up time)
# Known, named exceptions (docs/architecture.md): none.
IGNORED: set[tuple[str, str]] = set()
LONG: set[str] = set()  # modules allowed past 600 lines: none


def _package(rel: pathlib.Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: pathlib.Path) -> set[str]:
    """Every crystallise sub-package or top-level module `path` imports, at any depth of the file."""
    rel = path.relative_to(ROOT)
    module = ["crystallise", *rel.with_suffix("").parts]
    if module[-1] == "__init__":
        module = module[:-1]
    package_of_file = module if path.name == "__init__.py" else module[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package_of_file[: len(package_of_file) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            if target == "crystallise":
                names = [f"crystallise.{a.name}" for a in node.names]
        out |= {n.split(".")[1] for n in names if n.startswith("crystallise.")}
    return out


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        source = _package(path.relative_to(ROOT))
        if source in EDGES or source == "__init__":
            continue
        targets = {t for t in _imports(path) if t != source and t not in EDGES and (source, t) not in IGNORED}
        graph.setdefault(source, set()).update(targets)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_package_cycle_even_counting_function_local_imports() -> None:
    assert cycles(package_graph()) == []


def test_only_the_engine_and_the_edges_commit() -> None:
    """What commits lives in one folder: no domain package reaches the committer or the home."""
    graph = package_graph()
    domain = {"context", "harness", "weights", "gate", "governance", "backends", "store", "artifacts", "traces",
              "evidence", "config", "types", "errors"}
    assert {p for p in domain if "engine" in graph.get(p, set())} == set()


def test_no_module_over_600_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert set(long) <= LONG, long


def test_one_module_reads_the_environment() -> None:
    """crystallise.config reads settings; the CLI (an edge) may set them; a few places pass the
    environment on to a child process or set a library's offline flag, which is not reading config."""
    allowed = {"config.py", "artifacts/gitcli.py", "context/embed.py"}
    pattern = re.compile(r"os\.environ\.get|os\.getenv|os\.environ\[")
    readers = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
               if pattern.search(p.read_text()) and p.relative_to(ROOT).parts[0] != "cli"}
    assert readers <= allowed, readers - allowed


REPO = pathlib.Path(__file__).resolve().parents[1]


def _sources(*folders: str) -> dict[str, str]:
    """The Python files under `folders` of the checkout (this file, which names the patterns, aside)."""
    return {str(p.relative_to(REPO)): p.read_text() for f in folders for p in (REPO / f).rglob("*.py")
            if p.resolve() != pathlib.Path(__file__).resolve()}


def test_the_test_helpers_are_an_edge() -> None:
    """crystallise.testing (servers, JSONL reader, throwaway PostgreSQL) serves tests/ and bench/:
    no library package but the command line imports it."""
    graph = package_graph()
    assert {p for p, targets in graph.items() if "testing" in targets} == set()


def test_bench_is_a_package_that_loads_no_file_by_path_and_imports_no_tests() -> None:
    assert (REPO / "bench" / "__init__.py").is_file()
    sources = _sources("bench", "src", "tests")
    by_path = {p for p, text in sources.items() if "spec_from_file_location" in text}
    assert by_path == set(), by_path
    bench_imports_tests = {p for p, text in sources.items() if p.startswith("bench/")
                           and re.search(r"^\s*(from|import) tests\b", text, re.M)}
    assert bench_imports_tests == set(), bench_imports_tests


def test_one_copy_of_each_helper() -> None:
    """One threaded uvicorn server (crystallise/testing/servers.py), one llama.cpp model loader
    (backends/local.py `load_llama`), and no benchmark reading its JSONL data with str.splitlines, which
    also splits at a U+2028 inside a string (`crystallise.testing.read_jsonl` splits on "\\n" only)."""
    sources = _sources("bench", "src", "tests")
    assert {p for p, t in sources.items() if "uvicorn.Server(" in t} == {"src/crystallise/testing/servers.py"}
    assert {p for p, t in sources.items() if re.search(r"\bLlama\(", t)} == {"src/crystallise/backends/local.py"}
    reader = re.compile(r"json\.loads\(line\) for line in .*splitlines\(\)")
    splitting = {p for p, t in _sources("bench").items() if reader.search(t)}
    assert splitting == set(), splitting
