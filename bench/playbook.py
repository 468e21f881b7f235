"""`crystallise bench playbook`: curated (dreaming) vs add-only playbooks over one stream.

Three arms answer the same records with the same model, side by side:

  none      no playbook: the model alone (the reference for "gain")
  add_only  ACE's reference behaviour: every --learn-every records, each new failure is critiqued
            and every lesson proposed is appended to the playbook; the whole playbook is in
            every prompt; nothing is ever merged or removed
  dream     the same critic through `crystallise dream` (context/dream.py) on a real home:
            credit, curation (add / update / merge / supersede / retire), dedup, forgetting with
            a --budget token budget; served as crystallise serves context — `assemble()` with
            the record as query and a --context-tokens budget, so the pack records what was shown

Both learning arms critique with the same model and prompt (`LLMCritic`); the answers they learn
from are their own. Reported: accuracy and gain over `none` per arm, playbook size (tokens) over
the stream, mean context tokens per answer, versions committed. The issue's goal: the dream arm's
gain at least the add-only arm's, at no more than half its context tokens.

Writes curve.png (running accuracy), tokens.png (playbook tokens), result.json, report.md to --out.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from crystallise.backends.base import CompletionRequest, Message
from crystallise.report import pyplot
from crystallise.context.critique import LLMCritic
from crystallise.context.curate import DreamPolicy
from crystallise.errors import ValidationError
from crystallise.gate import score_numeric
from crystallise.backends.base import approx_tokens
from crystallise.engine.home import Home
from crystallise.types import Feedback, Scope, Span, Trace

from . import stream

AGENT = "playbook-bench"
INSTRUCTIONS = "Answer the question. Reply with the final answer only, no explanation."


def _load(path: Path, limit: int | None) -> list[dict[str, Any]]:
    return stream.load_records(path, limit)


def _input(rec: dict[str, Any]) -> str:
    return str(rec["context"] if "context" in rec else rec["input"])


def _ask(backend: Any, rec: dict[str, Any], bullets: Sequence[str]) -> tuple[str, int]:
    """The model's answer with `bullets` in the prompt, and the tokens the bullets cost."""
    playbook = "\n".join(f"- {b}" for b in bullets)
    system = INSTRUCTIONS + (f"\n\nPlaybook (lessons from earlier questions):\n{playbook}" if bullets else "")
    request = CompletionRequest(messages=[Message("system", system), Message("user", _input(rec))], max_tokens=24,
                                metadata={"record": rec})
    text = backend.complete(request).text.strip()
    return text, approx_tokens(playbook) if bullets else 0


def _trace(rec: dict[str, Any], output: str, ok: bool, shown: Sequence[str]) -> Trace:
    return Trace(name="playbook-bench", agent_id=AGENT, input=_input(rec), output=output,
                 spans=[Span("context", "retrieval", attributes={"shown_items": list(shown)})],
                 feedback=[Feedback(trace_id="", score=1.0 if ok else 0.0, correction=rec["target"])])


