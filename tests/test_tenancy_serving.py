"""Serving follows scope (issue 15, part 7): the narrowest item per key wins, `@task` and every pack
use the caller's scope only, and a relevance floor keeps unrelated items out of packs."""

from __future__ import annotations

from pydantic import BaseModel

import crystallise
from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine.home import Home
from crystallise.engine.serving import recall
from crystallise.types import Delta, Item
from tests.helpers import new_home


def put(home: Home, *items: Item) -> None:
    home.store.apply_item_deltas([Delta(op="add", target="item", item_id=i.id, after=i.to_dict()) for i in items])


def test_the_most_specific_item_per_key_wins(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    put(home,
        Item("Ship orders with UPS", kind="memory", level="agent", agent_id="shop", key="ship.carrier"),
        Item("Ship orders with DHL", kind="memory", level="org", agent_id="shop", org_id="acme", key="ship.carrier"),
        Item("Ship my orders with FedEx", kind="memory", level="user", agent_id="shop", org_id="acme", user_id="u1",
             key="ship.carrier"))
    def texts(user: str, query: str | None) -> list[str]:
        return [i.text for i in crystallise.context(agent="shop", org="acme", user=user, query=query, home=home).items]

    for query in ("ship orders carrier", None):
        assert texts("u1", query) == ["Ship my orders with FedEx"]
        assert texts("u2", query) == ["Ship orders with DHL"]
    assert [i.text for i in crystallise.context(agent="shop", org="globex", home=home).items] == \
        ["Ship orders with UPS"]
    hits = recall("ship orders", agent="shop", org="acme", user="u1", home=home)
    assert [h.text for h in hits] == ["Ship my orders with FedEx"]


def test_a_relevance_floor_keeps_unrelated_items_out_of_a_pack(tmp_path):
    home = new_home(tmp_path)
    put(home, Item("Refunds are accepted within 30 days", kind="memory", level="agent", agent_id="shop"),
        Item("The office cat is called Miso", kind="memory", level="agent", agent_id="shop"))
    pack = crystallise.context(agent="shop", query="refund window for a parcel", home=home, budget_tokens=800)
    assert [i.text for i in pack.items] == ["Refunds are accepted within 30 days"]
    assert crystallise.context(agent="shop", query="quantum chromodynamics", home=home).items == []


class Out(BaseModel):
    answer: str


def test_task_prompts_hold_the_callers_playbook_only(tmp_path, monkeypatch):
    home = new_home(tmp_path)
    put(home,
        Item("Support: greet by first name", level="agent", agent_id="support"),
        Item("Sales: always upsell the premium plan", level="agent", agent_id="sales"),
        Item("Acme: cite the contract clause", level="org", agent_id="support", org_id="acme"),
        Item("Globex: mention the Globex discount", level="org", agent_id="support", org_id="globex"))
    backend = ScriptedBackend(lambda request: '{"answer": "ok"}')
    monkeypatch.setattr(Home, "backend", lambda self, spec=None: backend)

    @crystallise.task(home=home)
    def reply(text: str) -> Out:
        """Reply to the customer."""

    with crystallise.trace("chat", agent="support", org="acme", user="u1", home=home):
        reply("hello")
    system = backend.requests[-1].messages[0].content
    assert "greet by first name" in system and "cite the contract clause" in system
    assert "upsell" not in system and "Globex" not in system
