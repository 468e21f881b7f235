"""Configuration: the one module that reads the environment.

Settings come from three places, first wins: an environment variable, the home's
`config.json` (read by `crystallise.engine.home.Home`), a default. Every variable is
named here, read here, at call time (never at import time), so a test or a user can
point one elsewhere without reloading anything:

    CRYSTALLISE_HOME            the home folder                      (default ./.crystallise)
    CRYSTALLISE_STORE_URL       the store (sqlite:/// or postgresql://) (config "store_url")
    CRYSTALLISE_MODEL           the model spec                        (config "model", else local)
    CRYSTALLISE_CODER_MODEL     the offline coder (LLM-written code)  (config "coder_model", else the role's default)
    CRYSTALLISE_CRITIC_MODEL    the offline critic (dreaming)         (config "critic_model", else the role's default)
    CRYSTALLISE_MODELS_DIR      GGUF models, shared by several homes   (default HOME/models)
    CRYSTALLISE_EMBEDDER        the embedder                          (config "embedder", else auto)
    CRYSTALLISE_PROXY_UPSTREAM  the proxy's upstream model server      (config "proxy_upstream")
    CRYSTALLISE_PROXY_UPSTREAM_KEY  its API key
    OPENAI_API_KEY, ANTHROPIC_API_KEY, ...  a backend's API key (backends/openai_http.py, anthropic_http.py)
    CRYSTALLISE_TORCH_THREADS   torch threads for the weight layer
    CRYSTALLISE_LLAMA_EXTRA_BUFTS  llama.cpp extra buffer types (auto | on | off)
    CRYSTALLISE_LINK_THRESHOLD  the similarity that links two notes
    CRYSTALLISE_PREFILTER_MIN   block size from which vector search prefilters
    CRYSTALLISE_TRACE_WRITES    SDK trace writes: background | sync     (config "trace_writes", else background)
    CRYSTALLISE_OTLP_ENDPOINT   export crystallise's traces over OTLP/HTTP (config "otlp_endpoint";
                                also OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT)
    CRYSTALLISE_OTLP_HEADERS    its headers, `k=v,k2=v2` (also OTEL_EXPORTER_OTLP_HEADERS)
    CRYSTALLISE_OTLP_CAPTURE_CONTENT  1: export messages too (config "otlp_capture_content")

A leaf of the dependency graph: it imports nothing from crystallise.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ENV_EMBEDDER",
    "ENV_HOME",
    "ENV_LINK_THRESHOLD",
    "ENV_LLAMA_EXTRA_BUFTS",
    "ENV_CODER_MODEL",
    "ENV_CRITIC_MODEL",
    "ENV_MODEL",
    "ENV_MODELS_DIR",
    "ENV_OTEL_ENDPOINT",
    "ENV_OTEL_HEADERS",
    "ENV_OTEL_TRACES_ENDPOINT",
    "ENV_OTLP_CAPTURE",
    "ENV_OTLP_ENDPOINT",
    "ENV_OTLP_HEADERS",
    "ENV_PREFILTER_MIN",
    "ENV_REGISTRY",
    "ENV_SERVE_SPEC",
    "ENV_STORE",
    "ENV_TORCH_THREADS",
    "ENV_TRACE_WRITES",
    "ENV_UPSTREAM",
    "ENV_UPSTREAM_KEY",
    "default_home_path",
    "env",
    "models_dir_for",
]

ENV_HOME = "CRYSTALLISE_HOME"
ENV_STORE = "CRYSTALLISE_STORE_URL"
ENV_MODEL = "CRYSTALLISE_MODEL"
ENV_CODER_MODEL = "CRYSTALLISE_CODER_MODEL"
ENV_CRITIC_MODEL = "CRYSTALLISE_CRITIC_MODEL"
ENV_MODELS_DIR = "CRYSTALLISE_MODELS_DIR"
ENV_EMBEDDER = "CRYSTALLISE_EMBEDDER"
ENV_UPSTREAM = "CRYSTALLISE_PROXY_UPSTREAM"
ENV_UPSTREAM_KEY = "CRYSTALLISE_PROXY_UPSTREAM_KEY"
ENV_TORCH_THREADS = "CRYSTALLISE_TORCH_THREADS"
ENV_LLAMA_EXTRA_BUFTS = "CRYSTALLISE_LLAMA_EXTRA_BUFTS"
ENV_LINK_THRESHOLD = "CRYSTALLISE_LINK_THRESHOLD"
ENV_PREFILTER_MIN = "CRYSTALLISE_PREFILTER_MIN"
ENV_TRACE_WRITES = "CRYSTALLISE_TRACE_WRITES"
ENV_OTLP_ENDPOINT = "CRYSTALLISE_OTLP_ENDPOINT"
ENV_OTLP_HEADERS = "CRYSTALLISE_OTLP_HEADERS"
ENV_OTLP_CAPTURE = "CRYSTALLISE_OTLP_CAPTURE_CONTENT"
ENV_OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_OTEL_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_OTEL_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
ENV_SERVE_SPEC = "CRYSTALLISE_SERVE_SPEC"  # `serve --workers N` hands its options to each process (server.py)
ENV_REGISTRY = "CRYSTALLISE_REGISTRY"  # the central artifact repository shared by machines (artifacts/registry.py)


def env(name: str, default: str | None = None) -> str | None:
    """The environment variable `name` (empty counts as unset), else `default`."""
    return os.environ.get(name) or default


def default_home_path() -> Path:
    return Path(env(ENV_HOME) or ".crystallise").resolve()


def models_dir_for(home_path: Path) -> Path:
    """Where GGUF models live: $CRYSTALLISE_MODELS_DIR (shared by several homes), else HOME/models."""
    return Path(env(ENV_MODELS_DIR) or home_path / "models").resolve()
