"""Synthesis strategies behind one interface, verification by replay, composition, the loop.

Models are the scripted double: a "coder" that answers with fixed code, an "LLM" that
extracts fields by regex. The real coder model is in test_coder_local.py (slow).
"""

from __future__ import annotations

import json
import random
import re

import pytest

from crystallise.backends.scripted import ScriptedBackend
from crystallise.gate import score_exact, score_numeric
from crystallise.harness.learn import CrystalliseLearner
from crystallise.harness.programs import FORMAT, load, load_body, sandbox_runner
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec, View
from crystallise.harness.synth.base import Candidate, Case, Problem, split
from crystallise.harness.synth.coder import CoderStrategy, clean_code
from crystallise.harness.synth.hybrid import HybridStrategy
from crystallise.harness.synth.lookup import LookupStrategy
from crystallise.harness.synth.pipeline import synthesise
from crystallise.harness.synth.strategies import ArithPart, StringsPart
from crystallise.harness.synth.template import OutputCodec, choose_mode, templates
from crystallise.harness.synth.verify import Policy, verify
from crystallise.engine.committer import Committer
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from tests.helpers import new_home, ratio_records


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


def cases_of(pairs, prefix="c") -> list[Case]:
    return [Case(x, y, f"{prefix}{i}") for i, (x, y) in enumerate(pairs)]


NAMES = ["Nancy FreeHafer", "Jan Kotas", "Andrew Fuller", "Janet Leverling", "Steven Buchanan", "Michael Suyama",
         "Robert King", "Laura Callahan", "Anne Dodsworth", "Grace Hopper", "Alan Turing", "Ada Lovelace"]


def first_names(names=NAMES) -> list[Case]:
    return cases_of([(f"Extract the first name from: {n}. Reply with the name only.", n.split()[0]) for n in names])


def boolean_cases(n=48, seed=1) -> list[Case]:
    rng, seen = random.Random(seed), set()
    while len(seen) < n:
        seen.add(" ".join(rng.choice(["True", "False", "not True", "not False"]) + (f" {rng.choice(['and', 'or'])}"
                                                                                       if k < 2 else "")
                          for k in range(3)))
    return cases_of([(f"{e} is", str(eval(e))) for e in sorted(seen)], "b")


PRE = ("Use formula Debt-to-Equity Ratio to answer the question. Formula: D/E = Total Liabilities / "
       "Shareholders' Equity. Question: ")


def debt_equity(n=30, seed=3, stated=True) -> list[Case]:
    """The numbers come in three phrasings and either order of size: no arithmetic over positions
    or ranks fits, a model that reads the roles can (and, with the formula stated, so can arith by
    the words around each number; `stated=False` leaves the formula out)."""
    pre = PRE if stated else "Use formula Debt-to-Equity Ratio to answer the question. Question: "
    rng, out = random.Random(seed), []
    for i in range(n):
        x, y = rng.randrange(100, 2000) * 1000, rng.randrange(100, 2000) * 1000
        q = [f"A firm has liabilities of ${x:,} and equity of ${y:,}. What is its debt-to-equity ratio?",
             f"Shareholders' equity stands at ${y:,} while liabilities are ${x:,}. Compute the ratio.",
             f"With ${y:,} of equity and liabilities of ${x:,}, find D/E."][i % 3]
        out.append(Case(pre + q + " Answer:", str(round(x / y, 2)), f"d{i}"))
    return out


COMPUTE = ("```python\ndef compute(total_liabilities, shareholders_equity):\n"
           "    return total_liabilities / shareholders_equity\n```")


def fake_extraction(text: str) -> str:
    liab = re.search(r"liabilities (?:of|are) \$([\d,]+)", text).group(1)
    eq = re.search(r"equity (?:of |stands at )\$([\d,]+)|\$([\d,]+) of equity", text)
    return json.dumps({"total_liabilities": float(liab.replace(",", "")),
                       "shareholders_equity": float((eq.group(1) or eq.group(2)).replace(",", ""))})


