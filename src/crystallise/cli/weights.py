"""`crystallise weights ...`: datasets from traces, LoRA adapters, serving per scope, TTT, STaR.

    weights export   --agent A [--org O] [--task T] --out DIR     verified runs -> sft.jsonl + pairs.jsonl
    weights train    --data DIR/sft.jsonl --task T [--agent A] [--org O] [...]   train, gate, commit
    weights list                                                   adapters served per scope
    weights show     [--agent A] [--org O]                         one scope's manifest
    weights ask      PROMPT [--agent A] [--org O]                  answer with the scope's adapter (or the base)
    weights ttt      --document FILE --question Q                  test-time training, adapter discarded after
    weights distill  --data JSONL --task T                         STaR rounds with the gate between them

Undo an adapter with `crystallise revert N` (its version): the previous adapter serves again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from crystallise.errors import ValidationError
from crystallise.types import Scope


def _scope(agent: str, org: str | None) -> Scope:
    return Scope(agent=agent, org=org)


def _scope_options(f: Any) -> Any:
    f = click.option("--org", default=None, help="Org (tenant) scope; omitted: the agent's own scope.")(f)
    return click.option("--agent", default="default", show_default=True, help="Agent scope.")(f)


def _say(msg: str) -> None:
    from crystallise.cli import console

    console.print(f"[dim]{msg}[/dim]", highlight=False)


def _verifier(kind: str) -> dict[str, Any]:
    return {"kind": "exact", "casefold": True} if kind == "casefold" else {"kind": kind}


def register(main: click.Group) -> None:
    from crystallise.cli import emit, open_home, out

    @main.group()
    def weights() -> None:
        """LoRA adapters: export verified data, train with forgetting measured and gated, serve per scope."""

    @weights.command("export")
    @_scope_options
    @click.option("--task", "tasks", multiple=True, help="Only runs of this task (repeatable).")
    @click.option("--system", default=None, help="A system message to put before every prompt.")
    @click.option("--agent-only", is_flag=True, help="With --org: only the runs of --agent in that org.")
    @click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Folder to write.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def export_cmd(ctx: click.Context, agent: str, org: str | None, tasks: tuple[str, ...], system: str | None,
                   agent_only: bool, out_dir: Path, as_json: bool) -> None:
        """Verified runs of a scope -> sft.jsonl (chat) + pairs.jsonl (corrections), PII redacted, trace ids kept."""
        from crystallise.weights.dataset import export_dataset

        home = open_home(ctx)
        ds = export_dataset(home.store, _scope(agent, org), tasks=list(tasks) or None, system=system,
                            agent_only=agent_only)
        info = ds.write(out_dir)
        if emit(info, as_json):
            return
        out.print(f"{info['sft']['examples']} SFT examples, {info['pairs']['examples']} preference pairs "
                  f"from {info['traces']} verified runs -> {out_dir}")
        out.print(f"  redacted: {info['redactions'] or 'nothing'}; skipped: {info['skipped'] or 'nothing'}")

    @weights.command("train")
    @_scope_options
    @click.option("--data", type=click.Path(path_type=Path), required=True,
                  help="sft.jsonl (or pairs.jsonl with --objective dpo).")
    @click.option("--task", required=True, help="Name of the target suite (the task these examples teach).")
    @click.option("--gate-data", type=click.Path(path_type=Path), default=None,
                  help="SFT records for the target suite (default: 1 in 4 of --data by trace id).")
    @click.option("--base", "base_name", default="smollm2-135m", show_default=True)
    @click.option("--steps", default=50, show_default=True)
    @click.option("--batch-size", default=4, show_default=True)
    @click.option("--max-len", default=128, show_default=True)
    @click.option("--lr", default=1e-3, show_default=True)
    @click.option("--rank", default=8, show_default=True)
    @click.option("--replay-share", default=0.25, show_default=True, help="Share of every batch from retention data.")
    @click.option("--regulariser", type=click.Choice(["l2", "ewc", "none"]), default="l2", show_default=True)
    @click.option("--reg-weight", default=0.05, show_default=True)
    @click.option("--objective", type=click.Choice(["sft", "dpo"]), default="sft", show_default=True)
    @click.option("--max-forgetting", default=0.05, show_default=True, help="Gate tolerance, accuracy points / 100.")
    @click.option("--verifier", type=click.Choice(["exact", "casefold", "numeric"]), default="exact", show_default=True)
    @click.option("--max-new-tokens", default=16, show_default=True)
    @click.option("--name", default=None)
    @click.option("--device", default=None, help="cpu or cuda (default: cuda when present).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def train_cmd(ctx: click.Context, agent: str, org: str | None, data: Path, task: str, gate_data: Path | None,
                  base_name: str, steps: int, batch_size: int, max_len: int, lr: float, rank: int,
                  replay_share: float, regulariser: str, reg_weight: float, objective: str, max_forgetting: float,
                  verifier: str, max_new_tokens: int, name: str | None, device: str | None, as_json: bool) -> None:
        """Train the scope's next adapter, measure target gain and forgetting, gate, commit on accept."""
        from crystallise.gate import WeightsPolicy
        from crystallise.weights.dataset import read_jsonl
        from crystallise.engine.adapters import learn_adapter
        from crystallise.weights.train import TrainConfig

        home = open_home(ctx)
        rows = read_jsonl(data)
        gate_rows = read_jsonl(gate_data) if gate_data else None
        config = TrainConfig(steps=steps, batch_size=batch_size, max_len=max_len, lr=lr, rank=rank, alpha=2 * rank,
                             replay_share=replay_share, regulariser=regulariser, reg_weight=reg_weight,  # type: ignore[arg-type]
                             objective=objective, device=device)  # type: ignore[arg-type]
        if objective == "dpo" and gate_rows is None:
            raise ValidationError("--objective dpo trains from preference pairs; the gate needs SFT rows: "
                                  "pass --gate-data sft.jsonl")
        outcome = learn_adapter(home, _scope(agent, org), rows, task=task, base_name=base_name, config=config,
                                policy=WeightsPolicy(max_forgetting=max_forgetting), verifier=_verifier(verifier),
                                name=name, gate_rows=gate_rows, max_new_tokens=max_new_tokens,
                                progress=None if as_json else _say)
        result = {"decision": outcome.verdict.decision, "reason": outcome.verdict.reason,
                  "version": outcome.version.number if outcome.version else None,
                  "adapter": outcome.manifest["weights"]["sha256"], "metrics": outcome.manifest["metrics"],
                  "training": outcome.manifest["training"], "timings": outcome.timings}
        if emit(result, as_json):
            return
        m = outcome.manifest["metrics"]
        out.print(f"adapter {outcome.manifest['name']} ({result['adapter'][:12]})")
        out.print(f"  target {m['target']['suite']}: {m['target']['old']:.1%} -> {m['target']['new']:.1%} "
                  f"(gain {100 * m['target']['gain']:+.1f} points, n={m['target']['n']})")
        for sname, s in m["retention"].items():
            out.print(f"  retention {sname}: {s['old']:.1%} -> {s['new']:.1%} (n={s['n']})")
        out.print(f"  forgetting {100 * m['forgetting']:.1f} points"
                  + (f", BWT {100 * m['bwt']:+.1f} points" if m.get("bwt") is not None else ""))
        out.print(f"gate: {outcome.verdict.reason}")
        if outcome.version:
            out.print(f"version {outcome.version.number} serves it; undo: crystallise revert {outcome.version.number}")

    @weights.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def list_cmd(ctx: click.Context, as_json: bool) -> None:
        """The adapter each scope serves now."""
        from rich.table import Table

        home = open_home(ctx)
        rows = []
        for path in home.repo.list_files("adapters/"):
            parts = path.split("/")
            if len(parts) == 4 and parts[3] == "adapter.json":
                m = json.loads(home.repo.read(path) or "{}")
                t = m.get("metrics", {}).get("target", {})
                rows.append({"scope": f"{parts[1]} {parts[2]}", "name": m.get("name"),
                             "weights": m["weights"]["sha256"], "base": m["base"]["name"],
                             "target": t.get("suite"), "gain": t.get("gain"),
                             "forgetting": m.get("metrics", {}).get("forgetting")})
        if emit(rows, as_json):
            return
        table = Table("scope", "adapter", "weights", "base", "target", "gain", "forgetting")
        for r in rows:
            table.add_row(r["scope"], str(r["name"]), r["weights"][:12], r["base"], str(r["target"]),
                          f"{100 * (r['gain'] or 0):+.1f}", f"{100 * (r['forgetting'] or 0):.1f}")
        out.print(table if rows else "no adapters yet: `crystallise weights train` makes one")

    @weights.command("show")
    @_scope_options
    @click.pass_context
    def show_cmd(ctx: click.Context, agent: str, org: str | None) -> None:
        """The manifest of the adapter a scope serves (JSON)."""
        from crystallise.weights.modules import current_manifest, scope_key

        home = open_home(ctx)
        level, owner = scope_key(_scope(agent, org))
        m = current_manifest(home, level, owner)
        if m is None:
            raise ValidationError(f"{level} {owner} serves the base model (no adapter): see `crystallise weights list`")
        click.echo(json.dumps(m, indent=2, sort_keys=True))

    @weights.command("ask")
    @click.argument("prompt")
    @_scope_options
    @click.option("--base", "base_name", default="smollm2-135m", show_default=True)
    @click.option("--runtime", type=click.Choice(["llama", "transformers"]), default="llama", show_default=True)
    @click.option("--max-tokens", default=64, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def ask_cmd(ctx: click.Context, prompt: str, agent: str, org: str | None, base_name: str, runtime: str,
                max_tokens: int, as_json: bool) -> None:
        """Answer PROMPT as the scope is served: its adapter on the base, else the base."""
        from crystallise.backends import CompletionRequest, Message
        from crystallise.weights.serve import serving_backend

        home = open_home(ctx)
        backend, choice = serving_backend(home, _scope(agent, org), base_name=base_name, runtime=runtime)
        c = backend.complete(CompletionRequest([Message("user", prompt)], max_tokens=max_tokens))
        if emit({"served_by": choice.reason, "adapter": choice.digest, "text": c.text,
                 "latency_ms": c.latency_ms}, as_json):
            return
        out.print(f"[dim]served by {choice.reason}[/dim]")
        click.echo(c.text)

    @weights.command("ttt")
    @click.option("--document", type=click.Path(path_type=Path, exists=True), required=True)
    @click.option("--question", "questions", multiple=True, required=True)
    @click.option("--base", "base_name", default="smollm2-135m", show_default=True)
    @click.option("--steps", default=20, show_default=True)
    @click.option("--window", default=128, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def ttt_cmd(ctx: click.Context, document: Path, questions: tuple[str, ...], base_name: str, steps: int,
                window: int, as_json: bool) -> None:
        """Test-time training: fit a throw-away adapter on DOCUMENT, answer, discard it (nothing is saved)."""
        from crystallise.weights.base import BaseModel
        from crystallise.weights.ttt import TestTimeTrainer, TTTConfig

        home = open_home(ctx)
        ttt = TestTimeTrainer(BaseModel.open(home.models_dir, base_name), TTTConfig(steps=steps, window=window))
        r = ttt.answer(document.read_text(encoding="utf-8"), list(questions))
        if emit({"answers": r.answers, "train_s": r.train_s, "answer_s": r.answer_s, "windows": r.windows}, as_json):
            return
        for q, a in zip(questions, r.answers):
            out.print(f"[bold]{q}[/bold]\n{a}")
        out.print(f"[dim]trained {steps} steps on {r.windows} windows in {r.train_s:.1f} s; adapter discarded[/dim]")

    @weights.command("distill")
    @_scope_options
    @click.option("--data", type=click.Path(path_type=Path), required=True,
                  help='JSONL of {"input" or "context", "target"} problems.')
    @click.option("--task", required=True)
    @click.option("--limit", default=64, show_default=True)
    @click.option("--rounds", default=3, show_default=True)
    @click.option("--samples", default=4, show_default=True)
    @click.option("--temperature", default=0.8, show_default=True)
    @click.option("--steps", default=30, show_default=True)
    @click.option("--verifier", type=click.Choice(["exact", "casefold", "numeric"]), default="numeric",
                  show_default=True)
    @click.option("--max-forgetting", default=0.05, show_default=True)
    @click.option("--base", "base_name", default="smollm2-135m", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def distill_cmd(ctx: click.Context, agent: str, org: str | None, data: Path, task: str, limit: int, rounds: int,
                    samples: int, temperature: float, steps: int, verifier: str, max_forgetting: float,
                    base_name: str, as_json: bool) -> None:
        """STaR: sample answers, keep the verified ones, train, gate; repeat while the gate accepts."""
        from crystallise.gate import WeightsPolicy
        from crystallise.weights.dataset import read_jsonl
        from crystallise.engine.distill import Problem, StarConfig, star
        from crystallise.weights.evaluate import held_out
        from crystallise.weights.train import TrainConfig

        home = open_home(ctx)
        recs = read_jsonl(data)[:limit]
        if not recs or any("target" not in r or not ({"input", "context"} & r.keys()) for r in recs):
            raise ValidationError(f'{data}: each record needs "target" and "input" or "context"')
        spec = _verifier(verifier)
        probs = [Problem(f"p{i}", [{"role": "user", "content": str(r.get("context", r.get("input")))}],
                         r["target"], spec) for i, r in enumerate(recs)]
        rows = [{"messages": [*p.messages, {"role": "assistant", "content": str(p.expected)}], "trace_id": p.id}
                for p in probs]
        learn_rows, gate_rows = held_out(rows)
        learn_ids, gate_ids = {r["trace_id"] for r in learn_rows}, {r["trace_id"] for r in gate_rows}
        reports = star(home, _scope(agent, org), task, [p for p in probs if p.id in learn_ids],
                       [p for p in probs if p.id in gate_ids],
                       StarConfig(rounds=rounds, samples=samples, temperature=temperature),
                       train_config=TrainConfig(steps=steps), policy=WeightsPolicy(max_forgetting=max_forgetting),
                       base_name=base_name, progress=None if as_json else _say)
        rows_out = [{"round": r.round, "sampled": r.sampled, "kept": r.kept, "solved": r.solved,
                     "decision": r.decision, "reason": r.reason, "version": r.version} for r in reports]
        if emit(rows_out, as_json):
            return
        for r in rows_out:
            out.print(f"round {r['round']}: kept {r['kept']}/{r['sampled']} samples, {r['decision']}: {r['reason']}")

