"""`crystallise bench attacks`: the poisoning and injection suite, through the real write and read paths.

    crystallise bench attacks                       # every attack, a table per family
    crystallise bench attacks --json                # + one JSON line: every attack with its outcome
    crystallise bench attacks --family skills --family cross-tenant
    crystallise bench attacks --sample 3            # the first 3 of every family (the test subset)
    crystallise bench attacks --store-url postgresql+psycopg://.../db

1. a fresh home (SQLite in a temp folder, or the database at --store-url) and the HTTP API
   (`crystallise serve`'s app) under uvicorn on 127.0.0.1, the proxy's upstream the scripted backend;
2. a victim world for the cross-tenant probes: org `victim` with canaries in its items, traces,
   versions and change sets, and real API keys (org keys, user-bound keys, admin);
3. every attack of the catalogue (bench/_attacks_catalog.py) through its executor
   (bench/_attacks_run.py, bench/_attacks_api.py), each in its own agent / org / user ids;
4. per attack the outcome — blocked / quarantined / leaked / allowed — judged from the store and
   the served context packs afterwards; per family and overall, the two goals:
   0 cross-tenant leaks, 0 hostile items active at agent (or org) level, 0 leaks that are not a
   documented known gap (an attack the catalogue marks `known_gap`, still run and counted).

Exit status 1 when a goal is missed, so CI can run it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from crystallise.engine.home import Home
from crystallise.testing import Server

OUTCOMES = ("blocked", "quarantined", "allowed", "leaked", "error")


def _load(name: str) -> Any:
    """A sibling module of this bench, imported on first use (bench/ is a package)."""
    return importlib.import_module(f".{name}", __package__)


@contextlib.contextmanager
def _server(app: Any) -> Iterator[Server]:
    """The API app under uvicorn in a thread (crystallise.testing.Server); a failed start is a click error."""
    server = Server(app, log_level="error", start_timeout=20)
    try:
        server.__enter__()
    except RuntimeError as exc:
        raise click.ClickException(f"the API server did not start ({exc})") from exc
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


def select(attacks: list[Any], families: tuple[str, ...], sample: int | None, ids: tuple[str, ...]) -> list[Any]:
    """The attacks to run: by id, by family, and at most `sample` per family (spread over the family)."""
    if ids:
        unknown = sorted(set(ids) - {a.id for a in attacks})
        if unknown:
            raise click.BadParameter(f"unknown attack id(s) {unknown}", param_hint="--id")
        return [a for a in attacks if a.id in ids]
    chosen = [a for a in attacks if not families or a.family in families]
    if sample is None:
        return chosen
    out = []
    for family in dict.fromkeys(a.family for a in chosen):
        group = [a for a in chosen if a.family == family]
        step = max(1, len(group) // sample)
        out += group[::step][:sample]
    return out


def goals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The suite's goals, measured: cross-tenant leaks, hostile items live at agent/org level, and leaks
    that are not a documented known gap (a known gap is still counted and listed); for the code
    families, the four zeros of issue 13 (host executions, injections, sandbox escapes, host
    exceptions), where a known gap counts like any other attack."""
    code = _load("_attacks_code").code_goals(results)
    content = [r for r in results if r["family"] not in _load("_attacks_code").CODE_FAMILIES]
    out = _content_goals(content)
    out.update(code)
    out["leaks"] += sum(1 for r in results if r["outcome"] == "leaked" and r not in content)
    out["met"] = out["met"] and code["code_met"]
    return out


def _content_goals(results: list[dict[str, Any]]) -> dict[str, Any]:
    leaked = [r for r in results if r["outcome"] == "leaked"]
    cross = [r["id"] for r in leaked if r["family"] == "cross-tenant" or r["success"].startswith("a response carries")]
    leftovers = [r["id"] for r in leaked if r["vector"] == "forget"]
    wide = [r["id"] for r in leaked if r["success"].startswith("the hostile text")
            and any(w["status"] == "active" and w["level"] in ("agent", "org") for w in r.get("written", []))]
    unexpected = [r["id"] for r in leaked if not r.get("known_gap")]
    closed = [r["id"] for r in results if r.get("known_gap") and r["outcome"] != "leaked"]
    errors = [r["id"] for r in results if r["outcome"] == "error"]
    access = [r for r in results if r["family"] == "tenancy-access"]
    return {"tenancy": {"attempts": len(access), "leaks": sum(r["outcome"] == "leaked" for r in access),
                        "stored_bad_inputs": sum(r.get("stored_bad", 0) for r in access),
                        "server_errors": sum(r.get("server_errors", 0) for r in access)},
            "cross_tenant_leaks": len(cross), "hostile_active_agent_or_org": len(wide), "leaks": len(leaked),
            "forget_leftovers": len(leftovers),
            "known_gap_leaks": len(leaked) - len(unexpected), "unexpected_leaks": len(unexpected),
            "errors": len(errors), "leaked_ids": [r["id"] for r in leaked], "error_ids": errors,
            "known_gaps_closed": closed, "met": not cross and not wide and not unexpected and not errors}


