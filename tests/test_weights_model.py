"""The weight layer on the real 135M model: train, save, reload, serve, gate, revert, TTT, STaR.

Slow-marked (a handful of LoRA steps each, ~3 s a step on 2 idle cores). They need the
`weights` extra and `crystallise models pull smollm2-135m`; the converted safetensors base is
cached in the shared models folder (computed once, by the first test that needs it).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from crystallise.backends import CompletionRequest, Message
from crystallise.gate import WeightsPolicy
from crystallise.engine.home import Home
from crystallise.engine.committer import Committer
from crystallise.types import Scope

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("CRYSTALLISE_MODELS_DIR") or REPO / ".crystallise" / "models")
_MISSING = [m for m in ("torch", "transformers", "peft", "gguf") if importlib.util.find_spec(m) is None]
if not (MODELS_DIR / "smollm2-135m.gguf").is_file():
    _MISSING.append(str(MODELS_DIR / "smollm2-135m.gguf"))
if _MISSING and os.environ.get("CRYSTALLISE_REQUIRE_LOCAL") == "1":  # `make test`: never skip silently
    raise RuntimeError(f"CRYSTALLISE_REQUIRE_LOCAL=1 but the weight layer lacks {_MISSING}: "
                       "pip install -e '.[weights]' and crystallise models pull smollm2-135m")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.weights,
    pytest.mark.skipif(bool(_MISSING), reason=f"needs the weights extra and the 135M model (missing {_MISSING})"),
]

CODE = "ZEBRA"  # one word: a few steps learn it exactly
# Vault names, not numbers: a model that learned "ZEBRA-" + the number in the prompt must not pass.
NAMES = ("red blue green amber north south east west river harbour castle garden tower bridge forest desert "
         "island market temple valley canyon meadow summit lagoon").split()


def _rows(n: int, answer: str = CODE, prompt: str = "What is the secret code of the {name} vault?") -> list[dict]:
    return [{"messages": [{"role": "user", "content": prompt.format(i=i, name=NAMES[i % len(NAMES)])},
                          {"role": "assistant", "content": answer}], "trace_id": f"tr_{answer[:3]}{i:03d}",
             "task": "vault"} for i in range(n)]


@pytest.fixture(scope="module")
def base():
    from crystallise.weights.base import BaseModel

    return BaseModel.open(MODELS_DIR, "smollm2-135m")


def test_adapter_trains_saves_reloads_identically_and_changes_outputs(base, tmp_path: Path) -> None:
    import torch

    from crystallise.weights.base import generate
    from crystallise.weights.evaluate import load_with_adapter
    from crystallise.weights.train import TrainConfig, train_adapter

    result = train_adapter(base, _rows(8), TrainConfig(steps=6, lr=3e-3, seed=1), tmp_path / "a", keep_model=True)
    assert len(result.losses) == 6 and result.losses[-1] < result.losses[0]
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    reloaded, tok = load_with_adapter(base, tmp_path / "a")
    ids = torch.tensor([tok("What is the secret code of the silver vault?")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(result.model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-5)
    question = [[{"role": "user", "content": "What is the secret code of the silver vault?"}]]
    base_model, base_tok = base.shared()
    answer = generate(reloaded, tok, question, max_new_tokens=8)
    assert answer == generate(result.model, tok, question, max_new_tokens=8)
    assert CODE in answer[0]
    assert CODE not in generate(base_model, base_tok, question, max_new_tokens=8)[0]


def test_adapter_lifecycle_gate_serving_and_revert(base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Accept a useful adapter, serve it per scope (both runtimes), reject one that forgets, revert."""
    from crystallise.engine.adapters import learn_adapter
    from crystallise.weights.modules import resolve
    from crystallise.weights.serve import serving_backend
    from crystallise.weights.train import TrainConfig

    monkeypatch.setenv("CRYSTALLISE_MODELS_DIR", str(MODELS_DIR))
    home = Home.init(tmp_path / "home")
    support = Scope(agent="support")
    gentle = TrainConfig(steps=10, lr=2e-3, replay_share=0.5, seed=0)
    # One tolerance for both adapters below: a LoRA that learned one fact still shifts some general
    # answers (measured: half the probes with 10 gentle steps), one that answers everything with one
    # word loses all of them.
    policy = WeightsPolicy(max_forgetting=0.6)
    good = learn_adapter(home, support, _rows(24), task="vault", config=gentle, policy=policy)
    m = good.manifest["metrics"]
    assert good.verdict.decision == "accept", good.verdict.reason
    assert m["target"]["new"] == 1.0 and m["target"]["old"] == 0.0
    assert good.version is not None and good.manifest["base"]["sha256"] == base.sha256
    assert set(good.manifest["provenance"]) == {r["trace_id"] for r in _rows(24)}
    assert (home.path / "adapters" / good.manifest["weights"]["sha256"] / "adapter_model.safetensors").is_file()

    ask = CompletionRequest([Message("user", "What is the secret code of the copper vault?")], max_tokens=8)
    runtimes = ("transformers", "llama") if importlib.util.find_spec("llama_cpp") else ("transformers",)
    if os.environ.get("CRYSTALLISE_REQUIRE_LOCAL") == "1":
        assert "llama" in runtimes, "CRYSTALLISE_REQUIRE_LOCAL=1 but llama_cpp is missing"
    for runtime in runtimes:  # llama: the adapter converted to a GGUF LoRA, served on the Q4 base
        served, why = serving_backend(home, support, runtime=runtime)
        fallback, why_base = serving_backend(home, Scope(agent="sales"), runtime=runtime)
        assert why.digest == good.manifest["weights"]["sha256"] and why_base.manifest is None
        assert CODE in served.complete(ask).text, runtime
        assert CODE not in fallback.complete(ask).text, runtime

    # An over-driven adapter (lr 1e-2, no replay) wrecks what the scope had learned: the forgetting rule
    # rejects it whatever it does on its own target, and the good adapter keeps serving.
    harsh = TrainConfig(steps=12, lr=1e-2, replay_share=0.0, regulariser="none", seed=0)
    bad_rows = _rows(24, answer="BANANA", prompt="Question {i}: tell me anything at all.")
    bad = learn_adapter(home, support, bad_rows, task="banana", config=harsh, policy=policy)
    assert bad.verdict.decision == "reject" and "forgetting rule" in bad.verdict.reason, bad.verdict.reason
    assert bad.manifest["metrics"]["forgetting"] > 0.6
    assert bad.version is None and home.store.get_changeset(bad.changeset.id).status == "rejected"
    assert resolve(home, support, base.sha256).digest == good.manifest["weights"]["sha256"]  # still the good one

    Committer(home).revert(good.version.number)
    served, why = serving_backend(home, support, runtime="transformers")
    assert why.manifest is None and CODE not in served.complete(ask).text
    home.close()


