"""Shared fixtures: a small real corpus from the standard library, recipes, and a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.analysis.code_files import stdlib_dir

REPO = Path(__file__).resolve().parent.parent
STDLIB_PICK = [
    "textwrap.py", "string.py", "colorsys.py", "fractions.py", "statistics.py", "heapq.py", "bisect.py",
    "difflib.py", "calendar.py", "base64.py", "json", "html", "shlex.py", "fnmatch.py", "quopri.py",
    "graphlib.py", "ipaddress.py", "pprint.py", "reprlib.py", "numbers.py", "uu.py", "wave.py",
]


@pytest.fixture(scope="session")
def stdlib_corpus(tmp_path_factory) -> Path:
    """A folder with a copy of some real standard-library modules (a corpus none of us wrote)."""
    root = tmp_path_factory.mktemp("corpus")
    for name in STDLIB_PICK:
        src = stdlib_dir() / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, root / name)
    return root


def write_recipe(path: Path, work_dir: Path, **stage_overrides) -> Path:
    """Write a small recipe reading a local corpus; keyword arguments set keys of stages.seeds."""
    seeds = {"source": {"kind": "local", "paths": []}, "filters": ["returns_value", "no_todo", "no_banned_imports",
             "max_lines", "has_arguments", "not_benchmark"], "batch_size": 8}
    seeds.update(stage_overrides)
    recipe = {"name": "test", "run": {"work_dir": str(work_dir), "workers": 2, "batch_size": 8}, "stages": {"seeds": seeds}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    return path


def require_installed(what: str, problem: str | None) -> None:
    """Skip the calling test (or module) when ``what`` is missing, i.e. ``problem`` is not None.

    Everything passed here is something ``.ci/run`` installs (Docker and the sandbox image, Ray,
    Chromium, basedpyright, the demo model), so with the environment variable ``CI`` set a missing
    component fails the test instead: CI must never pass by skipping what it was meant to check.
    """
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI installs it: {problem}", pytrace=False)
    pytest.skip(f"{what} is missing: {problem} (CI installs it)", allow_module_level=True)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``run_pipeline.py`` in a subprocess, as a user would (``env`` adds environment variables)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "run_pipeline.py"), *args],
        cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def stage_command(tmp_path: Path, stage: str, rows: list[dict], seed: int = 42, **settings) -> list[str]:
    """Write ``rows`` (JSONL) and a recipe setting ``stages.<stage>`` into ``tmp_path``; return the CLI arguments."""
    import json

    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "input.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"run": {"work_dir": str(tmp_path / "work"), "seed": seed},
                                      "stages": {stage: settings}}))
    return ["--config", str(recipe), "--stage", stage, "--input", str(data)]


def run_stage_on_rows(tmp_path: Path, stage: str, rows: list[dict], seed: int = 42, **settings):
    """Run one stage through the command line on ``rows`` (as ``--input`` JSONL); return manifest, kept, dropped."""
    from pipeline.framework.store import StageStore

    result = run_cli(*stage_command(tmp_path, stage, rows, seed, **settings))
    assert result.returncode == 0, result.stderr
    store = StageStore(tmp_path / "work", stage)
    return store.read_manifest(), store.read_table().to_pylist(), store.read_dropped().to_pylist()


def sigkill_after_parts(args: list[str], store, parts: int = 1, timeout: float = 300) -> int:
    """Start ``run_pipeline.py args`` in its own process group, SIGKILL the group once ``store`` holds ``parts`` parts.

    Fails when the run finishes first (the input is then too small to interrupt). Returns the parts on disk.
    """
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while len(store.part_paths()) < parts and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the input larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not store.manifest_path.exists()
    return len(store.part_paths())


def default_sigint() -> None:
    """``preexec_fn`` for a child a test stops with Ctrl-C: SIGINT back to its default action.

    A test run started as a background job of a non-interactive shell (``cmd &``) ignores SIGINT, children
    inherit that, and Python then installs no KeyboardInterrupt handler: the signal would do nothing.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
