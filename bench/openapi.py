"""`crystallise bench openapi`: the HTTP API against its own OpenAPI document, at volume, with schemathesis.

    crystallise bench openapi                                # ~5,000+ requests, admin key and an org's key
    crystallise bench openapi --positive 40 --negative 15    # per operation and key
    crystallise bench openapi --json

1. a fresh home (SQLite in a temp folder) seeded with traces, items, versions and a report of two
   orgs (`crystallise.testing.seed`), the API app in-process (ASGI: no socket);
2. for every operation of `/openapi.json`, with the admin key and then with org `acme`'s key:
   requests generated from the schema — valid ones (`--positive` each), then ones that break it
   (`--negative` each) — each checked for: no 5xx, the reply matches its declared schema, content
   type and status code; then `--stateful` scenarios: chains of calls over the document's OpenAPI
   links (api/links.py), each call fed by a value an earlier answer named;
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

__all__ = ["command", "exercise", "stateful"]


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


def stateful(schema: Any, key: str, scenarios: int,
             steps: int = 8) -> tuple[list[str], Counter[int], int, Counter[str]]:
    """Stateful runs over the document's OpenAPI links (api/links.py): each scenario a chain of calls,
    each call fed by what an earlier answer named (the trace a POST recorded, the first version of a
    listing, ...). Returns (failures, statuses, 5xx count, calls per operation and `link NAME` per link
    followed with its value substituted)."""
    from hypothesis import HealthCheck, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    statuses: Counter[int] = Counter()
    calls: Counter[str] = Counter()
    failures: list[str] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {key}"}}

        def step(self, input: Any) -> Any:
            if input.transition is not None and input.is_applied:  # a value an earlier answer named
                calls[f"link {input.transition.id}"] += 1
            return super().step(input)

        def after_call(self, response: Any, case: Any) -> None:
            statuses[response.status_code] += 1
            calls[f"{case.operation.method.upper()} {case.operation.path}"] += 1

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kw: Any) -> None:
            case.validate_response(response, checks=checks, transport_kwargs=kw)

    try:
        Machine.run(settings=settings(max_examples=scenarios, stateful_step_count=steps, deadline=None,
                                      database=None, derandomize=True, suppress_health_check=list(HealthCheck)))
    except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - the first failing scenario, reported
        failures.append(f"stateful: {str(e)[:1500]}")
    return failures, statuses, sum(n for st, n in statuses.items() if st >= 500), calls


@click.command()
@click.option("--positive", type=int, default=100, show_default=True,
              help="Valid requests per operation and key.")
@click.option("--negative", type=int, default=40, show_default=True,
              help="Schema-breaking requests per operation and key.")
@click.option("--stateful", "scenarios", type=int, default=60, show_default=True,
              help="Stateful scenarios per key (chains of calls over the OpenAPI links; 0: none).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line with every figure.")
def command(positive: int, negative: int, scenarios: int, as_json: bool) -> None:
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
            links: Counter[str] = Counter()
            if scenarios:
                console.log(f"{label}: {scenarios} stateful scenarios over the links ...")
                more, seen, more_errors, calls = stateful(schema, key, scenarios)
                failures, errors = failures + more, errors + more_errors
                statuses.update(seen)
                links = Counter({k[5:]: v for k, v in calls.items() if k.startswith("link ")})
            result["keys"][label] = {"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
                                     "server_errors": errors, "failures": failures,
                                     "links_followed": dict(sorted(links.items()))}
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
                      f"5xx {k['server_errors']}, failed checks {len(k['failures'])}, links followed "
                      f"{sum(k['links_followed'].values())} ({len(k['links_followed'])} distinct)")
        for f in k["failures"][:10]:
            console.print(f"  {f}")
    console.print(f"all: {result['requests']} requests, {result['server_errors']} 5xx, {result['failures']} "
                  f"failed checks, {result['seconds']} s")
    if result["server_errors"] or result["failures"]:
        raise SystemExit(1)
