"""Continual-learning metrics over an accuracy matrix (pure functions, no torch).

    R[i][j] = accuracy on task j after learning stage i        (T stages, T tasks)

    average accuracy  A_T  = mean_j R[T-1][j]
    backward transfer BWT  = mean_{j<T-1} (R[T-1][j] - R[j][j])       < 0: forgetting
    forgetting        F    = mean_{j<T-1} (max_{i<T-1} R[i][j] - R[T-1][j])
    new-task gain     G    = mean_j (R[j][j] - R0[j])   R0 = accuracy before any training

These are the definitions of Lopez-Paz & Ranzato (2017, BWT) and Chaudhry et al. (2018,
forgetting). The worked example (two tasks; task 0 learned then half-forgotten):

    >>> m = summarise([[0.9, 0.1], [0.5, 0.8]], before=[0.1, 0.1])
    >>> round(m["bwt"], 3), round(m["forgetting"], 3), round(m["average"], 3), round(m["gain"], 3)
    (-0.4, 0.4, 0.65, 0.75)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crystallise.errors import ValidationError

__all__ = ["backward_transfer", "forgetting", "summarise"]


def _check(matrix: Sequence[Sequence[float]]) -> int:
    t = len(matrix)
    if t == 0 or any(len(row) != t for row in matrix):
        raise ValidationError(f"an accuracy matrix must be T x T (stage x task); got {[len(r) for r in matrix]}")
    return t


def backward_transfer(matrix: Sequence[Sequence[float]]) -> float:
    """BWT: how much learning later tasks changed earlier ones (0 for a single task)."""
    t = _check(matrix)
    if t < 2:
        return 0.0
    return sum(matrix[t - 1][j] - matrix[j][j] for j in range(t - 1)) / (t - 1)


def forgetting(matrix: Sequence[Sequence[float]]) -> float:
    """Average drop from each earlier task's best accuracy to its final one (0 for a single task)."""
    t = _check(matrix)
    if t < 2:
        return 0.0
    return sum(max(matrix[i][j] for i in range(t - 1)) - matrix[t - 1][j] for j in range(t - 1)) / (t - 1)


def summarise(matrix: Sequence[Sequence[float]], before: Sequence[float] | None = None) -> dict[str, Any]:
    """Average accuracy, BWT, forgetting, and (with `before`) the mean new-task gain."""
    t = _check(matrix)
    out: dict[str, Any] = {
        "average": sum(matrix[t - 1]) / t,
        "bwt": backward_transfer(matrix),
        "forgetting": forgetting(matrix),
        "just_learned": [matrix[j][j] for j in range(t)],
        "final": list(matrix[t - 1]),
    }
    if before is not None:
        if len(before) != t:
            raise ValidationError(f"before must have one accuracy per task ({t}); got {len(before)}")
        out["gain"] = sum(matrix[j][j] - before[j] for j in range(t)) / t
    return out