def detector_figures(catalog: Any) -> dict[str, Any]:
    """The rule detector alone on the catalogue's phrasings (not an attack: how far the rule list reaches)."""
    from crystallise.context.injection import detect

    def rate(texts: list[str]) -> dict[str, int]:
        return {"caught": sum(1 for t in texts if detect(t)), "of": len(texts)}

    variants = [f(b) for b in catalog.OBFUSCATION_BASE for f in catalog.TRANSFORMS.values()]
    return {"known_phrasings": rate(catalog.INJECTIONS), "paraphrases": rate(catalog.PARAPHRASES),
            "held_out": rate(catalog.HELD_OUT), "obfuscated": rate(variants),
            "languages": rate(list(catalog.TRANSLATIONS.values()))}


def run(store_url: str | None, attacks: list[Any], progress: Any = None) -> dict[str, Any]:
    """Run `attacks` against a fresh home; the JSON-able result."""
    code_mod = _load("_attacks_code")
    code_attacks = [a for a in attacks if a.family in code_mod.CODE_FAMILIES]
    attacks = [a for a in attacks if a.family not in code_mod.CODE_FAMILIES]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crystallise-attacks-") as tmp:
        home = Home.init(Path(tmp) / "home", store_url=store_url)
        home.config["trace_writes"] = "sync"  # the attacks read what a trace stored right after it
        results = _content(home, Path(tmp), attacks, progress) if attacks else []
        if code_attacks:
            results += code_mod.run_code(home, code_attacks, progress)
        store = home.store.__class__.__name__
        home.store.close()
    families: dict[str, dict[str, int]] = {}
    for r in results:
        families.setdefault(r["family"], dict.fromkeys(OUTCOMES, 0))[r["outcome"]] += 1
    overall = Counter(r["outcome"] for r in results)
    code_families = {f: code_mod.family_counters(results, f) for f in code_mod.CODE_FAMILIES
                     if any(r["family"] == f for r in results)}
    return {"attacks": results, "families": families, "overall": {o: overall.get(o, 0) for o in OUTCOMES},
            "total": len(results), "goals": goals(results), "store": store_url or "sqlite (temp)",
            "store_class": store, "seconds": round(time.perf_counter() - started, 1),
            "code_families": code_families, "environment": code_mod.environment() if code_attacks else {}}


def _content(home: Home, scratch: Path, attacks: list[Any], progress: Any) -> list[dict[str, Any]]:
    """The content and cross-tenant attacks, through the HTTP API on loopback."""
    from crystallise.server import create_app

    runner, api = _load("_attacks_run"), _load("_attacks_api")
    executors = {**runner.EXECUTORS, **_load("_attacks_mcp").executors(runner),
                 **_load("_attacks_tenancy").executors(runner), "api": api.api_attack,
                 "tenancy-access": _load("_attacks_access").tenancy_attack}
    lab = runner.Lab(home, scratch=scratch)
    lab.world = api.setup_world(lab)
    results = []
    with _server(create_app(home, upstream="scripted")) as server:
        lab.url = server.url
        for atk in attacks:
            t0 = time.perf_counter()
            try:
                outcome = executors[atk.vector](lab, atk)
            except Exception as e:  # noqa: BLE001 - an attack that crashes the code under test is a finding
                outcome = {"outcome": "error", "why": f"{type(e).__name__}: {e}"[:500],
                           "traceback": traceback.format_exc(limit=6)}
            results.append({**atk.to_dict(), **outcome, "seconds": round(time.perf_counter() - t0, 3)})
            if progress is not None:
                progress(results[-1])
    return results


