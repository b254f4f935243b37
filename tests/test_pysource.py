"""Tests for pipeline.analysis.pysource: seed-function extraction and its precomputed facts."""

from __future__ import annotations

import ast
import sysconfig
import textwrap
from pathlib import Path

import pytest

from pipeline.analysis.pysource import (
    DEFAULT_BANNED_MODULES,
    FunctionInfo,
    UnparsableSource,
    extract_functions,
    has_todo_marker,
    uses_banned_module,
)


def _src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _by_name(source: str) -> dict[str, FunctionInfo]:
    return {f.name: f for f in extract_functions(_src(source))}


def test_only_top_level_functions_with_docstrings():
    funcs = _by_name(
        '''
        def outer(a):
            """Outer."""
            def inner(b):
                """Inner, nested: skipped."""
                return b
            return inner(a)

        def no_doc(a):
            return a

        def comment_first(a):
            # a comment is not a docstring
            "but this string is the first statement"
            return a

        def fstring_doc(a):
            f"""not a docstring {a}"""
            return a

        class K:
            """Class."""
            def method(self):
                """Method: skipped."""
                return 1

        if True:
            def guarded(a):
                """Under an if: not top level."""
                return a
        '''
    )
    assert sorted(funcs) == ["comment_first", "outer"]
    assert funcs["outer"].docstring == "Outer."
    assert funcs["comment_first"].docstring == "but this string is the first statement"


def test_code_lines_and_decorators():
    source = _src(
        '''
        import functools

        @functools.lru_cache(maxsize=None)
        @staticmethod
        def deco(
            x,
            y,
        ):
            """Decorated."""
            return x + y
        # trailing comment, not part of the function

        async def coro(a, /, b, *args, c, d=1, **kw):
            """Async."""
            return a
        '''
    )
    deco, coro = extract_functions(source)
    lines = source.split("\n")
    assert deco.lineno == 3 and deco.end_lineno == 10 and deco.num_lines == 8
    assert deco.code.startswith("@functools.lru_cache")
    assert deco.code == "\n".join(lines[2:10])
    assert not deco.is_async and deco.num_args == 2
    assert coro.is_async and coro.code.startswith("async def coro")
    assert coro.num_args == 6  # a, b, c, d, *args, **kw
    assert coro.returns_value


def test_num_args_counts_every_parameter_kind():
    (f,) = extract_functions('def f(a, /, b, *args, c, d=1, **kw):\n    """d"""\n    return a\n')
    # a (pos-only), b, c, d (kw-only), *args, **kw
    assert f.num_args == 6
    (g,) = extract_functions('def g():\n    """d"""\n    return 1\n')
    assert g.num_args == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("return 1", True),
        ("return x or None", True),
        ("return", False),
        ("return None", False),
        ("pass", False),
        ("def inner():\n        return 1\n    inner()", False),
        ("f = lambda: 1\n    f()", False),
        ("class C:\n        def m(self):\n            return 1", False),
        ("if x:\n        return [1]\n    return None", True),
        ("try:\n        return 2\n    finally:\n        pass", True),
        ("yield 1", False),
    ],
)
def test_returns_value(body, expected):
    source = f'def f(x):\n    """doc"""\n    {body}\n'
    (f,) = extract_functions(source)
    assert f.returns_value is expected


def test_generator_flag_ignores_nested_yield():
    funcs = _by_name(
        '''
        def gen():
            """doc"""
            yield 1

        def not_gen():
            """doc"""
            def g():
                yield 1
            return g
        '''
    )
    assert funcs["gen"].is_generator
    assert not funcs["not_gen"].is_generator


