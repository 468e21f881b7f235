"""`crystallise bench openapi`: the HTTP API against its own OpenAPI document, at volume, with schemathesis.

    crystallise bench openapi                                # ~5,000+ requests, admin key and an org's key
    crystallise bench openapi --positive 40 --negative 15    # per operation and key
    crystallise bench openapi --json

1. a fresh home (SQLite in a temp folder) seeded with traces, items, versions and a report of two
   orgs (`crystallise.testing.seed`), the API app in-process (ASGI: no socket);
2. for every operation of `/openapi.json`, with the admin key and then with org `acme`'s key:
   requests generated from the schema — valid ones (`--positive` each), then ones that break it
   (`--negative` each) — each checked for: no 5xx, the reply matches its declared schema, content
   type and status code;
3. the counts: requests, statuses, failures by check, per key. The goal of issue 15: 0 5xx.

Exit status 1 when a request answered 5xx or a check failed, so CI could run it. The same
harness at a small size is `tests/test_schemathesis.py`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

__all__ = ["command", "exercise"]


def exercise(schema: Any, key: str, positive: int, negative: int,
             progress: Any = None) -> tuple[list[str], Counter[int], int]:
    """Every operation, both modes: (failures, statuses seen, 5xx count)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance]
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [r.ok() for r in schema.get_all_operations()]
    for i, operation in enumerate(operations, 1):
        for mode, n in ((GenerationMode.POSITIVE, positive), (GenerationMode.NEGATIVE, negative)):

            @settings(max_examples=n, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=checks)
                statuses[response.status_code] += 1

            try:
                run()
            except Unsatisfiable:
                continue  # nothing about this operation's input can be made invalid
            except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - every operation's failure is reported
                failures.append(f"{operation.label} ({mode.value}): {str(e)[:800]}")
        if progress is not None:
            progress(f"{i}/{len(operations)} operations, {sum(statuses.values())} requests")
    return failures, statuses, sum(n for s, n in statuses.items() if s >= 500)


@click.command()
@click.option("--positive", type=int, default=100, show_default=True,
              help="Valid requests per operation and key.")
@click.option("--negative", type=int, default=40, show_default=True,
              help="Schema-breaking requests per operation and key.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line with every figure.")
def command(positive: int, negative: int, as_json: bool) -> None:
    """The API against its OpenAPI document: thousands of generated requests, 0 5xx expected."""
    import schemathesis
    from rich.console import Console

    from crystallise.api import create_key
    from crystallise.engine.home import Home
    from crystallise.server import create_app
    from crystallise.testing.seed import seed

    console = Console(stderr=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="crystallise-openapi-"))
    result: dict[str, Any] = {"positive": positive, "negative": negative, "keys": {}}
    try:
        home = Home.init(tmp / "home")
        home.config["model"] = "scripted:{}"  # POST /v1/dream critiques failed runs: the double, not a model
        seed(home, tmp / "reports")
        app = create_app(home, upstream="scripted:ok", reports_dir=str(tmp / "reports"))
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for label, scope in (("admin", "*"), ("org acme", "acme")):
            key, _ = create_key(home.path, scope)
            console.log(f"{label}: generating requests ...")
            failures, statuses, errors = exercise(schema, key, positive, negative,
                                                  progress=lambda m, lb=label: console.log(f"  {lb}: {m}"))
            result["keys"][label] = {"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
                                     "server_errors": errors, "failures": failures}
        home.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["requests"] = sum(k["requests"] for k in result["keys"].values())
    result["server_errors"] = sum(k["server_errors"] for k in result["keys"].values())
    result["failures"] = sum(len(k["failures"]) for k in result["keys"].values())
    result["seconds"] = round(time.perf_counter() - started, 1)
    if as_json:
        click.echo(json.dumps(result))
    for label, k in result["keys"].items():
        console.print(f"[bold]{label}[/bold]: {k['requests']} requests, statuses {k['statuses']}, "
                      f"5xx {k['server_errors']}, failed checks {len(k['failures'])}")
        for f in k["failures"][:10]:
            console.print(f"  {f}")
    console.print(f"all: {result['requests']} requests, {result['server_errors']} 5xx, {result['failures']} "
                  f"failed checks, {result['seconds']} s")
    if result["server_errors"] or result["failures"]:
        raise SystemExit(1)
