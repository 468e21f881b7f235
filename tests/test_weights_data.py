"""The weight layer without torch: datasets from traces, redaction, manifests, serving choice, revert, the gate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from crystallise.errors import ValidationError
from crystallise.gate import CaseResult, WeightsPolicy, decide_adapter
from crystallise.governance.undo import REVOKED
from crystallise.engine.home import Home
from crystallise.engine.committer import Committer
from crystallise.engine.observe import trace
from crystallise.types import Feedback, Scope, Verdict
from crystallise.weights import PiiRedactor, export_dataset, resolve, summarise
from crystallise.weights.modules import (
    adapter_changeset,
    current_manifest,
    store_weights,
    weights_dir,
    weights_digest,
)

BASE_SHA = "b" * 64
PII = re.compile(r"[\w.]+@[\w.]+\.\w+|\b4111[ -]?1111[ -]?1111[ -]?1111\b|555-0100")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home.init(tmp_path / "home")
    yield h
    h.close()


def _run(home: Home, question: str, answer: str, *, agent: str = "support", org: str | None = None,
         user: str | None = None, correction: str | None = None, score: float | None = None,
         name: str = "triage") -> str:
    with trace(name, agent=agent, org=org, user=user, input=question, home=home) as t:
        t.output = answer
    if correction is not None or score is not None:
        home.store.add_feedback(Feedback(trace_id=t.id, score=score, correction=correction))
    return t.id


def test_export_keeps_verified_runs_only_with_provenance_and_no_pii(store_url: str, tmp_path: Path) -> None:
    home = Home.init(tmp_path / "pghome", store_url=store_url)  # SQLite and PostgreSQL
    ok = _run(home, "Reset the password for ann@example.com", "Sent a link.", score=1.0)
    fixed = _run(home, "Card 4111 1111 1111 1111 was charged twice, call +1 (415) 555-0100", "Refund it.",
                 correction="Open a billing dispute for ann.lee@example.org.", score=0.0)
    _run(home, "Unverified question", "whatever")  # no feedback: never exported
    _run(home, "Wrong and uncorrected", "no", score=0.0)  # a failure without the right answer
    _run(home, "Another agent's run", "x", agent="sales", score=1.0)
    _run(home, "A tenant's run", "y", org="acme", score=1.0)  # org data never trains the agent adapter
    revoked = _run(home, "Taken back", "z", score=1.0)
    home.store.add_feedback(Feedback(trace_id=revoked, kind=REVOKED, source="explicit", comment="undo"))

    ds = export_dataset(home.store, Scope(agent="support"))
    info = ds.write(tmp_path / "out")
    assert [r["trace_id"] for r in ds.sft] == [ok, fixed]
    assert ds.sft[0]["source"] == "accepted" and ds.sft[1]["source"] == "correction"
    assert ds.sft[1]["messages"][-1] == {"role": "assistant", "content": "Open a billing dispute for [EMAIL]."}
    assert [p["trace_id"] for p in ds.pairs] == [fixed]
    assert ds.pairs[0]["rejected"] == "Refund it." and ds.pairs[0]["chosen"].startswith("Open a billing dispute")
    assert ds.skipped == {"unverified": 2, "revoked": 1}
    text = (tmp_path / "out" / "sft.jsonl").read_text() + (tmp_path / "out" / "pairs.jsonl").read_text()
    assert not PII.search(text), text
    assert "[CARD]" in text and "[PHONE]" in text
    assert info["redactions"] == {}  # the store redacted the traces as they were written (context/pii.py)
    assert info["traces"] == 2 and len(info["sft"]["sha256"]) == 64

    org = export_dataset(home.store, Scope(agent="support", org="acme"))
    assert [r["org"] for r in org.sft] == ["acme"]
    with pytest.raises(ValidationError, match="never per user"):
        export_dataset(home.store, Scope(agent="support", user="u1"))
    home.close()


def test_export_redacts_even_when_the_home_stores_pii(tmp_path: Path) -> None:
    home = Home.init(tmp_path / "plain")
    (home.path / "config.json").write_text(json.dumps({"pii": {"enabled": False}}))
    home = Home.open(home.path)
    _run(home, "Card 4111 1111 1111 1111 was charged twice, call +1 (415) 555-0100", "Refund it.",
         correction="Open a billing dispute for ann.lee@example.org.", score=0.0)
    assert "4111" in json.dumps(home.store.list_traces(with_children=True)[0].to_dict())  # stored as given
    ds = export_dataset(home.store, Scope(agent="support"))
    info = ds.write(tmp_path / "out")
    text = (tmp_path / "out" / "sft.jsonl").read_text() + (tmp_path / "out" / "pairs.jsonl").read_text()
    assert not PII.search(text), text
    assert info["redactions"] == {"email": 2, "card": 2, "phone": 2}  # the pair repeats the prompt
    home.close()


def test_redactor_leaves_numbers_that_are_not_pii() -> None:
    r = PiiRedactor()
    text = "Revenue $1,000,000 in 2023-24, ratio 2.0, id 4111111111111112, 12.5% growth"
    assert r.redact(text) == (text, {})
    assert r.redact("call 020 7946 0958")[0] == "call [PHONE]"


def _fake_adapter(tmp_path: Path, tag: str) -> Path:
    d = tmp_path / f"adapter-{tag}"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": 8, "tag": tag}))
    (d / "adapter_model.safetensors").write_bytes(tag.encode() * 100)
    return d


def _commit_adapter(home: Home, scope: Scope, folder: Path, name: str, base: str = BASE_SHA) -> int:
    digest, files = store_weights(home, folder)
    manifest = {"name": name, "scope": {}, "base": {"name": "smollm2-135m", "sha256": base},
                "weights": {"sha256": digest, "files": files}, "metrics": {}, "provenance": ["tr_1"]}
    verdict = Verdict(decision="accept", reason="accept: test")
    cs = adapter_changeset(home, scope, manifest, verdict, suites={"triage": '{"id": "c1"}\n'})
    return Committer(home).commit(cs).number


def test_adapters_are_content_addressed_served_per_scope_and_reverted(home: Home, tmp_path: Path) -> None:
    a1, a2, org = (_fake_adapter(tmp_path, t) for t in ("one", "two", "acme"))
    assert resolve(home, Scope(agent="support"), BASE_SHA).manifest is None  # nothing yet: the base

    v1 = _commit_adapter(home, Scope(agent="support"), a1, "support-1")
    v2 = _commit_adapter(home, Scope(agent="support"), a2, "support-2")
    _commit_adapter(home, Scope(agent="support", org="acme"), org, "acme-1")
    digest2 = weights_digest(a2)[0]
    assert weights_dir(home, digest2) == home.path / "adapters" / digest2
    assert (home.path / "adapters" / digest2 / "adapter_model.safetensors").read_bytes() == b"two" * 100

    assert resolve(home, Scope(agent="support"), BASE_SHA).manifest["name"] == "support-2"
    assert resolve(home, Scope(agent="support", org="acme"), BASE_SHA).manifest["name"] == "acme-1"
    assert resolve(home, Scope(agent="support", org="globex"), BASE_SHA).manifest["name"] == "support-2"
    other = resolve(home, Scope(agent="support"), "c" * 64)  # adapters of another base are never served
    assert other.manifest is None and "for base smollm2-135m" in other.reason
    assert resolve(home, Scope(agent="sales"), BASE_SHA).reason == "base model (no adapter for this scope)"

    manifest = json.loads(home.repo.read("adapters/agent/support/adapter.json"))
    assert manifest["verdict"]["decision"] == "accept" and manifest["weights"]["sha256"] == digest2
    log = home.repo.log(limit=1, path="adapters/org/acme")
    assert log and "acme-1" in log[0].subject

    Committer(home).revert(v2)  # the previous adapter serves again
    assert resolve(home, Scope(agent="support"), BASE_SHA).manifest["name"] == "support-1"
    Committer(home).revert(v1)  # and then none: the base
    assert current_manifest(home, "agent", "support") is None
    assert resolve(home, Scope(agent="support"), BASE_SHA).manifest is None
    assert weights_dir(home, digest2).is_dir()  # weights stay: reverting the revert brings them back


def test_tampered_weights_are_refused(home: Home, tmp_path: Path) -> None:
    digest, _ = store_weights(home, _fake_adapter(tmp_path, "x"))
    (home.path / "adapters" / digest / "adapter_model.safetensors").write_bytes(b"evil")
    with pytest.raises(Exception, match="do not match their digest"):
        weights_dir(home, digest)


def _results(prefix: str, passed: list[bool]) -> list[CaseResult]:
    return [CaseResult(f"{prefix}{i}", p, None) for i, p in enumerate(passed)]


def test_gate_rejects_an_adapter_that_forgets_even_when_the_target_improves() -> None:
    t_old, t_new = _results("t", [False] * 12), _results("t", [True] * 10 + [False] * 2)
    keep = (_results("r", [True] * 20), _results("r", [True] * 19 + [False]))
    broke = (_results("p", [True] * 20), _results("p", [True] * 11 + [False] * 9))
    ok = decide_adapter(t_old, t_new, {"earlier": keep})
    assert ok.decision == "accept" and "retention kept (max forgetting 5.0 points)" in ok.reason
    bad = decide_adapter(t_old, t_new, {"earlier": keep, "base-probes": broke})
    assert bad.decision == "reject"
    assert bad.reason.startswith("reject: forgetting rule: retention suite 'base-probes' 100.0% -> 55.0%")
    assert bad.details["retention"]["base-probes"]["forgetting"] == pytest.approx(0.45)
    assert decide_adapter(t_old, t_new, {"base-probes": broke}, WeightsPolicy(max_forgetting=0.5)).decision == "accept"
    assert decide_adapter(t_old, t_new, {}, WeightsPolicy(min_retention_cases=5)).decision == "needs_review"
    not_better = decide_adapter(t_old, t_old, {"earlier": keep})
    assert not_better.decision == "reject" and "not better" in not_better.reason
    with pytest.raises(ValidationError):
        WeightsPolicy(max_forgetting=2)


def test_forgetting_metrics() -> None:
    m = summarise([[0.8, 0.0, 0.1], [0.4, 0.9, 0.1], [0.2, 0.6, 0.7]], before=[0.0, 0.0, 0.1])
    assert m["average"] == pytest.approx(0.5)
    assert m["bwt"] == pytest.approx(((0.2 - 0.8) + (0.6 - 0.9)) / 2)
    assert m["forgetting"] == pytest.approx(((0.8 - 0.2) + (0.9 - 0.6)) / 2)
    assert m["gain"] == pytest.approx((0.8 + 0.9 + 0.6) / 3)
    with pytest.raises(ValidationError):
        summarise([[1.0, 0.5]])


def test_cli_exports_lists_shows_and_reverts_adapters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from crystallise.cli import main

    monkeypatch.delenv("CRYSTALLISE_HOME", raising=False)
    home_path = tmp_path / "home"
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--home", str(home_path), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    run("init")
    home = Home.open(home_path)
    tid = _run(home, "Where is my parcel? Reach me at bob@example.com", "Lost.", correction="In transit.")
    info = json.loads(run("weights", "export", "--agent", "support", "--out", str(tmp_path / "ds"), "--json"))
    assert info["sft"]["examples"] == 1 and info["pairs"]["examples"] == 1 and info["redactions"] == {}
    row = json.loads((tmp_path / "ds" / "sft.jsonl").read_text())
    assert row["trace_id"] == tid and "bob@example.com" not in json.dumps(row)
    assert "no adapters yet" in run("weights", "list")
    assert "serves the base model" in run("weights", "show", "--agent", "support", code=2)

    number = _commit_adapter(home, Scope(agent="support"), _fake_adapter(tmp_path, "cli"), "support-cli")
    listed = json.loads(run("weights", "list", "--json"))
    assert [(r["scope"], r["name"]) for r in listed] == [("agent support", "support-cli")]
    assert json.loads(run("weights", "show", "--agent", "support"))["name"] == "support-cli"
    run("revert", str(number))
    assert json.loads(run("weights", "list", "--json")) == []
    home.close()
