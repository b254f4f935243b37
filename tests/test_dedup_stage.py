"""The dedup stage on planted samples: each step drops what it should, and the choice is reproducible."""

from __future__ import annotations

import random

from pipeline.benchmarks.humaneval import load_humaneval
from tests.conftest import run_stage_on_rows

CODE = "```python\ndef {name}(values):\n    total = 0\n    for v in values:\n        total += v * {k}\n    return total\n```"
LONG = ("Write a function {name}(values) that multiplies every number of the list values by {k} and returns the "
        "sum of the products; an empty list gives zero, and the list is not modified.")


def sample(sid, iid, name="scaled_sum", k=3, passed=True, **over):
    row = {"id": sid, "seed_id": "s-" + iid, "instruction_id": iid, "instruction": LONG.format(name=name, k=k),
           "response": "Loop and add.\n\n" + CODE.format(name=name, k=k), "tests": f"assert {name}([1, 2]) == {3 * k}",
           "passed": passed}
    row.update(over)
    return row


def planted_rows() -> list[dict]:
    humaneval = load_humaneval()[0]
    return [
        sample("a1", "i1"), sample("a2", "i1"),                                   # two answers to one instruction
        sample("c", "i3", name="c_fn", k=5, passed=False),                       # failed in the sandbox
        sample("d", "i4", name="d_fn", k=6, response="Just loop and add them up."),  # no code
        sample("e", "i5", name="e_fn", k=7, tests="print(e_fn([1]))"),           # no assertion
        sample("f", "i6", name="f_fn", k=8, response="```python\ndef f_fn(values):\n    raise NotImplementedError\n```"),
        sample("g", "i7", name="g_fn", k=9, instruction="Complete this:\n" + humaneval["prompt"]),
        sample("h1", "i8", name="h_fn", k=11, instruction="Sum list items times eleven, please, with care."),
        sample("h2", "i9", name="h_fn", k=11, instruction="Multiply by eleven then sum: a different wording here."),
        sample("n1", "i10", name="near_fn", k=13),
        sample("n2", "i11", name="near_fn", k=13, instruction=LONG.format(name="near_fn", k=13) + " Be careful.",
               response="Loop and add them.\n\n" + CODE.format(name="near_fn", k=13)),
        sample("u", "i12", name="other_fn", k=17, instruction="Reverse the words of a sentence and keep the spaces.",
               response="```python\ndef other_fn(s):\n    return ' '.join(reversed(s.split(' ')))\n```",
               tests="assert other_fn('a b') == 'b a'"),
    ]


def test_placeholders_and_stubs_but_not_a_pass_in_an_except():
    from pipeline.dedup.filters import format_problem

    fenced = lambda code: f"```python\n{code}\n```"  # noqa: E731
    assert format_problem(fenced("def f(x):\n    pass"), "assert f(1) is None") == "format_placeholder"
    assert format_problem(fenced('def f(x):\n    """Doc."""\n    ...'), "assert 1") == "format_placeholder"
    assert format_problem(fenced("def f(x):\n    # your code here\n    return x"), "assert f(1)") == "format_placeholder"
    ok = "def f(x):\n    try:\n        return int(x)\n    except ValueError:\n        pass\n    return 0"
    assert format_problem(fenced(ok), "assert f('a') == 0") is None
    assert format_problem(fenced(ok), "print(f('a'))") == "format_no_asserts"
    assert format_problem("no code at all", "assert True") == "format_no_code"


def run_dedup(tmp_path, rows, seed=42):
    return run_stage_on_rows(tmp_path, "dedup", rows, seed)


def test_each_step_drops_what_it_should(tmp_path):
    manifest, kept, dropped = run_dedup(tmp_path, planted_rows())
    reason = {d["id"]: d["drop_reason"] for d in dropped}
    assert reason["c"] == "not_passed"
    assert reason["d"] == "format_no_code" and reason["e"] == "format_no_asserts"
    assert reason["f"] == "format_placeholder" and reason["g"] == "contaminated"
    assert [reason.get("a1"), reason.get("a2")].count("extra_response") == 1
    assert [reason.get("h1"), reason.get("h2")].count("exact_duplicate") == 1
    assert [reason.get("n1"), reason.get("n2")].count("near_duplicate_instruction") == 1
    assert "u" not in reason
    assert manifest["rows_in"] == 12 and manifest["rows_out"] == len(kept) == 4
    assert sum(manifest["dropped"].values()) == len(dropped) == 8
    row = next(r for r in kept if r["id"] == "u")
    assert row["messages"][0] == {"role": "user", "content": row["instruction"]}
    assert row["messages"][1]["role"] == "assistant"
    assert row["messages"][1]["content"].startswith(row["response"]) and "### Tests" in row["messages"][1]["content"]
    assert row["seed_id"] == "s-i12"


def test_choice_does_not_depend_on_input_order(tmp_path):
    rows = planted_rows()
    _, first, _ = run_dedup(tmp_path / "a", rows)
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    _, second, _ = run_dedup(tmp_path / "b", shuffled)
    assert sorted(r["id"] for r in first) == sorted(r["id"] for r in second)


def test_a_dropped_row_does_not_make_a_later_row_a_duplicate(tmp_path):
    """Exact dedup compares with the rows it kept: ``second`` repeats ``first``'s instruction and is dropped; ``third``
    repeats only ``second``'s response, which was never kept, so ``third`` stays."""
    import hashlib

    rank = lambda rid: hashlib.sha256(f"42:{rid}".encode()).digest()  # noqa: E731 - the stage's seeded order
    ids = sorted((f"x{k}" for k in range(3)), key=rank)
    reverse = "```python\ndef flip(s):\n    return s[::-1]\n```"
    first = sample(ids[0], "j1", name="scaled_sum", k=3)
    second = sample(ids[1], "j2", instruction=first["instruction"], response="Slice backwards.\n\n" + reverse,
                    tests="assert flip('ab') == 'ba'")
    third = sample(ids[2], "j3", instruction="Return the string s reversed, character by character, as a new string.",
                   response=second["response"], tests="assert flip('abc') == 'cba'")
    manifest, kept, dropped = run_dedup(tmp_path, [first, second, third])
    assert {d["id"]: d["drop_reason"] for d in dropped} == {ids[1]: "exact_duplicate"}
    assert sorted(r["id"] for r in kept) == sorted([ids[0], ids[2]])
