"""The seeds stage on real code: the standard library, plus a few planted files for each filter."""

from __future__ import annotations

import ast
import shutil
import textwrap

import pytest
import yaml

from pipeline.analysis.code_files import read_python_file, stdlib_dir
from pipeline.benchmarks.humaneval import load_humaneval
from pipeline.framework.store import StageStore
from tests.conftest import run_cli, write_recipe

PLANTED = {
    "planted_typeerror.py": '''
        def broken(count: int) -> str:
            """Return a label for count."""
            return count + 1

        def fine(count: int) -> str:
            """Return a label for count."""
            return "n=" + str(count)
    ''',
    "planted_os.py": '''
        import os

        def home_of(user):
            """Return the home folder of user."""
            return os.path.join("/home", user)
    ''',
    "planted_todo.py": '''
        def later(x):
            """TODO: write this properly."""
            return x
    ''',
    "planted_syntax.py": "def nope(:\n    pass\n",
}


@pytest.fixture()
def planted_corpus(tmp_path, stdlib_corpus):
    root = tmp_path / "corpus"
    shutil.copytree(stdlib_corpus, root)
    for name, text in PLANTED.items():
        (root / name).write_text(textwrap.dedent(text))
    problem = next(p for p in load_humaneval() if p["task_id"] == "HumanEval/12")
    (root / "planted_humaneval.py").write_text(problem["prompt"] + problem["canonical_solution"])
    return root


def _run(tmp_path, corpus, *extra, filters=None):
    seeds = {"source": {"kind": "local", "paths": [str(corpus)]}}
    if filters is not None:
        seeds["filters"] = filters
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "work", **seeds)
    result = run_cli("--config", str(recipe), "--stage", "seeds", *extra)
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load((tmp_path / "work/seeds/manifest.json").read_text())
    store = StageStore(tmp_path / "work", "seeds")
    rows, dropped = store.read_table().to_pylist(), store.read_dropped().to_pylist()
    return manifest, rows, dropped


def test_each_filter_drops_its_planted_function(tmp_path, planted_corpus):
    filters = ["returns_value", "no_todo", "no_banned_imports", "max_lines", "has_arguments", "not_benchmark",
               "typechecks"]
    manifest, rows, dropped = _run(tmp_path, planted_corpus, filters=filters)
    reason = {(d.get("path"), d.get("name")): d["drop_reason"] for d in dropped}
    assert reason[("planted_typeerror.py", "broken")] == "typechecks"
    assert reason[("planted_os.py", "home_of")] == "no_banned_imports"
    assert reason[("planted_todo.py", "later")] == "no_todo"
    assert reason[("planted_syntax.py", None)] == "unparseable_file"
    assert reason[("planted_humaneval.py", "longest")] == "not_benchmark"
    kept = {(r["path"], r["name"]) for r in rows}
    assert ("planted_typeerror.py", "fine") in kept
    assert manifest["dropped"]["typechecks"] >= 1
    assert sum(manifest["dropped"].values()) == len(dropped)


def _near_copy(source: str, func: ast.FunctionDef) -> str:
    """The function's own source lines, renamed, with a comment added: a near-duplicate."""
    lines = source.splitlines()[func.lineno - 1 : func.end_lineno]
    text = "\n".join(lines).replace(f"def {func.name}(", f"def {func.name}_copy(", 1)
    return "# a copied helper\n" + text + "\n"


def test_near_dedup_drops_near_copies_across_files(tmp_path, stdlib_corpus):
    root = tmp_path / "corpus"
    shutil.copytree(stdlib_corpus, root)
    source = (root / "textwrap.py").read_text()
    module = ast.parse(source)
    originals = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name in ("dedent", "indent")]
    (root / "zz_copies.py").write_text("\n\n".join(_near_copy(source, f) for f in originals))
    filters = ["returns_value", "max_lines", "has_arguments", "near_dedup"]
    manifest, rows, dropped = _run(tmp_path, root, filters=filters)
    names = {r["name"] for r in rows}
    near = [d for d in dropped if d["drop_reason"] == "near_dedup"]
    assert manifest["dropped"]["near_dedup"] == len(near) >= 2
    for original in ("dedent", "indent"):
        assert (original in names) != (original + "_copy" in names), "exactly one of each pair is kept"
    # unrelated functions of the corpus survive: only a few clusters exist in real, distinct modules
    assert len(near) < 0.05 * manifest["rows_out"]
    assert manifest["stats"]["functions_found"] == manifest["rows_out"] + sum(
        v for k, v in manifest["dropped"].items() if k != "unparseable_file")


def test_switching_a_filter_off_keeps_what_it_dropped(tmp_path, planted_corpus):
    filters = ["returns_value", "no_banned_imports", "max_lines", "has_arguments"]
    _, rows, dropped = _run(tmp_path, planted_corpus, filters=filters)
    kept = {(r["path"], r["name"]) for r in rows}
    assert ("planted_todo.py", "later") in kept
    assert ("planted_humaneval.py", "longest") in kept
    assert "no_todo" not in {d["drop_reason"] for d in dropped}


def test_seeds_are_top_level_documented_functions_of_the_corpus(tmp_path, stdlib_corpus):
    manifest, rows, _ = _run(tmp_path, stdlib_corpus)
    assert len({r["id"] for r in rows}) == len(rows) == manifest["rows_out"] > 50
    files: dict[str, list[str]] = {}
    for row in rows:
        if row["path"] not in files:
            files[row["path"]] = read_python_file(stdlib_corpus / row["path"]).splitlines()
        lines = files[row["path"]]
        start = row["lineno"] - 1
        assert "\n".join(lines[start : start + row["num_lines"]]) == row["code"]
        tree = ast.parse(row["code"])
        [node] = tree.body
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == row["name"]
        assert ast.get_docstring(node) == row["docstring"]
        module = ast.parse("\n".join(lines))
        top_level = {n.name for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert row["name"] in top_level
        assert row["num_args"] >= 1 and row["num_lines"] <= 150


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_whole_standard_library(tmp_path):
    """The acceptance run: the machine's own standard library, type checking on."""
    seeds = {"source": {"kind": "stdlib"}, "batch_size": 64}
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "work", **seeds)
    data = yaml.safe_load(recipe.read_text())
    del data["stages"]["seeds"]["filters"]  # the default chain, typechecks included
    recipe.write_text(yaml.safe_dump(data))
    result = run_cli("--config", str(recipe), "--stage", "seeds", timeout=3000)
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load((tmp_path / "work/seeds/manifest.json").read_text())
    stats, dropped = manifest["stats"], manifest["dropped"]
    assert manifest["rows_in"] == stats["files_parsed"] + dropped.get("unparseable_file", 0)
    assert stats["functions_found"] == manifest["rows_out"] + sum(
        v for k, v in dropped.items() if k != "unparseable_file"
    )
    # the published filters (substring no_todo, self-contained functions, each type-checked alone) keep
    # about 400 of the standard library's functions
    assert manifest["rows_out"] > 300 and dropped["typechecks"] > 0 and dropped["self_contained"] > 0
    assert str(stdlib_dir()) in manifest["input"]["description"]
