"""The layers of the code, checked from the real import graph (every import, lazy ones included).

* ``pipeline.framework`` imports only itself: it knows no backend, no method package and no stage;
* ``pipeline.llm`` (the generation backends) imports only the framework and itself;
* the method packages (``pipeline.analysis``, ``pipeline.generation``, ...) import no stage and none of the
  application's entry points (``pipeline.cli``, ``pipeline.reference_docs``, ``pipeline.gpu_check``);
* a stage module imports no other stage (it reads its upstream through the store);
* ``sandbox`` stands alone: nothing of the pipeline or the stages.

docs/architecture.md draws the same rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

APPLICATION = {"pipeline.cli", "pipeline.reference_docs", "pipeline.gpu_check"}
FRAMEWORK = "pipeline.framework"
BACKENDS = "pipeline.llm"


def module_name(path: Path) -> str:
    """The dotted module name of a file under the repository."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(name: str) -> bool:
    """Whether ``name`` is a package (a folder with ``__init__.py``) of the repository."""
    return (REPO / Path(*name.split(".")) / "__init__.py").is_file()


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of the repository."""
    return is_package(name) or (REPO / Path(*name.split("."))).with_suffix(".py").is_file()


def imports_of(name: str, source: str) -> set[str]:
    """The first-party modules ``source`` (the text of module ``name``) imports, wherever the import stands."""
    package = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}"))
    return {m for m in found if m.split(".")[0] in ("pipeline", "stages", "sandbox") and is_module(m)}


def import_graph() -> dict[str, set[str]]:
    """Every module of ``pipeline``, ``stages`` and ``sandbox`` with the first-party modules it imports."""
    graph = {}
    for top in ("pipeline", "stages", "sandbox"):
        for path in sorted((REPO / top).rglob("*.py")):
            name = module_name(path)
            graph[name] = imports_of(name, path.read_text())
    return graph


def within(name: str, package: str) -> bool:
    """Whether module ``name`` is ``package`` or inside it."""
    return name == package or name.startswith(package + ".")


def violation(module: str, imported: str) -> str | None:
    """Why ``module`` may not import ``imported``, or None when the layers allow it.

    The root package ``pipeline`` holds no code (only its docstring), so importing it (for its path) is neutral.
    """
    if imported == "pipeline":
        return None
    if within(module, FRAMEWORK):
        if not within(imported, FRAMEWORK):
            return "the framework imports only the framework"
    elif within(module, BACKENDS):
        if not (within(imported, FRAMEWORK) or within(imported, BACKENDS)):
            return "the backends import only the framework and themselves"
    elif within(module, "sandbox"):
        if not within(imported, "sandbox"):
            return "the sandbox stands alone"
    elif within(module, "stages"):
        if module != "stages" and within(imported, "stages") and imported != module:
            return "a stage imports no other stage"
        if imported in APPLICATION:
            return "a stage imports no entry point"
    elif module not in APPLICATION:  # a method package
        if within(imported, "stages"):
            return "a method package imports no stage"
        if imported in APPLICATION:
            return "a method package imports no entry point"
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    """``module -> imported: rule`` for every import the layers forbid."""
    return sorted(f"{module} -> {imported}: {why}" for module, targets in graph.items() for imported in targets
                  if (why := violation(module, imported)))


def test_the_import_graph_keeps_the_layers():
    graph = import_graph()
    assert len(graph) > 100 and graph["pipeline.framework.runner"]  # the graph is real, not empty
    assert violations(graph) == []


def test_the_root_package_holds_no_code():
    tree = ast.parse((REPO / "pipeline" / "__init__.py").read_text())
    assert all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in tree.body)


def test_the_framework_depends_on_nothing_outside_itself():
    """Spelled out for the framework: its modules' imports, all of them, stay inside it."""
    graph = import_graph()
    outside = {imported for module, targets in graph.items() if within(module, FRAMEWORK) for imported in targets
               if not within(imported, FRAMEWORK)}
    assert outside == set()


@pytest.mark.parametrize("module, source, rule", [
    ("pipeline.framework.runner", "from pipeline.generation.stage import GenerationStage", "framework"),
    ("pipeline.framework.store", "def f():\n    from stages import PIPELINE", "framework"),
    ("pipeline.framework.stage", "import pipeline.llm", "framework"),
    ("stages.dedup", "from stages.repair import RepairStage", "other stage"),
    ("pipeline.generation.stage", "from stages.concepts import ConceptsTask", "no stage"),
    ("pipeline.training.memory", "from pipeline.cli import main", "entry point"),
    ("pipeline.llm.base", "from pipeline.generation.prompting import section", "backends"),
    ("sandbox.pool", "from pipeline.framework.errors import PipelineError", "stands alone"),
])
def test_a_forbidden_import_is_caught(module, source, rule):
    """The checker sees a forbidden import wherever it stands (top level or inside a function)."""
    found = violations({module: imports_of(module, source)})
    assert len(found) == 1 and rule in found[0], found


def test_allowed_imports_pass():
    allowed = {
        "stages.seeds": "from pipeline.framework.stage import MapStage\nfrom pipeline.analysis.pysource import x",
        "stages": "from stages.seeds import SeedsStage",
        "pipeline.cli": "from stages import PIPELINE\nfrom pipeline.report import write_report",
        "pipeline.decontamination.index": "from pipeline.benchmarks.humaneval import load_humaneval",
        "pipeline.generation.stage": "def f():\n    from pipeline.llm import create_backend",
    }
    assert violations({m: imports_of(m, s) for m, s in allowed.items()}) == []


def test_docs_architecture_draws_every_package_and_the_rules():
    """docs/architecture.md keeps up with the code: a Mermaid picture, and every sub-package of pipeline/ named."""
    text = (REPO / "docs" / "architecture.md").read_text()
    assert "```mermaid" in text and "tests/test_architecture.py" in text
    packages = sorted(p.name for p in (REPO / "pipeline").iterdir() if (p / "__init__.py").is_file())
    assert [p for p in packages if f"pipeline/{p}" not in text] == []