def _table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"attacks: {result['total']} on {result['store']} in {result['seconds']} s")
    table.add_column("family")
    for o in OUTCOMES:
        table.add_column(o, justify="right")
    for family, counts in result["families"].items():
        table.add_row(family, *[str(counts[o]) for o in OUTCOMES])
    table.add_row("[b]overall[/b]", *[f"[b]{result['overall'][o]}[/b]" for o in OUTCOMES])
    console = Console(stderr=True, width=200)
    console.print(table)
    g = result["goals"]
    console.print(f"cross-tenant leaks: {g['cross_tenant_leaks']}   hostile items live at agent/org level: "
                  f"{g['hostile_active_agent_or_org']}   leaks: {g['leaks']} ({g['known_gap_leaks']} known gaps) "
                  f"{g['leaked_ids'][:10]}   errors: {g['errors']} {g['error_ids'][:10]}")
    t = g.get("tenancy") or {}
    if t.get("attempts"):
        console.print(f"tenancy-access: {t['attempts']} attempts, {t['leaks']} leaks, {t['stored_bad_inputs']} "
                      f"bad inputs stored, {t['server_errors']} 5xx")
    if result.get("code_families"):
        _code_table(console, result)
    d = result.get("detector")
    if d:
        console.print("detector alone: " + ", ".join(f"{k} {v['caught']}/{v['of']}" for k, v in d.items()))
    if g["known_gaps_closed"]:
        console.print(f"known gaps that no longer leak (remove their known_gap note): {g['known_gaps_closed']}")


def _code_table(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    classes = _load("_attacks_code_host").CLASSES
    table = Table(title="code paths (issue 13): what the host saw")
    for col in ("family", "cases", "blocked", "host executions", "injections", "escapes", *classes, "host exceptions"):
        table.add_column(col, justify="left" if col == "family" else "right")
    for family, c in result["code_families"].items():
        table.add_row(family, str(c["cases"]), str(c["blocked"]), str(c["host_executions"]), str(c["injections"]),
                      str(c["sandbox_escapes"]), *[str(c["escapes_by_class"][k]) for k in classes],
                      str(c["host_exceptions"]))
    console.print(table)
    g = result["goals"]
    console.print(f"host executions: {g['host_executions']} {g['code_ids']['host_executions'][:6]}   injections: "
                  f"{g['injections']} {g['code_ids']['injections'][:6]}   sandbox escapes: {g['sandbox_escapes']} "
                  f"{g['code_ids']['sandbox_escapes'][:6]}   host exceptions: {g['host_exceptions']} "
                  f"{g['code_ids']['host_exceptions'][:6]}   layers: {result.get('environment')}")
    console.print(f"language layer breached (the OS layers held; defence in depth, not a goal): "
                  f"{g['language_breaches']} {g['code_ids']['language_breaches'][:6]}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line on stdout.")
@click.option("--store-url", default=None, help="Database for the fresh home (default: SQLite in a temp folder).")
@click.option("--family", "families", multiple=True, help="Only these families (repeatable).")
@click.option("--sample", type=click.IntRange(1), default=None, help="At most N attacks per family.")
@click.option("--id", "ids", multiple=True, help="Only these attack ids (repeatable).")
@click.option("--list", "list_only", is_flag=True, help="List the catalogue and exit.")
def command(as_json: bool, store_url: str | None, families: tuple[str, ...], sample: int | None,
            ids: tuple[str, ...], list_only: bool) -> None:
    """Poisoning, injection and cross-tenant attacks through the real paths; blocked / quarantined / leaked."""
    catalog, code = _load("_attacks_catalog"), _load("_attacks_code")
    known = (*catalog.FAMILIES, *code.CODE_FAMILIES)
    unknown = sorted(set(families) - set(known))
    if unknown:
        raise click.BadParameter(f"unknown family {unknown}: use {list(known)}", param_hint="--family")
    attacks = select([*catalog.catalogue(), *code.catalogue()], families, sample, ids)
    if list_only:
        for a in attacks:
            click.echo(f"{a.id:32} {a.family:15} {a.vector:26} {a.note}")
        return

    def progress(r: dict[str, Any]) -> None:
        if not as_json:
            click.echo(f"{r['outcome']:11} {r['id']:32} {r['why'][:100]}", err=True)

    result = run(store_url, attacks, progress)
    if any(a.family in catalog.FAMILIES for a in attacks):
        result["detector"] = detector_figures(catalog)
    _table(result)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, default=str))
    if not result["goals"]["met"]:
        sys.exit(1)
