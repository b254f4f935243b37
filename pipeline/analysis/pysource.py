"""Static analysis of Python source files for seed extraction (stdlib only).

`extract_functions` parses a file once and returns every top-level function
whose body opens with a docstring, with the facts the seed filters need
precomputed on a frozen `FunctionInfo`: line range, argument count, whether
it returns a value, which modules it uses, whether it holds a TODO marker.
The seeds stage then filters with plain attribute checks; nothing re-parses.

Line numbers follow `ast` (1-based). Source text is sliced from the file's
lines, so `FunctionInfo.code` is the function exactly as written, except that
line endings are normalised to ``\\n``.
"""

from __future__ import annotations

import ast
import re
import symtable
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BANNED_MODULES",
    "FunctionInfo",
    "UnparsableSource",
    "extract_functions",
    "has_todo_marker",
    "uses_banned_module",
]

#: Modules whose use disqualifies a seed in the paper's recipe (DESIGN.md).
DEFAULT_BANNED_MODULES: frozenset[str] = frozenset(
    {"os", "sys", "subprocess", "argparse", "setuptools", "distutils", "matplotlib", "seaborn"}
)

_TODO_RE = re.compile(r"\b(?:todo|fixme|bugs?)\b", re.IGNORECASE)

# Nodes that open a new scope: a `return` inside them is not the outer
# function's return.
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


class UnparsableSource(ValueError):
    """The source does not parse as Python (syntax error, null bytes, too deep).

    The original exception is chained as ``__cause__``.
    """


@dataclass(frozen=True)
class FunctionInfo:
    """One top-level function with a docstring, plus precomputed facts.

    Fields:
        name: the function's name.
        code: its exact source, decorators included (top-level, so no dedent).
        docstring: `ast.get_docstring` of the function (cleaned).
        lineno: first line, counting decorators (1-based).
        end_lineno: last line of the function (1-based, inclusive).
        num_lines: ``end_lineno - lineno + 1``.
        num_args: positional-only + regular + keyword-only parameters, plus
            one each for ``*args`` and ``**kwargs`` when present.
        is_async: defined with ``async def``.
        returns_value: its own body (not nested defs, lambdas or classes) has a
            ``return <expr>`` whose value is not the literal ``None``.
        is_generator: its own body contains ``yield`` / ``yield from``.
        modules: top-level names of the modules the function uses: modules it
            imports anywhere inside itself, plus file-level imports whose bound
            name it references (``import numpy as np`` + ``np.zeros`` gives
            ``numpy``; ``from os import path`` + ``path`` gives ``os``). A
            file-level ``from M import *`` counts as used by every function.
            Relative imports are ignored.
        file_names: names of the file's own module-level definitions (functions,
            classes, variables; not imports) that the function uses, in its body,
            decorators, defaults or annotations (its own name excluded). A
            function with none stands alone given its file's imports.
        imports: the file's module-level import statements, as written (also
            ``try``/``if`` blocks made only of imports), so the function can be
            checked as a unit of its own: ``imports + code``.
    """

    name: str
    code: str
    docstring: str
    lineno: int
    end_lineno: int
    num_lines: int
    num_args: int
    is_async: bool
    returns_value: bool
    is_generator: bool
    modules: frozenset[str]
    file_names: frozenset[str] = frozenset()
    imports: str = ""

    @property
    def standalone_source(self) -> str:
        """The function as a file of its own: the file's imports, then the function."""
        return f"{self.imports}\n\n\n{self.code}\n" if self.imports else f"{self.code}\n"

    @property
    def has_todo(self) -> bool:
        """True when the code holds a TODO / FIXME / bug marker (see `has_todo_marker`)."""
        return has_todo_marker(self.code)


TODO_MARKERS = ("todo", "fixme", "bug")
"""The markers of unfinished or broken code the published seed filter looks for."""


def has_todo_marker(code: str, mode: str = "word") -> bool:
    """Return True if `code` holds a TODO / FIXME / bug marker.

    ``mode="word"``: case-insensitive whole-word match of TODO, FIXME, bug or
    bugs: ``# todo:``, ``FIXME`` and ``a bug`` match; ``debug``, ``debugger``,
    ``bugfix`` and ``todos`` do not.
    ``mode="substring"`` (the published test): any of ``todo``, ``fixme``,
    ``bug`` anywhere in the lower-cased code, so ``debug`` and ``todos`` match too.
    """
    if mode == "substring":
        lowered = code.lower()
        return any(marker in lowered for marker in TODO_MARKERS)
    if mode != "word":
        raise ValueError(f"unknown todo match mode {mode!r} (expected word or substring)")
    return _TODO_RE.search(code) is not None


