"""Plot LoCoMo Recall@k by method from `crystallise bench locomo --compare` result files.

    python -m bench._locomo_ablation OUT.png "label=reports/locomo-ctx0/result.json" \\
        "label=reports/locomo/result.json[hybrid, no dates]" ...

Each argument is `label=PATH` (the run's own method) or `label=PATH[variant]` (one of the
`compare` variants in that file); the floor (BM25 over raw turns) is taken from the first file.
Not a registered bench (leading underscore): it only reads what the bench wrote.
"""

from __future__ import annotations
from crystallise.report import pyplot

import json
import re
import sys
from pathlib import Path
from typing import Any


def series(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    label, _, rest = spec.partition("=")
    m = re.fullmatch(r"(.+?)(?:\[(.+)\])?", rest)
    if not label or m is None:
        raise SystemExit(f"bad argument {spec!r}: use label=PATH or label=PATH[variant]")
    data = json.loads(Path(m.group(1)).read_text())
    return label, (data["compare"][m.group(2)] if m.group(2) else data), data


def main(argv: list[str]) -> None:
    plt = pyplot()  # matplotlib (the bench extra), or an ImportError that names it

    out, specs = Path(argv[0]), [series(s) for s in argv[1:]]
    if not specs:
        raise SystemExit(__doc__)
    ks = list(specs[0][1]["recall"])
    rows = [("floor: BM25, raw turns", specs[0][2]["floor"])] + [(label, r) for label, r, _ in specs]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / len(rows)
    for n, (label, r) in enumerate(rows):
        xs = [i + (n - (len(rows) - 1) / 2) * width for i in range(len(ks))]
        ax.bar(xs, [r["recall"][k] for k in ks], width=width, label=label)
    ax.set_xticks(range(len(ks)), [f"Recall@{k}" for k in ks])
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0.4, 0.9)
    ax.set_title(f"LoCoMo dev evidence recall, categories 1-4, n={specs[0][1]['n']}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