# -- templates and output types -----------------------------------------------------------------------


def test_constant_template_is_factored_out_at_token_boundaries():
    texts = ["True and not False is", "False or True is", "not True is"]
    (t,) = templates(texts, choose_mode(texts)).values()
    assert (t.prefix, t.suffix) == ("", " is") and t.payload("True or False is") == "True or False"
    texts = [c.input for c in first_names()]
    mode = choose_mode(texts)
    (t,) = templates(texts, mode).values()
    assert mode == "none" and t.prefix == "Extract the first name from: "  # the name is in the first sentence
    assert t.suffix == ". Reply with the name only." and t.payload(texts[0]) == "Nancy FreeHafer"
    assert t.payload("something else") is None
    (t,) = templates(["x = 12", "y = 2"], "none").values()  # never inside a number
    assert t.suffix == ""


def test_output_codec_types_and_back():
    assert OutputCodec.infer(["8", "12", "3"]).kind == "int"
    yes = OutputCodec.infer(["yes", "no"])
    assert (yes.kind, yes.decode("no"), yes.encode(True)) == ("bool", False, "yes")
    assert OutputCodec.infer(["(A) x", "(B)"]).kind == "str" and OutputCodec.infer([1, 2]).kind == "any"
    option = OutputCodec.infer(["(A)", "(C)"])
    question = "Which is largest?\nOptions:\n(A) 3\n(B) 12\n(C) 7"
    assert option.kind == "option" and option.encode("12", question) == "(B)"  # the option's text -> its label
    assert option.encode("C", question) == "(C)" and option.encode("(A)", question) == "(A)"
    assert option.encode("99", question) is None  # not an option: abstain


def test_coder_may_answer_a_multiple_choice_task_with_the_option_text():
    rng = random.Random(5)
    cases = []
    for i in range(12):
        nums = rng.sample(range(1, 99), 3)
        opts = "\n".join(f"({'ABC'[j]}) {n}" for j, n in enumerate(nums))
        cases.append(Case(f"Which is largest?\nOptions:\n{opts}", f"({'ABC'[nums.index(max(nums))]})", str(i)))
    code = ("```python\nimport re\n\ndef solve(x):\n"
            "    return str(max(int(n) for n in re.findall(r'\\) (\\d+)', x)))\n```")
    fake = ScriptedBackend(lambda request: code)
    cand = CoderStrategy(fake).propose(Problem("t", cases, score_exact))
    assert cand is not None and "text of that option" in fake.requests[0].messages[-1].content
    assert _run(cand, "Which is largest?\nOptions:\n(A) 5\n(B) 2\n(C) 40") == "(C)"


# -- each strategy on small cases, through the one interface ----------------------------------------


def _run(candidate: Candidate, value, *fields):
    """The candidate as it runs: its tree, by the interpreter (LLM-written parts in the sandbox)."""
    return load_body(candidate.program, sandbox_runner).solve(value, *fields)


def _unit(candidate: Candidate, value):
    return load_body(candidate.program, sandbox_runner).unit(value)


def source_part(groups: dict[str, str], mode: str = "none", codec: str = "any") -> dict:
    """A grouped body whose groups are LLM-written `solve(payload)` sources, keyed by template."""
    return {"kind": "grouped", "mode": mode, "groups": [
        {"unit": unit, "prefix": unit, "suffix": "", "arg_keys": None,
         "codec": {"kind": codec, "true": "True", "false": "False"}, "fn": {"kind": "source", "source": src}}
        for unit, src in groups.items()]}


def test_lookup_proposes_a_table_only_when_inputs_repeat():
    assert LookupStrategy().propose(Problem("t", cases_of([("a", "1"), ("b", "2")]), score_exact)) is None
    cand = LookupStrategy().propose(Problem("t", cases_of([("a", "1"), ("a", "1"), ("b", "2")]), score_exact))
    assert cand is not None and _run(cand, "a") == "1" and _run(cand, "zzz") is None


