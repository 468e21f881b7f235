"""The real offline model (smollm2-135m via llama-cpp-python). Slow-marked; skipped, with the reason, when absent.

Pull it once with `crystallise models pull smollm2-135m` (it lands in $CRYSTALLISE_HOME/models,
default ./.crystallise/models at the repository root).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import jsonschema
import pytest

from crystallise.backends import CompletionRequest, Message, complete_json, get_backend
from crystallise.backends.local import LocalBackend
from crystallise.errors import ConfigError, ValidationError

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(os.environ.get("CRYSTALLISE_HOME") or REPO / ".crystallise")
MODELS_DIR = Path(os.environ.get("CRYSTALLISE_MODELS_DIR") or _HOME / "models")
MODEL = "smollm2-135m"

_MISSING = importlib.util.find_spec("llama_cpp") is None or not (MODELS_DIR / f"{MODEL}.gguf").is_file()
if _MISSING and os.environ.get("CRYSTALLISE_REQUIRE_LOCAL") == "1":  # `make test`: never skip silently
    raise RuntimeError(f"CRYSTALLISE_REQUIRE_LOCAL=1 but {MODELS_DIR / (MODEL + '.gguf')} or llama_cpp is missing")
needs_model = pytest.mark.skipif(
    _MISSING,
    reason=(
        f"needs llama-cpp-python (pip install 'crystallise[local]') and {MODELS_DIR / (MODEL + '.gguf')} "
        f"(crystallise models pull {MODEL})"
    ),
)
pytestmark = pytest.mark.slow

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population_millions": {"type": "number"}},
    "required": ["city", "population_millions"],
}


@needs_model
def test_local_model_answers_a_chat_request() -> None:
    backend = get_backend(f"local:{MODEL}", models_dir=MODELS_DIR)
    assert backend.name == f"local:{MODEL}"
    request = CompletionRequest(
        [Message("system", "You are a helpful assistant."), Message("user", "Say hello in one short sentence.")],
        max_tokens=24,
    )
    first = backend.complete(request)
    assert first.text.strip()
    assert first.model == MODEL
    assert first.prompt_tokens > 5 and 0 < first.completion_tokens <= 24
    assert first.latency_ms > 0
    assert backend.complete(request).text == first.text  # temperature 0 is deterministic


@needs_model
def test_schema_constrained_output_validates() -> None:
    backend = get_backend(f"local:{MODEL}", models_dir=MODELS_DIR)
    request = CompletionRequest(
        [Message("user", "Give the largest city in Japan and its population in millions, as JSON.")],
        max_tokens=64,
        schema=SCHEMA,
    )
    raw = backend.complete(request).text
    jsonschema.validate(json.loads(raw), SCHEMA)  # the grammar makes even a 135M model comply
    value, _completion, repaired = complete_json(backend, request, SCHEMA)
    jsonschema.validate(value, SCHEMA)
    assert not repaired


@needs_model
def test_prompt_longer_than_context_is_a_clear_error() -> None:
    backend = LocalBackend(MODELS_DIR / f"{MODEL}.gguf", n_ctx=128)
    request = CompletionRequest([Message("user", "word " * 400)], max_tokens=8)
    with pytest.raises(ValidationError, match="context window"):
        backend.complete(request)


def test_missing_model_gives_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"crystallise models pull {MODEL}"):
        get_backend(f"local:{MODEL}", models_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        LocalBackend(tmp_path / "gone.gguf")