def test_modules_via_file_imports_and_aliases():
    funcs = _by_name(
        '''
        import os
        import numpy as np
        import os.path as osp
        from os import path
        from collections.abc import Mapping
        from . import sibling
        try:
            import ujson as json
        except ImportError:
            import json

        def uses_np(a):
            """doc"""
            return np.zeros(a)

        def uses_path(a):
            """doc"""
            return path.join(a, "x")

        def uses_osp(a):
            """doc"""
            return osp.basename(a)

        def uses_os_attr(a):
            """doc"""
            return os.path.join(a)

        def clean(a):
            """Mentions os in a string only: 'os.path'."""
            return a + 1

        def local_import(a):
            """doc"""
            import subprocess
            from sys import argv
            return a

        def nested_use(a):
            """doc"""
            def helper():
                return json.dumps(a)
            return helper

        def default_arg(a=os.sep):
            """doc"""
            return a

        def relative(a):
            """doc"""
            return sibling.f(a)

        def annotation(a: Mapping):
            """doc"""
            return a
        '''
    )
    assert funcs["uses_np"].modules == {"numpy"}
    assert funcs["uses_path"].modules == {"os"}
    assert funcs["uses_osp"].modules == {"os"}
    assert funcs["uses_os_attr"].modules == {"os"}
    assert funcs["clean"].modules == frozenset()
    assert funcs["local_import"].modules == {"subprocess", "sys"}
    assert funcs["nested_use"].modules == {"json", "ujson"}  # both bindings of `json`
    assert funcs["default_arg"].modules == {"os"}
    assert funcs["relative"].modules == frozenset()
    assert funcs["annotation"].modules == {"collections"}

    assert uses_banned_module(funcs["uses_path"])
    assert uses_banned_module(funcs["local_import"])
    assert not uses_banned_module(funcs["clean"])
    assert not uses_banned_module(funcs["uses_np"])
    assert uses_banned_module(funcs["uses_np"], {"numpy"})
    assert "matplotlib" in DEFAULT_BANNED_MODULES


def test_star_import_counts_for_every_function():
    (f,) = extract_functions('from os.path import *\n\ndef f(a):\n    """doc"""\n    return a\n')
    assert f.modules == {"os"}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("# TODO: later", True),
        ("# todo", True),
        ("x = 1  # FIXME", True),
        ('"""Works around a bug in foo."""', True),
        ("# known Bugs: none", True),
        ("log.debug('x')", False),
        ("debugger = None", False),
        ("bugfix = 1", False),
        ("todos = []", False),
        ("bug_count = 0", False),
        ("return 1", False),
    ],
)
def test_has_todo_marker(code, expected):
    assert has_todo_marker(code) is expected


def test_has_todo_property_uses_code():
    (f,) = extract_functions('def f(a):\n    """doc"""\n    # TODO handle None\n    return a\n')
    assert f.has_todo


@pytest.mark.parametrize(
    "source",
    [
        "def f(:\n    pass\n",
        "def f():\n\treturn 1\n        return 2\n",
        "x = 'unterminated\n",
        "a = 1\x00\n",
    ],
)
def test_unparsable_source(source):
    with pytest.raises(UnparsableSource):
        extract_functions(source)
    assert issubclass(UnparsableSource, ValueError)


def test_crlf_bom_and_formfeed():
    source = '\ufeffimport os\r\n\x0c\r\ndef f(a):\r\n    """Doc\x0c with formfeed."""\r\n    return os.sep\r\n'
    (f,) = extract_functions(source)
    assert f.lineno == 3 and f.end_lineno == 5
    assert f.code == 'def f(a):\n    """Doc\x0c with formfeed."""\n    return os.sep'
    assert f.modules == {"os"}


def test_empty_and_no_functions():
    assert extract_functions("") == []
    assert extract_functions("x = 1\nclass A:\n    pass\n") == []


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [
        p
        for p in sorted(root.rglob("*.py"))
        if "site-packages" not in p.parts and "dist-packages" not in p.parts
    ]


@pytest.mark.slow
def test_whole_stdlib_sanity():
    n_files = n_funcs = n_bad = 0
    for path in _stdlib_files():
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        n_files += 1
        try:
            funcs = extract_functions(source)
        except UnparsableSource:
            n_bad += 1  # lib2to3 / test data with deliberate syntax errors
            continue
        for f in funcs:
            n_funcs += 1
            assert f.code.lstrip().startswith(("def ", "async def ", "@")), (path, f.name)
            assert f.num_lines == f.end_lineno - f.lineno + 1 == f.code.count("\n") + 1
            tree = ast.parse(f.code)
            assert len(tree.body) == 1
            node = tree.body[0]
            assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            assert node.name == f.name
            assert ast.get_docstring(node) == f.docstring, (path, f.name)
    assert n_files > 1000
    assert n_funcs > 1500  # 2309 on CPython 3.11
    assert n_bad < 0.01 * n_files
