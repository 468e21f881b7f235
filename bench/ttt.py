"""`crystallise bench ttt`: test-time training vs the same text in context, on LoCoMo conversations.

For each of --conversations LoCoMo samples, the document is its first --sessions sessions
("[date] Speaker: text" lines) and the questions are its QA items of categories 1, 2 and 4 whose
evidence turns all lie in those sessions. Three arms answer every question with the same base model:

    closed-book   the question alone                              (what the model knows anyway)
    in-context    the document + the question in one prompt       (the usual way)
    ttt           a LoRA fitted on the document for --steps steps, then the question alone;
                  the adapter is discarded after the conversation (crystallise.weights.ttt)

Scored with LoCoMo's answer F1 (normalised tokens: lower case, punctuation and a/an/the/and removed;
no stemming here), and latency per question (TTT's training time is shared by the questions of its
document and reported separately). LoCoMo is CC BY-NC 4.0: read in place from --data, never copied.
Writes result.json and ttt.png to --out.
"""

from __future__ import annotations

import json
import string
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from crystallise.engine.home import default_home_path, models_dir_for
from crystallise.report import pyplot
from crystallise.weights.base import BaseModel, generate
from crystallise.weights.ttt import TestTimeTrainer, TTTConfig, in_context

SYSTEM = "Answer the question in a few words."


def _norm(s: str) -> list[str]:
    s = str(s).lower().translate(str.maketrans("", "", string.punctuation))
    return [w for w in s.split() if w not in {"a", "an", "the", "and"}]


def f1(pred: str, gold: Any) -> float:
    p, g = _norm(pred), _norm(str(gold))
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def conversation(sample: dict[str, Any], sessions: int) -> tuple[str, list[tuple[str, Any]]]:
    conv = sample["conversation"]
    lines, turns = [], set()
    for n in range(1, sessions + 1):
        date = conv.get(f"session_{n}_date_time", "")
        for t in conv.get(f"session_{n}", []):
            lines.append(f"[{date}] {t['speaker']}: {t['text']}")
            turns.add(t["dia_id"])
    qa = [(q["question"], q["answer"]) for q in sample["qa"]
          if q.get("category") in (1, 2, 4) and "answer" in q and q.get("evidence")
          and all(e in turns for e in q["evidence"])]
    return "\n".join(lines), qa


def _plot(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()  # matplotlib (the bench extra), or an ImportError that names it

    arms = ["closed-book", "in-context", "ttt"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
    a1.bar(arms, [res[a]["f1"] for a in arms], color=["#999", "#4a7", "#47a"])
    a1.set_ylabel("answer F1")
    a2.bar(arms, [res[a]["latency_s"] for a in arms], color=["#999", "#4a7", "#47a"])
    a2.set_ylabel("seconds per question (ttt: incl. its share of training)")
    fig.suptitle("LoCoMo: test-time training vs in-context (smollm2-135m)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("../shared/data"), show_default=True)
@click.option("--conversations", default=2, show_default=True)
@click.option("--sessions", default=3, show_default=True, help="Sessions per conversation in the document.")
@click.option("--questions", default=12, show_default=True, help="At most this many questions per conversation.")
@click.option("--steps", default=20, show_default=True)
@click.option("--window", default=128, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--base", "base_name", default="smollm2-135m", show_default=True)
@click.option("--device", default=None)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/ttt"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def command(data_dir: Path, conversations: int, sessions: int, questions: int, steps: int, window: int, lr: float,
            base_name: str, device: str | None, out_dir: Path, as_json: bool) -> None:
    """TTT vs in-context vs closed-book on LoCoMo: answer F1 and latency."""
    start = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - start:7.1f}s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    samples = json.loads((data_dir / "locomo" / "locomo_dev.json").read_text(encoding="utf-8"))[:conversations]
    base = BaseModel.open(models_dir_for(default_home_path()), base_name)
    model, tok = base.shared(device)
    ttt = TestTimeTrainer(base, TTTConfig(steps=steps, window=window, lr=lr, device=device))
    arms: dict[str, dict[str, list[float]]] = {a: {"f1": [], "s": []} for a in ("closed-book", "in-context", "ttt")}
    per_doc = []
    for sample in samples:
        doc, qa = conversation(sample, sessions)
        qa = qa[:questions]
        if not qa:
            continue
        qs = [q for q, _ in qa]
        n_tokens = len(tok(doc)["input_ids"])
        log(f"{sample['sample_id']}: {n_tokens} document tokens, {len(qs)} questions")
        t0 = time.perf_counter()
        closed = generate(model, tok, [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
                                       for q in qs], max_new_tokens=24, batch_size=1)
        closed_s = time.perf_counter() - t0
        ctx, ctx_s = in_context(model, tok, doc, qs, system=SYSTEM)
        r = ttt.answer(doc, qs, system=SYSTEM)
        log(f"  ttt trained in {r.train_s:.1f} s on {r.windows} windows (loss {r.losses[0]:.2f} -> {r.losses[-1]:.2f})")
        for arm, answers, secs in (("closed-book", closed, closed_s), ("in-context", ctx, ctx_s),
                                   ("ttt", r.answers, r.train_s + r.answer_s)):
            arms[arm]["f1"] += [f1(a, g) for a, (_, g) in zip(answers, qa)]
            arms[arm]["s"] += [secs / len(qs)] * len(qs)
        per_doc.append({"sample": sample["sample_id"], "tokens": n_tokens, "questions": len(qs),
                        "ttt_train_s": r.train_s, "ttt_answer_s": r.answer_s, "in_context_s": ctx_s,
                        "closed_book_s": closed_s,
                        "examples": [{"q": q, "gold": g, "in_context": c, "ttt": t}
                                     for (q, g), c, t in list(zip(qa, ctx, r.answers))[:3]]})
    res = {a: {"f1": sum(v["f1"]) / max(1, len(v["f1"])), "latency_s": sum(v["s"]) / max(1, len(v["s"])),
               "n": len(v["f1"])} for a, v in arms.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"arms": res, "documents": per_doc, "steps": steps, "window": window, "sessions": sessions,
              "base": base_name, "wall_s": round(time.perf_counter() - start, 1)}
    (out_dir / "result.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _plot(res, out_dir / "ttt.png")
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    for a, v in res.items():
        click.echo(f"{a:12s} F1 {v['f1']:.3f}  {v['latency_s']:.2f} s/question  (n={v['n']})")
    click.echo(f"wrote {out_dir}/result.json and ttt.png ({report['wall_s']} s)", err=True)
