"""The benchmarks: a package of modules, each `bench/<name>.py` a click command called `command`.

`crystallise bench NAME` imports `bench.<name>` (crystallise/cli/bench.py puts the checkout on
sys.path once); the modules import each other relatively (`from . import stream`) and share the
library's test helpers (`crystallise.testing`: the threaded uvicorn server, the JSONL reader, the
throwaway PostgreSQL). Modules whose name starts with `_` are parts, not commands.
"""
