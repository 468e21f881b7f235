"""Reports people would rather see than read: learning curves as PNG, summaries as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["learning_curve", "pyplot", "running_mean"]


def running_mean(flags: Sequence[bool | float]) -> list[float]:
    out, total = [], 0.0
    for i, f in enumerate(flags, 1):
        total += float(f)
        out.append(total / i)
    return out


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend; an ImportError naming the `bench` extra when missing."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need the `bench` extra (matplotlib): pip install 'crystallise[bench]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(
    path: Path,
    title: str,
    series: dict[str, Sequence[bool | float]],
    *,
    markers: Sequence[int] = (),
    final: dict[str, float] | None = None,
    xlabel: str = "records seen",
) -> Path:
    """Running accuracy of each series (+ vertical lines where versions were committed,
    + horizontal lines for final held-out scores)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, flags in series.items():
        if flags:
            style = {"linestyle": ":", "color": "grey"} if "code" in name else {}
            ax.plot(range(1, len(flags) + 1), running_mean(flags), label=name, linewidth=1.8, **style)
    for i, x in enumerate(markers):
        ax.axvline(x, color="grey", alpha=0.25, linewidth=1, label="version committed" if i == 0 else None)
    for name, value in (final or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1.2, label=f"{name}: {value:.1%}",
                   color="tab:green" if "learn" in name else "tab:red")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("running mean")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