def test_arith_part_emits_units_per_rule():
    cases = [Case(r["context"], r["target"], str(i)) for i, r in enumerate(ratio_records(12))]
    cand = ArithPart().propose(Problem("t", cases, score_numeric, budget_s=1.0))
    assert cand is not None and cand.state["rules"]
    new = ratio_records(1, start=40)[0]
    assert score_numeric(_run(cand, new["context"]), new["target"])
    assert _unit(cand, new["context"]) == "Use formula Asset Ratio to answer. | (2, 0, 0)"
    assert _unit(cand, "Use formula Other to answer. Question: $1 and $2.") is None


def test_strings_part_synthesises_over_the_payload():
    cand = StringsPart().propose(Problem("t", first_names()[:6], score_exact, budget_s=2.0))
    assert cand is not None
    assert _run(cand, "Extract the first name from: Grace Hopper. Reply with the name only.") == "Grace"
    assert _run(cand, "Extract the last name from: Grace Hopper.") is None  # another template: abstain


def test_strings_part_types_outputs_and_maps_arguments():
    counts = cases_of([(f"How many words are in '{s}'? Answer:", str(len(s.split())))
                       for s in ["a b c", "hello world", "one", "the cat sat down", "x y"]])
    cand = StringsPart().propose(Problem("t", counts, score_exact, budget_s=2.0))
    assert cand is not None and _run(cand, "How many words are in 'to be or not'? Answer:") == "4"
    people = cases_of([({"first": a, "last": b}, f"{b}, {a}") for a, b in (n.split() for n in NAMES[:5])])
    cand = StringsPart().propose(Problem("t", people, score_exact, budget_s=2.0))
    assert cand is not None and _run(cand, {"first": "Ada", "last": "Lovelace"}) == "Lovelace, Ada"


def test_coder_writes_code_and_feedback_carries_the_exact_failure():
    def coder(request):
        last = request.messages[-1].content
        if "raised ZeroDivisionError" in last:
            return "```python\ndef solve(x):\n    return str(eval(x))\n```"
        return ("Sure:\n```python\ndef solve(x):\n    if 'or' in x:\n        return 1 / 0\n    return str(eval(x))\n\n"
                "print(solve('True'))\nassert solve('True') == 'True'\n```")

    fake = ScriptedBackend(coder)
    cases = boolean_cases(24)
    cand = CoderStrategy(fake).propose(Problem("t", cases, score_exact, description="Evaluate the expression."))
    assert cand is not None and cand.notes["llm_calls"] == 2
    first = fake.requests[0].messages[-1].content
    assert "<x> is" in first and "assert solve(" in first and "Evaluate the expression." in first
    feedback = fake.requests[1].messages[-1].content
    failing = next(c for c in cases if " or " in c.input)
    assert "raised ZeroDivisionError: division by zero" in feedback
    assert repr(failing.input[:-3]) in feedback or "or" in feedback
    assert _run(cand, "not False and True is") == "True"


def test_a_coder_that_repeats_itself_is_asked_again_with_sampling():
    stuck = "```python\ndef solve(x):\n    return 'True'\n```"
    right = "```python\ndef solve(x):\n    return str(eval(x))\n```"
    fake = ScriptedBackend(lambda request: right if request.temperature > 0 else stuck)
    cand = CoderStrategy(fake).propose(Problem("t", boolean_cases(24), score_exact))
    assert cand is not None and cand.notes["llm_calls"] == 3  # first try, a repeat, then the sampled retry
    sampled = [r for r in fake.requests if r.temperature > 0]
    assert len(sampled) == 1 and sampled[0].seed == 1
    nothing = CoderStrategy(ScriptedBackend(lambda r: right if r.temperature > 0 else stuck), sample_repeats=False,
                            rounds=3).propose(Problem("t", boolean_cases(24), score_exact))
    assert nothing is not None and not nothing.program  # no program; what was tried is its state (evidence)
    assert nothing.state["rounds"]["(inputs)"]["scores"] == [17, 17, 17] and nothing.state["llm_calls"] == 3