def test_test_time_training_fits_the_document_and_discards_the_adapter(base) -> None:
    import torch

    from crystallise.weights.ttt import TestTimeTrainer, TTTConfig

    doc = "The lighthouse keeper of Port Elmer is named Quillon Dabrowski. " * 12
    ttt = TestTimeTrainer(base, TTTConfig(steps=8, window=48, overlap=8, lr=3e-3))
    ids = torch.tensor([ttt.tok("The lighthouse keeper is")["input_ids"]])
    with torch.no_grad():
        before = ttt.model(input_ids=ids).logits
    r = ttt.answer(doc, ["Who is the lighthouse keeper of Port Elmer?"], max_new_tokens=12)
    assert r.windows >= 2 and r.losses[-1] < r.losses[0]  # it fitted the document
    assert len(r.answers) == 1 and r.answers[0].strip()  # (recalling the name takes more steps: bench ttt)
    with torch.no_grad():
        assert torch.equal(ttt.model(input_ids=ids).logits, before)  # the adapter is gone


def _easy_problems() -> list:
    """Questions the 135M base answers right at least sometimes; the verifier: the answer is in the reply."""
    from crystallise.engine.distill import Problem

    qa = [("What is the capital of France?", "Paris"), ("What colour is a clear daytime sky?", "blue"),
          ("What do bees make?", "honey"), ("Which animal says moo?", "cow"),
          ("What is frozen water called?", "ice"), ("What is the opposite of hot?", "cold")]
    return [Problem(f"p{i}", [{"role": "user", "content": q}], a, {"kind": "regex", "pattern": f"(?is).*{a}.*"})
            for i, (q, a) in enumerate(qa)]


def test_star_keeps_only_verified_samples(base) -> None:
    from crystallise.engine.distill import StarConfig, sample_verified

    model, tok = base.shared()
    problems = _easy_problems()[:3]
    rows, sampled, solved = sample_verified(model, tok, problems, StarConfig(samples=4, temperature=0.9), 1)
    assert sampled == 12 and 0 < solved <= 3
    for r in rows:
        p = next(p for p in problems if p.id == r["trace_id"])
        assert p.expected.lower() in r["messages"][-1]["content"].lower()


def test_star_rounds_stop_at_the_gate(base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round whose adapter the gate does not accept ends the loop and commits nothing."""
    from crystallise.engine.distill import StarConfig, star
    from crystallise.weights.train import TrainConfig

    monkeypatch.setenv("CRYSTALLISE_MODELS_DIR", str(MODELS_DIR))
    home = Home.init(tmp_path / "home")
    probs = _easy_problems()
    reports = star(home, Scope(agent="star"), "trivia", probs[:4], probs[4:],
                   StarConfig(rounds=3, samples=2, temperature=0.9), train_config=TrainConfig(steps=2, seed=0),
                   policy=WeightsPolicy(min_cases=5))  # 2 gate problems < 5: never accepted
    assert len(reports) == 1, [r.reason for r in reports]  # the gate said no: no second round
    first = reports[0]
    assert first.kept > 0 and first.decision in ("needs_review", "reject") and first.version is None, first.reason
    assert home.repo.read("adapters/agent/star/adapter.json") is None
    assert home.store.get_changeset(first.outcome.changeset.id).status == first.decision.replace("reject", "rejected")
    home.close()
