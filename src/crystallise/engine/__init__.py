"""Orchestration: everything that takes a `Home` and ends in a commit (or a store write).

The domain packages (`context`, `harness`, `weights`, `gate`, `governance`) decide: they are plain
logic over data and the stores passed in, and they return change sets. This package runs them
against a home and commits what the gate accepted — it is the only place that does:

    home.py         the composition root: config, store, artifact repo, model backends
    committer.py    commit / revert / purge: the only code that writes learned changes
    loop.py         one task's loop: serve -> observe -> learn -> gate -> commit
    task.py         the `@task` decorator and `define_task`
    shadow.py       shadow checks of code answers (an LLM answer recorded beside them)
    observe.py      `trace()` and `wrap_openai`: record runs into a home's store
    serving.py      `context()` / `assemble`, `search`, `recall`: the context pack for a run
    memory.py       remember / forget / accept / history: explicit user actions as deltas
    extract.py      implicit extraction over new traces -> committed change sets
    dream.py        offline batch learning of the context layer
    promote.py      user -> org/agent promotion, gated and committed
    skills.py       import / export / learn skills
    forget_user.py  data deletion of one user
    undo.py         undo everything learned from a trace or a user
    adapters.py     learn a LoRA adapter, gate it, commit its manifest
    access.py       the tenancy rule: who may see which change set / version

See docs/architecture.md for the layers and the import-linter contract that keeps them.
"""
