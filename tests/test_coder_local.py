"""LLM-written code with the real local coder model (Qwen2.5-Coder-0.5B via llama.cpp). Slow.

`make test` pulls the model first and sets CRYSTALLISE_REQUIRE_LOCAL=1, so in CI a missing
model fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from crystallise.gate import score_exact
from crystallise.sandbox import run_once
from crystallise.harness.synth.base import Case, Problem, split
from crystallise.harness.synth.coder import CoderStrategy
from crystallise.harness.synth.verify import verify

pytestmark = pytest.mark.slow
MODEL = "qwen2.5-coder-0.5b"
REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("CRYSTALLISE_MODELS_DIR")
                  or Path(os.environ.get("CRYSTALLISE_HOME") or REPO / ".crystallise") / "models")


@pytest.fixture(scope="module")
def coder():
    missing = importlib.util.find_spec("llama_cpp") is None or not (MODELS_DIR / f"{MODEL}.gguf").is_file()
    if missing:
        reason = f"needs llama-cpp-python and {MODELS_DIR / (MODEL + '.gguf')} (crystallise models pull {MODEL})"
        if os.environ.get("CRYSTALLISE_REQUIRE_LOCAL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from crystallise.backends import get_backend

    return get_backend(f"local:{MODEL}", models_dir=MODELS_DIR)


WORDS = ["apple", "Banana", "cherry pie", "dates", "Elder flower", "fig", "grape", "honeydew melon", "kiwi",
         "lemon", "mango", "nectarine", "olive", "papaya", "quince", "raspberry", "strawberry", "tangerine"]


def test_the_local_coder_writes_code_that_verifies_on_heldout_cases(coder):
    # the constant instruction around the payload is factored out before the model sees it
    cases = [Case(f"Convert to upper case: {w}\nAnswer:", w.upper(), str(i)) for i, w in enumerate(WORDS)]
    fit, held = split(cases)
    strategy = CoderStrategy(coder, rounds=3)
    cand = strategy.propose(Problem("upper", fit, score_exact, description="Convert the text to upper case."))
    assert cand is not None, strategy.tried
    assert 1 <= cand.notes["llm_calls"] <= 3
    v = verify(cand, fit, held, score_exact)
    assert v.verified_units and v.held_correct == len(held)
    assert run_once(cand.source, ["Convert to upper case: watermelon\nAnswer:"]) == "WATERMELON"
