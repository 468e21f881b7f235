"""Skills: SKILL.md validation, import/export round trip, progressive disclosure, the skill learner + gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import crystallise
from crystallise.cli import main
from crystallise.context.skill_learner import SkillLearner, procedures, signature
from crystallise.engine.skills import export_skills, import_skills, learn_skills, list_skills, load_skill
from crystallise.context.skills import parse_skill
from crystallise.errors import NotFoundError, ValidationError
from crystallise.types import Feedback, Span, Trace
from tests.helpers import new_home

PDF = """---
name: pdf-processing
description: Extract text and tables from PDF files, fill forms, merge documents. Use when handling PDFs.
license: Apache-2.0
metadata:
  author: example-org
  version: "1.0"
allowed-tools: Bash(pdftotext:*) Read
---

# PDF processing

1. Run `pdftotext -layout in.pdf out.txt`.
2. Read out.txt; tables keep their columns with -layout.
"""

SQL = """---
name: sql-review
description: >-
  Review SQL migrations for locking problems. Use when a change alters a large table.
---
Check for ALTER TABLE ... ADD COLUMN with a default on PostgreSQL < 11.
"""


def write_skill(root: Path, folder: str, text: str, extra: dict[str, str | bytes] | None = None) -> Path:
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    (d / "SKILL.md").write_text(text)
    for rel, data in (extra or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data if isinstance(data, bytes) else data.encode())
    return d


@pytest.fixture
def home(tmp_path):
    h = new_home(tmp_path)
    yield h
    h.close()


def test_parse_valid_skill_and_its_fields():
    s = parse_skill(PDF, folder="pdf-processing")
    assert s.name == "pdf-processing" and s.license == "Apache-2.0"
    assert s.metadata == {"author": "example-org", "version": "1.0"}
    assert s.allowed_tools == ["Bash(pdftotext:*)", "Read"] and s.body.lstrip().startswith("# PDF processing")
    assert parse_skill(SQL).description.startswith("Review SQL migrations")


@pytest.mark.parametrize("text,needle", [
    ("# no front matter\n", "must start with a line '---'"),
    ("---\nname: x\ndescription: y\n", "not closed"),
    ("---\nname: [unclosed\n---\n", "not valid YAML"),
    ("---\n- a\n- b\n---\n", "YAML mapping"),
    ("---\ndescription: d\n---\n", "needs `name:`"),
    ("---\nname: PDF-Tools\ndescription: d\n---\n", "is invalid"),
    ("---\nname: pdf--tools\ndescription: d\n---\n", "is invalid"),
    ("---\nname: -pdf\ndescription: d\n---\n", "is invalid"),
    ("---\nname: " + "a" * 65 + "\ndescription: d\n---\n", "is invalid"),
    ("---\nname: pdf\n---\n", "non-empty `description:`"),
    ("---\nname: pdf\ndescription: '" + "x" * 1025 + "'\n---\n", "limit is 1024"),
    ("---\nname: pdf\ndescription: d\nversion: 2\n---\n", "unknown front matter field"),
    ("---\nname: pdf\ndescription: d\nmetadata:\n  version: 1.0\n---\n", "strings to strings"),
    ("---\nname: pdf\ndescription: d\ncompatibility: ''\n---\n", "compatibility"),
])
def test_bad_front_matter_gets_a_clear_error(text, needle):
    with pytest.raises(ValidationError, match=needle):
        parse_skill(text)


def test_name_must_match_the_folder():
    with pytest.raises(ValidationError, match="must match its folder name 'pdf'"):
        parse_skill(PDF, folder="pdf")


def test_import_export_round_trip_is_byte_identical(home, tmp_path):
    src = tmp_path / "src"
    write_skill(src, "pdf-processing", PDF, {"scripts/extract.py": "print('hi')\n", "logo.png": b"\x89PNG\x00\xff"})
    write_skill(src, "sql-review", SQL, {"references/locks.md": "# locks\n"})
    version, skills, skipped = import_skills(home, src)
    assert version is not None and {s.name for s in skills} == {"pdf-processing", "sql-review"}
    assert skipped == ["pdf-processing/logo.png"]  # binary files cannot enter the text artifact store
    assert {s.name for s in list_skills(home)} == {"pdf-processing", "sql-review"}
    log = home.repo.log(1)[0]
    assert "skills/pdf-processing/SKILL.md" in log.files and "context/skills/sql-review.json" in log.files
    record = json.loads(home.repo.read("context/skills/pdf-processing.json"))
    assert record["source"] == "import" and record["trust"] == 0.5
    dest = tmp_path / "out"
    export_skills(home, dest)
    for name, rel in (("pdf-processing", "SKILL.md"), ("pdf-processing", "scripts/extract.py"),
                      ("sql-review", "SKILL.md"), ("sql-review", "references/locks.md")):
        assert (dest / name / rel).read_bytes() == (src / name / rel).read_bytes()
    assert not (dest / "pdf-processing" / "logo.png").exists()
    again, _, _ = import_skills(home, src)
    assert again is None  # nothing changed: no empty version


def test_a_bad_skill_fails_the_whole_import(home, tmp_path):
    src = tmp_path / "src"
    write_skill(src, "pdf-processing", PDF)
    write_skill(src, "broken", "---\nname: Broken\ndescription: d\n---\n")
    with pytest.raises(ValidationError, match=r"(?s)nothing was imported.*broken/SKILL.md"):
        import_skills(home, src)
    assert list_skills(home) == []


def test_progressive_disclosure_body_only_when_loaded(home, tmp_path):
    write_skill(tmp_path / "src", "pdf-processing", PDF)
    import_skills(home, tmp_path / "src" / "pdf-processing", agent="support")
    pack = crystallise.context(agent="support", query="how do I get the tables out of a PDF file?", home=home)
    assert "pdf-processing: Extract text and tables" in pack.text and "pdftotext" not in pack.text
    assert pack.skills_loaded == []
    loaded = crystallise.context(agent="support", query="tables from a PDF", load_skills=["pdf-processing"],
                                 home=home)
    assert "## Skill: pdf-processing" in loaded.text and "pdftotext -layout" in loaded.text
    auto = crystallise.context(agent="support", query="extract text and tables from PDF files", auto_skills=True,
                               home=home)
    assert auto.skills_loaded == ["pdf-processing"] and "pdftotext" in auto.text
    with crystallise.trace("q", agent="support", home=home) as t:
        crystallise.context(agent="support", query="PDF", load_skills=["pdf-processing"], home=home)
    span = home.store.get_trace(t.id).spans[0]
    assert span.attributes["loaded_skills"] == ["pdf-processing"]
    assert load_skill("pdf-processing", home=home, agent="support").body.count("pdftotext") == 1
    with pytest.raises(NotFoundError):
        load_skill("pdf-processing", home=home, agent="other-agent")
    other = crystallise.context(agent="other-agent", query="tables from a PDF", home=home)
    assert "pdf-processing" not in other.text


def test_skills_cli(home, tmp_path):
    write_skill(tmp_path / "src", "sql-review", SQL)
    runner = CliRunner()
    base = ["--home", str(home.path)]
    r = runner.invoke(main, [*base, "skills", "import", str(tmp_path / "src")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, [*base, "skills", "list", "--json"])
    assert [s["name"] for s in json.loads(r.output)] == ["sql-review"]
    r = runner.invoke(main, [*base, "skills", "show", "sql-review"])
    assert r.exit_code == 0 and "ALTER TABLE" in r.output
    r = runner.invoke(main, [*base, "skills", "export", str(tmp_path / "out")])
    assert r.exit_code == 0 and (tmp_path / "out" / "sql-review" / "SKILL.md").read_text() == SQL
    write_skill(tmp_path / "bad", "x", "no front matter")
    r = runner.invoke(main, [*base, "skills", "import", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "must start with a line '---'" in r.output
    r = runner.invoke(main, [*base, "skills", "show", "nope"])
    assert r.exit_code == 2 and "skills list" in r.output


# -- the skill learner -------------------------------------------------------------------------------------


def run(name: str, steps: list[str], ok: bool | None, i: int) -> Trace:
    t = Trace(name=name, id=f"tr_{name}_{i:03d}", spans=[Span(name=s, kind="tool", input={"n": i}) for s in steps])
    if ok is not None:
        t.feedback.append(Feedback(trace_id=t.id, score=1.0 if ok else 0.0))
    return t


def test_procedures_group_runs_by_task_and_tool_sequence():
    runs = [run("refund", ["lookup", "refund"], True, i) for i in range(3)] + [run("refund", ["refund"], False, 9)]
    ps = procedures(runs)
    assert [(p.steps, len(p.successes), len(p.failures)) for p in ps] == [(("lookup", "refund"), 3, 0),
                                                                         (("refund",), 0, 1)]
    assert signature(runs[0]) == ("lookup", "refund") and ps[0].name == "refund-procedure"


def test_skill_learner_proposes_and_the_gate_accepts_a_procedure_that_beats_the_alternatives(home):
    good = [run("refund", ["lookup_order", "check_policy", "issue_refund"], True, i) for i in range(30)]
    bad = [run("refund", ["issue_refund"], False, 100 + i) for i in range(30)]
    for t in good + bad:
        home.store.write_trace(t)
    learner = SkillLearner(min_traces=3)
    results = learn_skills(home, learner=learner, traces=home.store.list_traces(with_children=True, limit=1000))
    assert len(results) == 1
    cs, version = results[0]
    assert cs.verdict.decision == "accept" and version is not None and cs.verdict.losses == 0
    assert set(cs.verdict.details["win_ids"]) <= {t.id for t in bad} and cs.verdict.wins >= 5  # held-out failures
    skill = load_skill("refund-procedure", home=home)
    assert "lookup_order → check_policy → issue_refund" in skill.description
    assert skill.source == "learned" and set(skill.provenance) <= {t.id for t in good}
    assert "skills/refund-procedure/SKILL.md" in home.repo.log(1)[0].files
    # a second round finds nothing new: the skill exists
    assert learn_skills(home, learner=learner, traces=home.store.list_traces(with_children=True, limit=1000)) == []


def test_skill_learner_gate_rejects_a_procedure_that_changes_nothing(home):
    runs = [run("lookup", ["search", "read"], True, i) for i in range(30)]  # agents already do this, always
    for t in runs:
        home.store.write_trace(t)
    runs_read = home.store.list_traces(with_children=True, limit=1000)
    results = learn_skills(home, runs_read, learner=SkillLearner(min_traces=3))
    assert len(results) == 1
    cs, version = results[0]
    assert version is None and cs.verdict.decision == "reject" and "not better" in cs.verdict.reason
    assert cs.verdict.n == cs.evidence["gate_cases"] >= 5
    stored = home.store.list_changesets(status="rejected")
    assert [c.id for c in stored] == [cs.id] and stored[0].learner == "skills"  # kept as evidence
    assert list_skills(home) == []


def test_skill_learner_accepts_a_shorter_procedure_as_equal_and_cheaper(home):
    runs = [run("lookup", ["search", "read"], True, i) for i in range(30)]
    runs += [run("lookup", ["search", "search", "read", "read"], True, 100 + i) for i in range(10)]
    for t in runs:
        home.store.write_trace(t)
    (cs, version), = learn_skills(home, home.store.list_traces(with_children=True, limit=1000),
                                  learner=SkillLearner(min_traces=3))
    assert cs.evidence["steps"] == ["search", "read"]
    assert cs.verdict.decision == "accept" and "equal and cheaper" in cs.verdict.reason and version is not None


def test_skill_learner_needs_enough_successes(home):
    runs = [run("tiny", ["a"], True, i) for i in range(2)]
    assert SkillLearner(min_traces=3).propose(home.repo, home.store, runs) == []
