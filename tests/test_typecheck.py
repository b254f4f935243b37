"""Tests for pipeline.analysis.typecheck: batched basedpyright runs (needs the basedpyright CLI)."""

from __future__ import annotations

import textwrap

import pytest

from pipeline.analysis.pysource import extract_functions
from pipeline.analysis.typecheck import (
    Diagnostic,
    TypecheckError,
    find_basedpyright,
    function_has_type_errors,
    typecheck_sources,
)
from tests.conftest import require_installed

try:
    find_basedpyright()
except TypecheckError as exc:  # pragma: no cover - environment without the checker
    require_installed("basedpyright", str(exc))


CLEAN = textwrap.dedent(
    '''
    import re
    from typing import Any


    def first_word(text: str) -> str:
        """Return the first word of `text`."""
        match = re.match(r"\\w+", text)
        return match.group(0) if match else ""


    def loose(x: Any, y):
        """Unannotated and Any-typed code is fine at pyright's standard level."""
        return x.anything + y


    def unused_param(a: int, b: int) -> int:
        """basedpyright-only rules (unused parameter, reportAny) must not count."""
        return a
    '''
)

MIXED = textwrap.dedent(
    '''
    from typing import Optional


    def ok(a: int) -> int:
        """Fine."""
        return a * 2


    def broken(s: Optional[str]) -> int:
        """Optional member access: an error at pyright's standard level."""
        return len(s.strip())


    def also_ok(xs: list[int]) -> int:
        """Fine."""
        return sum(xs)


    def unbound(flag: bool) -> int:
        """Possibly unbound: an error in standard mode."""
        if flag:
            y = 1
        return y
    '''
)


@pytest.fixture(scope="module")
def batch_result() -> dict[str, list[Diagnostic]]:
    """One basedpyright run over several files, shared by the tests below."""
    return typecheck_sources(
        {
            "f000000.py": CLEAN,
            "f000001.py": MIXED,
            "f000002.py": "def f(:\n    pass\n",
            "sub/f000003.py": "x: int = 'a string'\n",
        }
    )


def test_clean_file_has_no_errors(batch_result):
    assert batch_result["f000000.py"] == []


def test_right_function_flagged(batch_result):
    diags = batch_result["f000001.py"]
    assert diags, "expected errors in MIXED"
    assert all(d.rule in {"reportOptionalMemberAccess", "reportPossiblyUnboundVariable"} for d in diags)
    flagged = {
        f.name for f in extract_functions(MIXED) if function_has_type_errors(diags, f.lineno, f.end_lineno)
    }
    assert flagged == {"broken", "unbound"}


def test_batch_covers_every_key(batch_result):
    assert set(batch_result) == {"f000000.py", "f000001.py", "f000002.py", "sub/f000003.py"}
    assert batch_result["f000002.py"]  # syntax errors have no rule but count
    assert all(d.rule == "" for d in batch_result["f000002.py"])
    (assign,) = batch_result["sub/f000003.py"]
    assert assign.rule == "reportAssignmentType" and assign.line == 1


def test_function_has_type_errors_range():
    diags = [Diagnostic(line=10, end_line=12, rule="r", message="m")]
    assert function_has_type_errors(diags, 12, 20)
    assert function_has_type_errors(diags, 1, 10)
    assert function_has_type_errors(diags, 11, 11)
    assert not function_has_type_errors(diags, 13, 20)
    assert not function_has_type_errors(diags, 1, 9)
    assert not function_has_type_errors([], 1, 100)


def test_empty_batch_and_bad_keys():
    assert typecheck_sources({}) == {}
    for bad in ("/abs.py", "../up.py", "noext", "a/../../b.py"):
        with pytest.raises(ValueError):
            typecheck_sources({bad: "x = 1\n"})
