"""The weight layer: LoRA adapters trained on verified traces, gated on forgetting, served per scope.

    export_dataset(store, scope)        verified runs -> SFT + preference pairs (redacted, with trace ids)
    learn_adapter(home, scope, rows)    train -> measure target + retention -> gate -> commit the manifest
    serving_backend(home, scope)        the scope's adapter (org, then agent) on the base, else the base
    TestTimeTrainer(base).answer(doc)   a throw-away adapter fitted on one document (test-time training)
    star(home, scope, task, problems)   self-distillation rounds with the gate between them

torch, transformers and peft are imported only by the modules that train or serve
(the `weights` extra); export, manifests and the metrics run without them. See docs/weights.md.
"""

from crystallise.weights.dataset import Dataset, export_dataset
from crystallise.weights.forgetting import backward_transfer, forgetting, summarise
from crystallise.weights.modules import Resolution, current_manifest, resolve, scope_key
from crystallise.weights.redact import PiiRedactor, Redactor

__all__ = [
    "Dataset",
    "Redactor",
    "PiiRedactor",
    "Resolution",
    "backward_transfer",
    "current_manifest",
    "export_dataset",
    "forgetting",
    "resolve",
    "scope_key",
    "summarise",
]