def test_clean_code_drops_top_level_tests_and_aliases_the_function():
    code = "import math\n\ndef area(r):\n    return math.pi * r * r\n\nprint(area(2))\nassert area(1) > 3\n"
    cleaned = clean_code(code)
    assert "print(" not in cleaned and "assert" not in cleaned and cleaned.rstrip().endswith("solve = area")
    assert clean_code("x = (") is None and clean_code("x = 1\n") is None


def test_llm_written_code_runs_only_in_the_sandbox(tmp_path):
    marker = tmp_path / "escaped"
    evil = (f"```python\nopen({str(marker)!r}, 'w').write('x')\nimport os\nos.system('touch {marker}')\n\n"
            "def solve(x):\n    return str(eval(x))\n```")
    fake = ScriptedBackend(lambda request: evil)
    cand = CoderStrategy(fake, rounds=2).propose(Problem("t", boolean_cases(12), score_exact))
    assert cand is not None and not cand.program  # `import os` is refused by the sandbox, every round
    assert not marker.exists()
    assert "not allowed" in fake.requests[1].messages[-1].content  # and the refusal went back to the model


def test_hybrid_extracts_fields_and_code_computes():
    coder = ScriptedBackend(lambda request: COMPUTE)
    extractor = ScriptedBackend(lambda request: fake_extraction(request.messages[-1].content))
    cases = debt_equity(24)
    cand = HybridStrategy(coder, extractor).propose(Problem("t", cases, score_numeric, numeric=True))
    assert cand is not None and cand.extraction is not None
    (unit, spec), = cand.extraction["units"].items()
    assert spec["fields"] == ["total_liabilities", "shareholders_equity"] and spec["shots"]
    assert extractor.requests[0].schema["required"] == spec["fields"]  # schema-constrained extraction
    value = debt_equity(40)[35]
    fields = json.loads(fake_extraction(value.input))
    assert score_numeric(_run(cand, value.input, fields), value.output)
    assert _run(cand, value.input) is None  # without extracted fields a hybrid part abstains
    # arithmetic over positions or ranks cannot (the phrasings reorder the amounts); it can only through
    # the formula the task states, by the words around each number (synth/formula.py, named_numbers)
    arith = ArithPart().propose(Problem("t", cases, score_numeric, budget_s=0.5))
    assert arith is None or (arith.program.get("names")
                             and all('"v' in json.dumps(r["expr"]) for r in arith.program["rules"]))


# -- verification by replay -------------------------------------------------------------------------


def test_heldout_verification_rejects_an_overfitted_program():
    cases = boolean_cases(36)
    fit, held = split(cases)
    assert fit and held and not {c.input for c in fit} & {c.input for c in held}
    table = {c.input: c.output for c in fit}
    memorised_src = f"TABLE = {table!r}\n\ndef solve(value):\n    return TABLE.get(value, 'True')\n"
    memorised = Candidate("coder", source_part({"": memorised_src}))
    v = verify(memorised, fit, held, score_exact)
    assert v.units[""].fit_correct == len(fit)  # perfect on what it was built from ...
    assert v.verified_units == [] and "held-out precision" in v.units[""].reason  # ... and rejected
    silent = Candidate("coder", source_part({"": memorised_src.replace("'True')", "None)")}))
    v = verify(silent, fit, held, score_exact)
    assert v.verified_units == [] and "answered 0 held-out" in v.units[""].reason  # abstaining earns nothing
    general = Candidate("coder", source_part({"": "def solve(value):\n    return str(eval(value[:-3]))\n"}))
    assert verify(general, fit, held, score_exact).verified_units == [""]


def test_a_memorising_coder_is_rejected_end_to_end():
    cases = boolean_cases(36)
    fit, _ = split(cases)
    table = {c.input[:-3]: c.output for c in fit}  # it saw the fit payloads (a cheat the prompt cannot give)
    cheat = f"```python\nTABLE = {table!r}\n\ndef solve(x):\n    return TABLE.get(x, 'False')\n```"
    learner = CrystalliseLearner(score_exact, strategies=("coder",), coder=ScriptedBackend(lambda r: cheat))
    assert synthesise("t", cases, learner.strategies, score_exact) is None


