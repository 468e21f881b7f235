"""The item model's pure parts: scope/text validation, sameness, fact keys, precedence, delta builders."""

from __future__ import annotations

import pytest

from crystallise.context import deltas as build
from crystallise.context.items import (
    MAX_TEXT,
    clean_text,
    lexical_similarity,
    normalise,
    resolve,
    validate_scope,
    validate_section,
    validate_trust,
)
from crystallise.context.temporal import fact_key, plan_write, validate_key
from crystallise.errors import ValidationError
from crystallise.types import Item


def test_scopes_name_their_level_and_bad_ids_say_the_fix() -> None:
    assert validate_scope("support").level == "agent"
    assert validate_scope("support", "acme").level == "org"
    assert validate_scope("support", "acme", "u-1@x.io").level == "user"
    with pytest.raises(ValidationError, match='needs an agent: pass agent="default"'):
        validate_scope(None, user="u1")
    with pytest.raises(ValidationError, match="needs an agent"):
        validate_scope("", org="acme")
    for bad in ("u 1", "a/b", "../etc", "-x", "é" * 3, "x" * 201):
        with pytest.raises(ValidationError, match="user id .* is not valid: use 1-200 characters"):
            validate_scope("support", None, bad)
    with pytest.raises(ValidationError, match="org id '' is not valid"):
        validate_scope("support", "", None)


def test_text_is_cleaned_and_limits_are_per_kind() -> None:
    assert clean_text("  I live\n in   Paris ") == "I live in Paris"
    assert clean_text("line one\n\nline two ", "note") == "line one\n\nline two"
    for empty in ("", "   ", "\n\t"):
        with pytest.raises(ValidationError, match="item text is empty"):
            clean_text(empty)
    clean_text("x" * MAX_TEXT["memory"])
    with pytest.raises(ValidationError, match=r"2001 characters; a memory holds at most 2000: split it .* note"):
        clean_text("x" * 2001)
    with pytest.raises(ValidationError, match="a bullet holds at most 1000"):
        clean_text("y" * 1001, "bullet")
    with pytest.raises(ValidationError, match="must be a string"):
        clean_text(42)
    with pytest.raises(ValidationError, match="kind must be one of"):
        clean_text("ok", "fact")
    with pytest.raises(ValidationError, match="lower-case slug"):
        validate_section("Strategies!")
    with pytest.raises(ValidationError, match=r"trust must be a number in \[0, 1\]"):
        validate_trust(1.5, "user")
    with pytest.raises(ValidationError, match="source must be one of"):
        validate_trust(None, "gossip")
    assert validate_trust(None, "tool") < validate_trust(None, "user")


def test_sameness_is_lexical_and_normalised() -> None:
    assert normalise("Prefers MÉTRIC units!!") == "prefers metric units"
    assert lexical_similarity("I live in Paris", "i LIVE in paris.") == 1.0
    assert lexical_similarity("prefers window seats", "prefers aisle seats") == 0.5
    assert lexical_similarity("convert percentages", "the weather in Oslo") == 0.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("My name is Ada Lovelace", "user.name"),
        ("Call me Bob", "user.name"),
        ("I live in Paris", "user.city"),
        ("By the way, I moved to Rome last year.", "user.city"),
        ("I'm based in Berlin", "user.city"),
        ("I work at Acme Corp", "user.employer"),
        ("I work as a nurse", "user.occupation"),
        ("I am 34 years old", "user.age"),
        ("My favourite colour is green", "user.favorite_colour"),
        ("my dog's name is Rex", "user.dog_name"),
        ("Please reply in French", "user.reply_language"),
        ("Our refund window is 30 days", "org.refund_window"),
    ],
)
def test_fact_keys_from_rules(text: str, key: str) -> None:
    found = fact_key(text)
    assert found is not None and found[0] == key


@pytest.mark.parametrize("text", ["I am allergic to nuts", "I like jazz", "call me at 5pm", "what is my name?"])
def test_statements_without_a_single_valued_attribute_get_no_key(text: str) -> None:
    found = fact_key(text)
    assert found is None or found[0] != "user.name"
    assert fact_key("I am allergic to nuts") is None


def test_fact_key_format_is_checked() -> None:
    assert validate_key("user.city") == "user.city"
    for bad in ("city", "User.City", "user..city", "user.city!", 3):
        with pytest.raises(ValidationError, match="subject.attribute"):
            validate_key(bad)


def _user(text: str, **kw: object) -> Item:
    return Item(text, kind="memory", level="user", user_id="u1", **kw)  # type: ignore[arg-type]


def test_resolve_precedence_user_over_org_over_agent() -> None:
    agent = Item("Answer in English", kind="bullet", level="agent", key="reply.language")
    org = Item("Answer in German", kind="bullet", level="org", org_id="acme", key="reply.language")
    user = Item("Answer in French", kind="bullet", level="user", user_id="u1", key="reply.language")
    shared = Item("Be brief", kind="bullet", level="agent")
    dup = Item("be brief!", kind="bullet", level="user", user_id="u1")
    assert [i.text for i in resolve([agent, shared, org, user, dup])] == ["Answer in French", "be brief!"]
    assert [i.text for i in resolve([agent, org])] == ["Answer in German"]
    # within a level the latest valid fact wins; input order survives within a level
    old, new = _user("lives in Paris", key="user.city", valid_from=1.0), _user("lives in Rome", key="user.city",
                                                                            valid_from=2.0)
    a, b = _user("likes tea"), _user("likes jazz")
    assert [i.text for i in resolve([a, old, new, b])] == ["likes tea", "lives in Rome", "likes jazz"]
    assert len(resolve([a, _user("likes tea and coffee")], similarity=lexical_similarity, threshold=0.5)) == 1


def test_plan_write_merges_supersedes_backfills_and_adds() -> None:
    paris = _user("I live in Paris", key="user.city", valid_from=100.0, provenance=["t1"])
    same = plan_write(_user("i live in paris.", key="user.city", provenance=["t2"]), [paris])
    assert same.outcome == "merged" and same.item_id == paris.id
    assert same.deltas[0].op == "merge" and same.deltas[0].after["provenance"] == ["t1", "t2"]
    assert plan_write(_user("I live in Paris", provenance=["t1"]), [paris]).outcome == "unchanged"
    rome = _user("I moved to Rome", key="user.city", valid_from=200.0)
    moved = plan_write(rome, [paris])
    assert moved.outcome == "superseded" and [d.op for d in moved.deltas] == ["supersede", "add"]
    ended = moved.deltas[0].after
    assert (ended["status"], ended["superseded_by"], ended["valid_to"]) == ("retired", rome.id, 200.0)
    past = plan_write(_user("I lived in Oslo", key="user.city", valid_from=50.0), [paris])
    assert past.outcome == "backfilled" and past.deltas[0].after["valid_to"] == 100.0
    assert past.deltas[0].after["superseded_by"] == paris.id and past.deltas[0].after["status"] == "retired"
    assert plan_write(_user("I like jazz"), [paris]).outcome == "added"


def test_merge_builder_folds_duplicates_and_counters() -> None:
    keep = Item("Use two decimals", provenance=["t1"], helpful=2)
    other = Item("use 2 decimals", provenance=["t2"], helpful=3, harmful=1)
    merged, retired = build.merge(keep, [other])
    assert merged.op == "merge" and merged.after["provenance"] == ["t1", "t2"]
    assert (merged.after["helpful"], merged.after["harmful"]) == (5, 1)
    assert retired.op == "retire" and retired.after["status"] == "retired"
    assert retired.after["meta"]["merged_into"] == keep.id
