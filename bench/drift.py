"""`crystallise bench drift`: drift injected into a crystallised task's stream; how soon is it softened, at what cost?

A stream of formula questions (three templates, two dollar amounts each) is answered by the
loop with feedback, learning every --learn-every records. At --drift-at the world changes for
one template (the most frequent after the drift point; ties: the first), so the crystallised
program starts answering that template wrongly. Two arms see the same stream:

  lifecycle   the loop with the grade rules on (shadow checks at --shadow-rate)
  frozen      the same loop with the lifecycle off: the drifted program keeps serving

Drift (--drift): `formula` (default, synthetic stream) — one template's definition changes
over the same amounts (the asset ratio a/b becomes (a-b)/b); `scale` — its right
answer becomes --drift-factor times the old one (a unit change; the only kind with --data);
`format` — the *input format* of one template changes (same question, stated through other
amounts: debt and equity instead of assets and debt), while the old format stays right. After
the stream, the final program is probed by code on fresh inputs of both shapes
(`final_program`): one program must answer both, and the old shape must not regress.

Reported: the records from the drift until the task was softened (and until it was
re-crystallised), accuracy per phase (before drift, drift -> softened, softened -> re-crystallised,
after) for both arms, the share served by code, and the grade moves with their record index.

The "LLM" is the replay backend over a recorded answer per record (`llm` field): right on a
fixed, hashed share of records (--llm-accuracy), "0" otherwise, so runs are deterministic
and need no model. With --data, records of a JSONL file ({"context", "target"}) are used
instead, and drift hits the most common template.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import click

from crystallise.errors import ValidationError
from crystallise.gate import score_numeric
from crystallise.harness.grades import GradePolicy
from crystallise.harness.programs import load, sandbox_runner
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec, View, task_path
from crystallise.engine.home import Home
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.testing import read_jsonl

TEMPLATES = [  # (text, formula, the formula after a definition change)
    ("Use formula Asset Ratio to answer. Question: a firm holds ${a:,} of assets against ${b:,} of debt. Answer:",
     lambda a, b: a / b, lambda a, b: (a - b) / b),
    ("Use formula Gross Margin to answer. Question: revenue was ${a:,} and cost of goods ${b:,}. Answer:",
     lambda a, b: (a - b) / a, lambda a, b: (a - b) / b),
    ("Use formula Cost Share to answer. Question: total spend is ${a:,}, of which ${b:,} is rent. Answer:",
     lambda a, b: b / a, lambda a, b: b / (a - b)),
]


# --drift format: the same question as TEMPLATES[k], asked in another format (another input shape)
NEW_FORMATS = {
    0: ("Use formula Asset Ratio to answer. Question: a firm owes ${d:,} of debt and has ${e:,} of equity. Answer:",
        lambda d, e: (d + e) / d),
    1: ("Use formula Gross Margin to answer. Question: cost of goods was ${c:,} and gross profit ${g:,}. Answer:",
        lambda c, g: g / (c + g)),
    2: ("Use formula Cost Share to answer. Question: rent is ${r:,} and all other spend ${o:,}. Answer:",
        lambda r, o: r / (r + o)),
}


def reformat(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The record's question in the template's new format (fresh amounts; the right answer is the same formula's)."""
    text, fn = NEW_FORMATS[int(record["key"])]
    x = rng.randrange(200, 40_000, 10)
    y = rng.randrange(x // 4 + 10, 90_000, 10)
    return {**record, "context": text.format(d=x, e=y, c=x, g=y, r=x, o=y), "value": fn(x, y), "changed": fn(x, y),
            "shape": "new"}


def _hash01(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def synthetic(n: int, seed: int) -> list[dict[str, Any]]:
    """n records over the three templates, amounts drawn by a seeded RNG; `key` names the template."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = i % len(TEMPLATES)
        text, fn, changed = TEMPLATES[k]
        a = rng.randrange(2_000, 90_000, 10)
        b = rng.randrange(100, a // 2, 10)
        out.append({"context": text.format(a=a, b=b), "value": fn(a, b), "changed": changed(a, b), "key": str(k)})
    return out


def from_file(path: Path, n: int) -> list[dict[str, Any]]:
    rows = [row for _, row in itertools.islice(read_jsonl(path), n)]
    out = []
    for r in rows:
        try:
            value = float(str(r["target"]).replace(",", ""))
        except (KeyError, ValueError):
            continue
        text = r.get("context") or r.get("input")
        out.append({"context": text, "value": value, "key": str(text).split(".")[0]})
    return out


def finalise(records: list[dict[str, Any]], drift_at: int, kind: str, factor: float, key: str,
             llm_accuracy: float, places: int = 2) -> list[dict[str, Any]]:
    """Targets (drifted after drift_at for one template) and the simulated LLM's recorded answer."""
    for i, r in enumerate(records):
        r["drifted"] = i >= drift_at and r["key"] == key
        if r["drifted"] and kind == "format":
            r.update(reformat(r, random.Random(f"format:{i}")))
        changed = r["changed"] if kind in ("formula", "format") else r["value"] * factor
        value = changed if r["drifted"] else r["value"]
        r["target"] = f"{round(value, places)}"
        r["llm"] = r["target"] if _hash01(f"llm:{i}:{r['context']}") < llm_accuracy else "0"
    return records


def probes_for(key: str, n: int = 40) -> dict[str, list[tuple[str, str]]]:
    """Fresh inputs of the drifted template in the old and in the new format, with their right answers."""
    old = [r for r in synthetic(n * len(TEMPLATES), seed=7_919) if r["key"] == key][:n]
    new = [reformat(r, random.Random(f"probe:{i}")) for i, r in enumerate(old)]
    return {"old shape": [(r["context"], f"{round(r['value'], 2)}") for r in old],
            "new shape": [(r["context"], f"{round(r['value'], 2)}") for r in new]}


def probe(home: Home, name: str, probes: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """The final program, by code alone, on the probe inputs of each shape: share answered right."""
    meta = json.loads(View.of(home.repo).read(task_path(name, "program.json")) or "{}")
    if not meta.get("program"):
        return {shape: 0.0 for shape in probes}
    program = load(meta["program"], sandbox_runner)
    out: dict[str, Any] = {}
    for shape, cases in probes.items():
        right = 0
        for text, target in cases:
            got = program.solve(text)
            right += got is not None and bool(score_numeric(got, target))
        out[shape] = round(right / len(cases), 4)
    return out


def run_arm(home: Home, name: str, records: list[dict[str, Any]], model: str, learn_every: int, lifecycle: bool,
            policy: GradePolicy, probes: dict[str, list[tuple[str, str]]] | None = None) -> dict[str, Any]:
    backend = CachedBackend(home.backend(model))
    loop = Loop(home, TaskSpec(name=name, metric="numeric", max_tokens=24), backend, score_numeric,
                LoopConfig(learners=("crystallise",), lifecycle=lifecycle, shadow="inline", grade_policy=policy))
    flags, code, grades_at, moves = [], [], [], []
    grade = "G0"
    for i, r in enumerate(records, 1):
        ans, tid = loop.answer(r["context"], record=r)
        ok = ans.output is not None and score_numeric(ans.output, r["target"])
        loop.feedback(tid, r["target"], ok)
        flags.append(ok)
        code.append(ans.served_by == "code")
        grades_at.append(grade)
        if i % learn_every == 0 or i == len(records):
            report = loop.learn()
            for cs in report.proposed:
                if cs.verdict and cs.verdict.decision == "accept" and cs.learner in ("lifecycle", "crystallise"):
                    moves.append({"record": i, "learner": cs.learner, "summary": cs.summary})
            grade = View.of(home.repo).spec(name).grade
    loop.shadow.close()
    return {"final_program": probe(home, name, probes) if probes else None, "flags": flags, "code": code,
            "grades": grades_at, "moves": moves,
            "shadow_checks": loop.shadow.done, "eval_cases": len(View.of(home.repo).jsonl(f"tasks/{name}/evals.jsonl"))}


def _acc(flags: list[bool], lo: int, hi: int) -> float | None:
    part = flags[lo:hi]
    return round(sum(part) / len(part), 4) if part else None


@click.command()
@click.option("--records", "n", type=int, default=600, show_default=True)
@click.option("--drift-at", type=int, default=300, show_default=True)
@click.option("--drift", "kind", type=click.Choice(["formula", "scale", "format"]), default="formula",
              show_default=True)
@click.option("--drift-factor", type=float, default=100.0, show_default=True,
              help="--drift scale: the drifted template's right answer is this times the old one.")
@click.option("--learn-every", type=int, default=20, show_default=True)
@click.option("--shadow-rate", type=float, default=0.05, show_default=True)
@click.option("--llm-accuracy", type=float, default=0.3, show_default=True,
              help="Share of records the simulated LLM (replay:llm) answers right.")
@click.option("--model", default="replay:llm", show_default=True)
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="JSONL records {context, target} instead of the synthetic templates.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def command(ctx: click.Context, n: int, drift_at: int, kind: str, drift_factor: float, learn_every: int,
            shadow_rate: float, llm_accuracy: float, model: str, data_path: Path | None, seed: int,
            as_json: bool) -> None:
    """Drift injected into a crystallised task: records until softened, accuracy before/after, both arms."""
    if not 0 < drift_at < n:
        raise ValidationError("--drift-at must be inside the stream: 0 < --drift-at < --records")
    if data_path and kind in ("formula", "format"):
        raise ValidationError(f"--data records have no second {kind}: use --drift scale with --data")
    records = from_file(data_path, n) if data_path else synthetic(n, seed)
    keys = [r["key"] for r in records[drift_at:]]
    key = max(sorted(set(keys)), key=keys.count)
    records = finalise(records, drift_at, kind, drift_factor, key, llm_accuracy)
    home = Home.open(ctx.obj["home_path"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    policy = GradePolicy(shadow_rate=shadow_rate)
    start = time.perf_counter()
    probes = probes_for(key) if kind == "format" else None
    arms = {arm: run_arm(home, f"drift-{arm}-{stamp}", [dict(r) for r in records], model, learn_every,
                         arm == "lifecycle", policy, probes) for arm in ("lifecycle", "frozen")}
    close_sandboxes()
    wall = time.perf_counter() - start
    on = arms["lifecycle"]
    softened = next((m["record"] for m in on["moves"] if m["record"] > drift_at and "soften" in m["summary"]), None)
    back = next((m["record"] for m in on["moves"] if softened and m["record"] >= softened
                 and m["learner"] == "crystallise"), None)
    first_g4 = next((i for i, g in enumerate(on["grades"]) if g in ("G4", "G5")), drift_at)
    phases = {"crystallised, before drift": (first_g4, drift_at),
              "drift -> softened": (drift_at, softened or n),
              "softened -> re-crystallised": (softened or n, back or n),
              "after re-crystallisation": (back or n, n),
              "after drift (all)": (drift_at, n)}
    drifted_idx = [i for i, r in enumerate(records) if r["drifted"]]
    result = {
        "records": n, "drift_at": drift_at, "drift": kind,
        "drift_factor": drift_factor if kind == "scale" else None, "drifted_template": key,
        "drifted_records": len(drifted_idx), "learn_every": learn_every, "shadow_rate": shadow_rate,
        "llm_accuracy": llm_accuracy, "model": model, "data": str(data_path) if data_path else "synthetic",
        "records_until_softened": (softened - drift_at) if softened else None,
        "drifted_records_until_softened": sum(1 for i in drifted_idx if i < (softened or n)),
        "records_until_recrystallised": (back - drift_at) if back else None,
        "phases": {name: {"records": hi - lo, **{arm: {"accuracy": _acc(a["flags"], lo, hi),
                                                       "served_by_code": _acc(a["code"], lo, hi)}
                                                 for arm, a in arms.items()}} for name, (lo, hi) in phases.items()},
        "accuracy_drifted_template_after": {arm: round(sum(a["flags"][i] for i in drifted_idx)
                                                       / max(1, len(drifted_idx)), 4) for arm, a in arms.items()},
        "final_program": {arm: a["final_program"] for arm, a in arms.items()} if probes else None,
        "moves": on["moves"], "shadow_checks": on["shadow_checks"], "eval_cases": on["eval_cases"],
        "wall_s": round(wall, 1),
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    how = f"×{drift_factor:g}" if kind == "scale" else f"{kind} changed"
    click.echo(f"drift at record {drift_at} of {n} (template {key!r} {how}, "
               f"{len(drifted_idx)} drifted records); learning every {learn_every}")
    click.echo(f"  softened after {result['records_until_softened']} records "
               f"({result['drifted_records_until_softened']} drifted answers); "
               f"re-crystallised after {result['records_until_recrystallised']}")
    for name, p in result["phases"].items():
        cells = "  ".join(f"{arm} {_fmt(p[arm]['accuracy'])} (code {_fmt(p[arm]['served_by_code'])})"
                          for arm in arms)
        click.echo(f"  {name:<30} n={p['records']:<4} {cells}")
    if result["final_program"]:
        for arm, shapes in result["final_program"].items():
            click.echo(f"  final program ({arm}), by code on fresh inputs: "
                       + "  ".join(f"{shape} {_fmt(acc)}" for shape, acc in shapes.items()))
    for m in result["moves"]:
        click.echo(f"  @{m['record']:<4} {m['summary']}")
    click.echo(f"  wall {result['wall_s']} s")


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"