def test_verification_keeps_good_units_and_drops_bad_ones():
    body = source_part({"Good.": "def solve(n):\n    return str(int(n) * 2)\n",
                        "Bad.": "def solve(n):\n    return '0'\n"}, mode="sentence")
    cases = cases_of([(f"{k}. {i}", str(i * 2)) for k in ("Good", "Bad") for i in range(1, 16)])
    fit, held = split(cases)
    v = verify(Candidate("x", body), fit, held, score_exact, Policy(precision=0.95))
    assert v.verified_units == ["Good."] and v.units["Bad."].held_correct == 0


def test_pipeline_goes_cheapest_first_and_later_strategies_see_only_the_rest():
    coder = ScriptedBackend(lambda request: "```python\ndef solve(x):\n    return x.split()[-1]\n```")
    cases = [Case(r["context"], r["target"], f"r{i}") for i, r in enumerate(ratio_records(24))]
    cases += cases_of([(f"Repeat the last word of: {n}.", n.split()[-1]) for n in NAMES], "w")
    learner = CrystalliseLearner(score_numeric, strategies=("arith", "coder"), coder=coder)
    found = synthesise("mixed", cases, learner.strategies, score_numeric, budget_s=1.0)
    assert found is not None and found.parts == ["arith", "coder"]
    prompt = coder.requests[0].messages[-1].content
    assert "Repeat the last word" in prompt and "Asset Ratio" not in prompt  # arith covered those
    assert found.meta["parts"]["coder"]["verification"]["heldout_correct"] >= 1


def test_composition_skips_a_raising_part_and_abstains_when_none_answers():
    boom = source_part({"U.": "def solve(value):\n    return 1 / 0\n"}, mode="sentence")
    echo = source_part({"U.": "def solve(value):\n    return None if value == 'skip' else value\n"}, mode="sentence")

    def program(*parts):
        return load({"format": FORMAT, "parts": [{"strategy": name, "units": units, "hybrid": False, "body": body}
                                                 for name, body, units in parts]}, sandbox_runner)

    both = program(("boom", boom, ["U."]), ("echo", echo, ["U."]))
    assert both.solve("U. hi") == "hi" and both.solve("U. skip") is None
    assert "CodeRaised" in (both.run("U. skip").error or "")  # the failure is said, for the trace
    assert both.unit("U. hi") == "boom:U."
    assert program(("echo", echo, ["other"])).solve("U. hi") is None  # an unverified unit never answers


# -- in the loop --------------------------------------------------------------------------------------


def make_loop(home, reply, **config):
    backend = CachedBackend(ScriptedBackend(reply))
    spec = TaskSpec(name=config.pop("task", "t"), metric=config.pop("metric", "exact"))
    metric = score_numeric if spec.metric == "numeric" else score_exact
    return Loop(home, spec, backend, metric, LoopConfig(learners=("crystallise",), **config))


def feed(loop: Loop, cases: list[Case]) -> None:
    for c in cases:
        loop.record_labelled(c.input, c.output)


def test_strings_strategy_crystallises_a_task_in_the_loop(tmp_path):
    home = new_home(tmp_path)
    loop = make_loop(home, lambda request: "I think it is Bob")
    firsts = ["Linus", "Guido", "Barbara", "Donald", "Edsger", "Frances", "John", "Dennis", "Ken", "Niklaus"]
    lasts = ["Torvalds", "Rossum", "Liskov", "Knuth", "Dijkstra", "Allen"]
    feed(loop, first_names([f"{a} {b}" for a in firsts for b in lasts]))  # 60 cases, ~15 for the gate
    report = loop.learn()
    (cs,) = report.proposed
    assert report.committed, cs.verdict
    assert cs.evidence["strategies"] == ["strings"]
    program = json.loads(home.repo.read("tasks/t/program.json"))
    assert program["parts"]["strings"]["verification"]["heldout_correct"] >= 1
    ans, _ = loop.answer("Extract the first name from: Margaret Hamilton. Reply with the name only.")
    assert (ans.served_by, ans.output) == ("code", "Margaret")
    ans, _ = loop.answer("Summarise this paragraph.")
    assert ans.served_by == "llm" and ans.fallback_reason == "code abstained"