def uses_banned_module(info: FunctionInfo, banned: Iterable[str] = DEFAULT_BANNED_MODULES) -> bool:
    """Return True if the function uses any module in `banned` (top-level names)."""
    banned_set = banned if isinstance(banned, (set, frozenset)) else frozenset(banned)
    return not info.modules.isdisjoint(banned_set)


def _top_module(dotted: str) -> str:
    return dotted.partition(".")[0]


def _file_import_bindings(tree: ast.Module) -> tuple[dict[str, set[str]], frozenset[str]]:
    """Names bound by file-level imports -> top-level modules; plus star-imported modules.

    A name may be bound to several modules (``try: import ujson as json``
    ``except ImportError: import json``); a reference uses all of them.

    File level means module statements and compound statements nested in them
    (``if``, ``try``, ``with``, loops), but not function or class bodies.
    """
    bindings: dict[str, set[str]] = {}
    star: set[str] = set()
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                top = _top_module(alias.name)
                bindings.setdefault(alias.asname or top, set()).add(top)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level or not stmt.module:
                continue
            top = _top_module(stmt.module)
            for alias in stmt.names:
                if alias.name == "*":
                    star.add(top)
                else:
                    bindings.setdefault(alias.asname or alias.name, set()).add(top)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        else:
            # Compound statements: descend into their statement lists only.
            for field in ("body", "orelse", "finalbody"):
                block = getattr(stmt, field, None)
                if block:
                    stack.extend(block)
            handlers = getattr(stmt, "handlers", None)
            if handlers:
                for handler in handlers:
                    stack.extend(handler.body)
            cases = getattr(stmt, "cases", None)
            if cases:
                for case in cases:
                    stack.extend(case.body)
    return bindings, frozenset(star)


def _analyse_function(
    node: ast.FunctionDef | ast.AsyncFunctionDef,
    bindings: dict[str, set[str]],
    star_modules: frozenset[str],
) -> tuple[bool, bool, frozenset[str]]:
    """One walk over the function: (returns_value, is_generator, modules)."""
    returns_value = False
    is_generator = False
    modules: set[str] = set(star_modules)
    # (node, inside a nested scope?) -- decorators, defaults and annotations
    # are evaluated outside the body, so they never count as the body's return.
    stack: list[tuple[ast.AST, bool]] = [(n, False) for n in node.body]
    stack.extend((n, True) for n in node.decorator_list)
    stack.append((node.args, True))
    if node.returns is not None:
        stack.append((node.returns, True))
    iter_children = ast.iter_child_nodes
    while stack:
        cur, nested = stack.pop()
        cls = type(cur)
        if cls is ast.Name:
            mods = bindings.get(cur.id)  # type: ignore[attr-defined]
            if mods is not None:
                modules.update(mods)
            continue
        if cls is ast.Return:
            value = cur.value  # type: ignore[attr-defined]
            if not nested and value is not None and not (
                type(value) is ast.Constant and value.value is None
            ):
                returns_value = True
        elif cls is ast.Yield or cls is ast.YieldFrom:
            if not nested:
                is_generator = True
        elif cls is ast.Import:
            for alias in cur.names:  # type: ignore[attr-defined]
                modules.add(_top_module(alias.name))
            continue
        elif cls is ast.ImportFrom:
            if not cur.level and cur.module:  # type: ignore[attr-defined]
                modules.add(_top_module(cur.module))  # type: ignore[attr-defined]
            continue
        child_nested = nested or isinstance(cur, _SCOPES)
        for child in iter_children(cur):
            stack.append((child, child_nested))
    return returns_value, is_generator, frozenset(modules)


def _only_imports(stmt: ast.stmt, nested: bool = False) -> bool:
    """Whether ``stmt`` is an absolute import, ``pass``, or a ``try``/``if`` block made only of those
    (where a fallback such as ``ujson = None`` may stand in for an import)."""
    if isinstance(stmt, ast.Import) or (isinstance(stmt, ast.ImportFrom) and not stmt.level):
        return True
    if isinstance(stmt, ast.Pass) or (nested and isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)):
        return True
    if isinstance(stmt, (ast.Try, ast.If)):
        blocks = [stmt.body, stmt.orelse, getattr(stmt, "finalbody", [])]
        blocks += [h.body for h in getattr(stmt, "handlers", [])]
        return all(_only_imports(s, nested=True) for block in blocks for s in block)
    return False


