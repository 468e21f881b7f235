"""The HTTP API against its own OpenAPI document, with schemathesis: for every operation, requests
generated from the schema (valid ones, then ones that break it) never get a 5xx, and every reply
matches the response schema the document declares. In-process (ASGI), with the admin key, over a
home with data in it (tests/ui_seed.py), a bounded number of examples per operation.

    .venv/bin/python -m pytest tests/test_schemathesis.py      # ~30-60 s on 2 cores
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the `dev` extra")

from schemathesis import GenerationMode  # noqa: E402

from bench.openapi import exercise  # noqa: E402

from crystallise.server import create_app  # noqa: E402
from crystallise.api import create_key  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from tests.ui_seed import seed  # noqa: E402

EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}


def _exercise(schema: Any, key: str, examples: dict[Any, int] = EXAMPLES) -> tuple[list[str], Counter[int]]:
    """Every operation, each mode: the failures, and the statuses seen (the harness of `bench openapi`)."""
    failures, statuses, _ = exercise(schema, key, examples[GenerationMode.POSITIVE], examples[GenerationMode.NEGATIVE])
    return failures, statuses


def test_every_operation_conforms_to_the_openapi_document(tmp_path: Path) -> None:
    home = Home.init(tmp_path / "home")
    home.config["model"] = "scripted:{}"  # POST /v1/dream critiques failed runs: the double, not a real model
    seed(home, tmp_path / "reports")
    key, _ = create_key(home.path, "*")
    app = create_app(home, upstream="scripted:ok", reports_dir=str(tmp_path / "reports"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, statuses = _exercise(schema, key)
    home.close()
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
    assert sum(statuses.values()) > 200 and statuses[200] > 20 and statuses[422] > 20, statuses  # it did exercise it
    print(f"schemathesis: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert failures == [], "\n\n".join(failures)


def test_an_org_key_gets_no_5xx_either(tmp_path: Path) -> None:
    """Issue 15: the same document with an org's key (ids per org, task namespaces, dream credit cut
    to the org, PostgreSQL's org scope on SQLite a no-op): a smaller run, 0 5xx."""
    home = Home.init(tmp_path / "home")
    home.config["model"] = "scripted:{}"
    seed(home, tmp_path / "reports")
    key, _ = create_key(home.path, "acme")
    app = create_app(home, upstream="scripted:ok", reports_dir=str(tmp_path / "reports"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, statuses = _exercise(schema, key, {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 4})
    home.close()
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
    assert sum(statuses.values()) > 80 and not any(s >= 500 for s in statuses), statuses
    assert failures == [], "\n\n".join(failures)


def test_stateful_runs_follow_the_documents_links(tmp_path: Path) -> None:
    """Issue 15, part 8: stateful where possible — chains of calls over the OpenAPI links (a recorded
    trace fetched and given feedback, a listing's first version fetched and reverted, ...), with an
    org's key and the admin key: 0 5xx, every reply as documented, and the links really followed."""
    from bench.openapi import stateful

    home = Home.init(tmp_path / "home")
    home.config["model"] = "scripted:{}"
    seed(home, tmp_path / "reports")
    app = create_app(home, upstream="scripted:ok", reports_dir=str(tmp_path / "reports"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    links = [name for ops in schema.raw_schema["paths"].values() for op in ops.values() if isinstance(op, dict)
             for r in op.get("responses", {}).values() for name in r.get("links", {})]
    assert {"GetRecordedTrace", "GiveFeedback", "RevertFirstVersion"} <= set(links), links
    for scope in ("acme", "*"):
        key, _ = create_key(home.path, scope)
        # the linked operations only (the whole document is `bench openapi --stateful`'s): every scenario
        # then has a link to follow within a few steps
        linked = schema.include(path_regex=r"^/v1/(traces|versions)")
        failures, statuses, errors, calls = stateful(linked, key, scenarios=8, steps=5)
        assert failures == [] and errors == 0, "\n".join(failures)
        assert [op for op in calls if op.startswith("link ")], calls  # a value an earlier answer named, used
    home.close()