def test_hybrid_in_the_loop_serves_by_extraction_then_code_and_reverts(tmp_path):
    home = new_home(tmp_path)

    def llm(request):  # extraction requests carry a schema; plain answers are always wrong
        return fake_extraction(request.messages[-1].content) if request.schema else "0"

    loop = make_loop(home, llm, task="de", metric="numeric", strategies=("arith", "hybrid"),
                     coder_model="scripted:" + COMPUTE)
    cases = debt_equity(60, stated=False)  # no formula stated: arith cannot, hybrid can
    feed(loop, cases[:48])
    report = loop.learn()
    assert report.committed, [c.verdict for c in report.proposed]
    version = report.committed[0]
    assert View.of(home.repo).spec("de").grade == "G4"
    hybrid = json.loads(home.repo.read("tasks/de/hybrid.json"))
    (spec,) = hybrid["units"].values()
    assert spec["fields"] == ["total_liabilities", "shareholders_equity"]
    served = [loop.answer(c.input)[0] for c in cases[48:]]
    assert all(a.served_by == "hybrid" and a.llm_calls == 1 for a in served)
    assert all(score_numeric(a.output, c.output) for a, c in zip(served, cases[48:]))
    hybrid = next(s for s in loop.crystallise.strategies if s.name == "hybrid")
    asked = len(hybrid.coder.requests)
    feed(loop, debt_equity(90, stated=False)[60:])
    loop.learn()  # more evidence: the verified unit is kept, the coder is not asked again
    assert len(hybrid.coder.requests) == asked

    Committer(home).revert(version.number)  # revert: the previous behaviour is back
    assert home.repo.read("tasks/de/hybrid.json") is None and home.repo.read("tasks/de/code.py") is None
    loop._runtime = None
    ans, _ = loop.answer(cases[50].input)
    assert ans.served_by == "llm" and ans.output == "0"


def test_learning_again_keeps_verified_parts_and_skips_unchanged(tmp_path):
    home = new_home(tmp_path)
    loop = make_loop(home, lambda request: "0", task="ratio", metric="numeric")
    records = ratio_records(40)
    feed(loop, [Case(r["context"], r["target"]) for r in records[:24]])
    assert loop.learn().committed
    code = home.repo.read("tasks/ratio/code.py")
    assert loop.learn().proposed == []  # nothing new: no change set
    feed(loop, [Case(r["context"], r["target"]) for r in records[24:]])
    loop.learn()
    assert home.repo.read("tasks/ratio/code.py") == code  # the verified rule is kept, not re-rolled


def test_coder_crystallises_in_the_loop_and_an_exception_falls_back_to_the_llm(tmp_path):
    home = new_home(tmp_path)
    code = "```python\ndef solve(x):\n    return str(eval(x))\n```"
    loop = make_loop(home, lambda request: "False", strategies=("coder",), coder_model="scripted:" + code)
    feed(loop, boolean_cases(120))
    report = loop.learn()
    assert report.committed and report.proposed[0].evidence["strategies"] == ["coder"], report.proposed[0].verdict
    program = json.loads(home.repo.read("tasks/t/program.json"))
    assert program["parts"]["coder"]["notes"]["llm_calls"] == 1
    ans, _ = loop.answer("not not True and True is")
    assert (ans.served_by, ans.output) == ("code", "True")
    ans, _ = loop.answer("True and and is")  # eval raises SyntaxError in the sandbox: the LLM answers
    assert (ans.served_by, ans.output) == ("llm", "False")