def _file_imports(tree: ast.Module, lines: list[str]) -> str:
    """The source of the module's import statements (and import-only ``try``/``if`` blocks), in order."""
    kept = [
        "\n".join(lines[stmt.lineno - 1 : stmt.end_lineno])
        for stmt in tree.body
        if not isinstance(stmt, ast.Pass) and _only_imports(stmt)
    ]
    return "\n".join(kept)


def _bound_names(target: ast.AST) -> Iterable[str]:
    """Names an assignment target binds (``a``, ``a, (b, *c)``)."""
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id


def _file_definitions(tree: ast.Module) -> frozenset[str]:
    """Names the module binds itself at file level: defs, classes, assignments, loop/with targets (not imports)."""
    names: set[str] = set()
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
            continue
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                names.update(_bound_names(target))
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            names.update(_bound_names(stmt.target))
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            names.update(_bound_names(stmt.target))
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    names.update(_bound_names(item.optional_vars))
        for field in ("body", "orelse", "finalbody"):
            stack.extend(getattr(stmt, field, None) or [])
        for handler in getattr(stmt, "handlers", None) or []:
            stack.extend(handler.body)
        for case in getattr(stmt, "cases", None) or []:
            stack.extend(case.body)
    return frozenset(names)


def _global_references(code: str, name: str) -> frozenset[str]:
    """Names ``code`` (one function) looks up in its module's namespace, its own name left out."""
    top = symtable.symtable(code, "<function>", "exec")
    found: set[str] = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        found.update(s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced())
    found.discard(name)
    return frozenset(found)


def _normalise_newlines(source: str) -> str:
    if "\r" in source:
        source = source.replace("\r\n", "\n").replace("\r", "\n")
    return source


def extract_functions(source: str) -> list[FunctionInfo]:
    """Return the top-level functions of `source` whose body opens with a docstring.

    Only direct children of the module count: methods, nested functions and
    functions defined under ``if``/``try`` blocks are skipped, as are
    functions without a docstring (a ``str`` constant as first statement).
    The file is parsed once. A leading BOM is ignored.

    Raises:
        UnparsableSource: the source does not parse (a `ValueError`).
    """
    source = _normalise_newlines(source)
    if source.startswith("\ufeff"):
        source = source[1:]
    try:
        # Invalid escapes etc. warn at parse time; over millions of files that
        # is noise, not signal.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise UnparsableSource(f"source does not parse: {exc}") from exc

    candidates = []
    for node in tree.body:
        if type(node) not in _DEFS:
            continue
        body = node.body  # type: ignore[attr-defined]
        first = body[0]
        if (
            type(first) is ast.Expr
            and type(first.value) is ast.Constant
            and type(first.value.value) is str
        ):
            candidates.append(node)
    if not candidates:
        return []

    lines = source.split("\n")
    bindings, star_modules = _file_import_bindings(tree)
    imports = _file_imports(tree, lines)
    definitions = _file_definitions(tree) - bindings.keys()
    out: list[FunctionInfo] = []
    for node in candidates:
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        # A decorator expression may start on a line after its "@" (via "\").
        while start > 1 and not lines[start - 1].lstrip().startswith(("@", "def", "async")):
            start -= 1
        end = node.end_lineno or node.lineno
        args = node.args
        num_args = (
            len(args.posonlyargs)
            + len(args.args)
            + len(args.kwonlyargs)
            + (args.vararg is not None)
            + (args.kwarg is not None)
        )
        returns_value, is_generator, modules = _analyse_function(node, bindings, star_modules)
        code = "\n".join(lines[start - 1 : end])
        out.append(
            FunctionInfo(
                name=node.name,
                code=code,
                docstring=ast.get_docstring(node, clean=True) or "",
                lineno=start,
                end_lineno=end,
                num_lines=end - start + 1,
                num_args=num_args,
                is_async=isinstance(node, ast.AsyncFunctionDef),
                returns_value=returns_value,
                is_generator=is_generator,
                modules=modules,
                file_names=_global_references(code, node.name) & definitions,
                imports=imports,
            )
        )
    return out
