"""General-behaviour probes: short, varied prompts whose answers by the base model must survive training.

The base model's own greedy answers to these prompts are "general behaviour the base model had":
half of them (by a hash of the prompt) form the `base-probes` retention suite the gate measures
forgetting on; the other half are replayed during training with the base's answers as targets
(self-distillation of the base), so the two never overlap.

    >>> len(eval_prompts()) + len(replay_prompts()) == len(PROBES)
    True
"""

from __future__ import annotations

import hashlib

__all__ = ["PROBES", "eval_prompts", "replay_prompts"]

PROBES: tuple[str, ...] = (
    "What is the capital of France?",
    "Name a primary colour.",
    "What is the opposite of hot?",
    "How many days are in a week?",
    "Say hello in Spanish.",
    "What do bees make?",
    "Complete the sentence: The sky is",
    "What is 3 plus 4?",
    "Give one word that rhymes with cat.",
    "Which animal says moo?",
    "What is the plural of mouse?",
    "What season comes after winter?",
    "Name a fruit that is yellow.",
    "What is the boiling point of water in Celsius?",
    "Write a short greeting for a friend.",
    "What is the first letter of the English alphabet?",
    "What do you call a baby dog?",
    "Translate 'thank you' into French.",
    "What is the largest planet in our solar system?",
    "How many legs does a spider have?",
    "What shape has three sides?",
    "Name a musical instrument with strings.",
    "What is frozen water called?",
    "Which is heavier, a kilogram of feathers or a kilogram of iron?",
    "What colour do you get by mixing blue and yellow?",
    "Who wrote Romeo and Juliet?",
    "What is the chemical symbol for gold?",
    "Spell the word 'house' backwards.",
    "Name a day of the weekend.",
    "What do plants need from the sun?",
    "Give a synonym for happy.",
    "What is the square root of 16?",
    "What language is spoken in Brazil?",
    "Name something you can find in a kitchen.",
    "What is the main ingredient of bread?",
    "How many minutes are in an hour?",
    "What is the opposite of up?",
    "Finish the phrase: Once upon a",
    "What do you use to write on paper?",
    "Name a planet closer to the sun than Earth.",
)


def _eval_half(prompt: str) -> bool:
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) % 2 == 0


def eval_prompts() -> list[str]:
    """The probes the gate measures (never trained on)."""
    return [p for p in PROBES if _eval_half(p)]


def replay_prompts() -> list[str]:
    """The probes replayed in training, with the base model's answers as targets."""
    return [p for p in PROBES if not _eval_half(p)]