def run_arms(records: Sequence[dict[str, Any]], backend: Any, critic_backend: Any, home: Home, *,
             learn_every: int = 10, budget: int = 400, context_tokens: int = 300,
             metric: Callable[[Any, Any], bool] = score_numeric,
             say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Run the three arms over `records` (see the module docstring); returns the per-record series."""
    from crystallise.engine.serving import assemble
    from crystallise.engine.dream import dream

    critic = LLMCritic(critic_backend)
    policy = DreamPolicy(token_budget={"agent": budget, "org": None, "user": None}, unused_days=None,
                         max_critiques=max(learn_every, 1))
    flags: dict[str, list[bool]] = {"none": [], "add_only": [], "dream": []}
    ctx: dict[str, list[int]] = {"add_only": [], "dream": []}
    size: dict[str, list[int]] = {"add_only": [], "dream": []}
    add_only: list[str] = []
    pending: list[Trace] = []  # add-only failures not yet critiqued
    versions0 = len(home.store.list_versions(limit=100_000))
    markers: list[int] = []
    for i, rec in enumerate(records, 1):
        out, _ = _ask(backend, rec, [])
        flags["none"].append(bool(metric(out, rec["target"])))
        out, tokens = _ask(backend, rec, add_only)
        ok = bool(metric(out, rec["target"]))
        flags["add_only"].append(ok)
        ctx["add_only"].append(tokens)
        if not ok:
            pending.append(_trace(rec, out, ok, []))
        pack = assemble(agent=AGENT, query=_input(rec), budget_tokens=context_tokens, home=home, kind="bullet")
        out, tokens = _ask(backend, rec, [it.text for it in pack.items])
        ok = bool(metric(out, rec["target"]))
        flags["dream"].append(ok)
        ctx["dream"].append(tokens)
        home.store.write_trace(_trace(rec, out, ok, pack.item_ids))  # assemble() counted them as shown
        if i % 5 == 0 and i % learn_every:
            say(f"{i}/{len(records)} answered (three arms)")
        if i % learn_every == 0 or i == len(records):
            for t in pending:  # ACE's reference: append every lesson proposed
                for p in critic.critique(t, []).proposals:
                    text = " ".join((p.text or "").split())
                    if p.op == "add" and text and len(text) <= 1000 and text not in add_only:
                        add_only.append(text)
            pending = []
            report = dream(home, Scope(agent=AGENT), backend=critic_backend, policy=policy)
            if any(s.version for s in report.scopes):
                markers.append(i)
            say(f"@{i}: add-only {len(add_only)} lessons / dream {report.totals()} "
                f"| acc none {_mean(flags['none']):.0%} add-only {_mean(flags['add_only']):.0%} "
                f"dream {_mean(flags['dream']):.0%}")
        size["add_only"].append(approx_tokens("\n".join(f"- {b}" for b in add_only)) if add_only else 0)
        live = home.store.query_items(agent=AGENT, levels=("agent",), kind="bullet", limit=100_000)
        size["dream"].append(sum(approx_tokens(f"- {it.text}") for it in live))
    return {"flags": flags, "context_tokens": ctx, "playbook_tokens": size, "markers": markers,
            "versions": len(home.store.list_versions(limit=100_000)) - versions0,
            "add_only_playbook": add_only,
            "dream_playbook": [it.text for it in home.store.query_items(agent=AGENT, levels=("agent",),
                                                                        kind="bullet", limit=100_000)]}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarise(series: dict[str, Any]) -> dict[str, Any]:
    f, c, s = series["flags"], series["context_tokens"], series["playbook_tokens"]
    acc = {arm: round(_mean(v), 4) for arm, v in f.items()}
    out = {
        "n": len(f["none"]),
        "accuracy": acc,
        "gain": {arm: round(acc[arm] - acc["none"], 4) for arm in ("add_only", "dream")},
        "context_tokens_mean": {arm: round(_mean(v), 1) for arm, v in c.items()},
        "playbook_tokens_final": {arm: (v[-1] if v else 0) for arm, v in s.items()},
        "versions_committed": series["versions"],
    }
    ratio = out["context_tokens_mean"]["dream"] / max(1e-9, out["context_tokens_mean"]["add_only"])
    out["context_token_ratio"] = round(ratio, 3) if out["context_tokens_mean"]["add_only"] else None
    out["goal_met"] = bool(out["gain"]["dream"] >= out["gain"]["add_only"] and out["context_token_ratio"] is not None
                           and out["context_token_ratio"] <= 0.5)
    return out


def write(out: Path, series: dict[str, Any], result: dict[str, Any], title: str) -> None:
    from crystallise.report import learning_curve

    out.mkdir(parents=True, exist_ok=True)
    learning_curve(out / "curve.png", title, series["flags"], markers=series["markers"])
    plt = pyplot()  # matplotlib (the bench extra), or an ImportError that names it

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for arm, values in series["playbook_tokens"].items():
        ax.plot(range(1, len(values) + 1), values, label=f"{arm} playbook")
    for arm, values in series["context_tokens"].items():
        ax.plot(range(1, len(values) + 1), values, linestyle=":", label=f"{arm} context / answer")
    ax.set_xlabel("records seen")
    ax.set_ylabel("tokens")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tokens.png", dpi=110)
    plt.close(fig)
    (out / "result.json").write_text(json.dumps({**result, "playbooks": {
        "add_only": series["add_only_playbook"], "dream": series["dream_playbook"]}}, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in result.items())
    (out / "report.md").write_text(f"# Playbook benchmark\n\n| field | value |\n|---|---|\n{rows}\n\n"
                                   "![accuracy](curve.png)\n![tokens](tokens.png)\n")


@click.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help="JSONL records.")
@click.option("--model", default="local", show_default=True, help="Model that answers (local, local:NAME, ...).")
@click.option("--critic-model", default=None, help="Model that critiques failures (default: --model).")
@click.option("--limit", type=int, default=None, help="Use the first N records.")
@click.option("--learn-every", type=int, default=10, show_default=True, help="Critique / dream every N records.")
@click.option("--budget", type=int, default=400, show_default=True, help="The dream arm's playbook token budget.")
@click.option("--context-tokens", type=int, default=300, show_default=True,
              help="The dream arm's context pack budget per answer.")
@click.option("--metric", type=click.Choice(sorted(stream.METRICS)), default="numeric", show_default=True,
              help="How an answer is scored (exact: BIG-Bench-Hard's yes/no, options, words).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Report folder.")
@click.option("--json", "as_json", is_flag=True)
def command(data_path: Path, model: str, critic_model: str | None, limit: int | None, learn_every: int, budget: int,
            context_tokens: int, metric: str, out_dir: Path | None, as_json: bool) -> None:
    """Dreaming vs an add-only playbook: accuracy and context tokens over one stream."""
    from rich.console import Console

    from crystallise.engine.loop import CachedBackend

    console = Console(stderr=True)
    if learn_every < 1 or budget < 1 or context_tokens < 1:
        raise ValidationError("--learn-every, --budget and --context-tokens must be at least 1")
    records = _load(data_path, limit)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crystallise-playbook-") as tmp:
        home = Home.init(Path(tmp) / "home")
        try:
            backend = CachedBackend(home.backend(model))
            critic = backend if not critic_model or critic_model == model else CachedBackend(home.backend(critic_model))
            series = run_arms(records, backend, critic, home, learn_every=learn_every, budget=budget,
                              context_tokens=context_tokens, metric=stream.METRICS[metric],
                              say=lambda m: console.log(m))
        finally:
            home.close()
    result = {**summarise(series), "model": model, "critic_model": critic_model or model, "data": str(data_path),
              "learn_every": learn_every, "budget": budget, "context_tokens": context_tokens, "metric": metric,
              "wall_s": round(time.perf_counter() - start, 1)}
    out = out_dir or Path("reports") / f"playbook-{time.strftime('%Y%m%d-%H%M%S')}"
    write(out, series, result, f"{data_path.name} ({model}): none vs add-only vs dream")
    if as_json:
        click.echo(json.dumps(result))
        return
    console.print(f"accuracy {result['accuracy']}  gain {result['gain']}\n"
                  f"context tokens/answer {result['context_tokens_mean']}  playbook tokens "
                  f"{result['playbook_tokens_final']}  goal met: {result['goal_met']}\nreport: {out / 'report.md'}")
