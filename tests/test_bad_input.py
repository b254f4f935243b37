"""Bad input through the real command line: one clear line naming the culprit, exit 2, nothing written lost.

Each test starts from a work dir where the seeds stage is done (a cheap real
run over two standard-library modules), gives one bad input, and checks the
exit code, that stderr holds exactly one ``error:`` line (and no traceback)
naming the file, key or row, and that the seeds stage's folder is byte for
byte what it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from pipeline.analysis.typecheck import TypecheckError, find_basedpyright
from pipeline.framework.store import StageStore
from tests.conftest import require_installed, run_cli
from tests.llm_fixtures import closed_port

CHEAP_FILTERS = ["returns_value", "no_todo", "has_arguments"]


def folder_digest(folder: Path) -> str:
    """A hash of every file's path and bytes under ``folder``."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder)}\0".encode() + path.read_bytes())
    return h.hexdigest()


def one_error_line(result, *needles: str) -> str:
    """Assert exit 2, no traceback, exactly one ``error:`` line holding every needle; return that line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


class Work:
    """A recipe whose work dir holds a finished seeds stage, and the digest of that stage's folder."""

    def __init__(self, root: Path, corpus: Path):
        self.root = root
        self.work = root / "work"
        self.recipe = root / "recipe.yaml"
        data = {
            "run": {"work_dir": str(self.work), "workers": 1, "batch_size": 8},
            # a model section whose server is never reached: every bad input must be refused before that
            "model": {"backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{closed_port()}/v1",
                      "max_retries": 0},
            "stages": {"seeds": {"source": {"kind": "local", "paths": [str(corpus / "textwrap.py"),
                                                                       str(corpus / "colorsys.py")]},
                                 "filters": CHEAP_FILTERS, "batch_size": 8}},
        }
        root.mkdir(parents=True, exist_ok=True)
        self.recipe.write_text(yaml.safe_dump(data))
        result = self.cli("--stage", "seeds")
        assert result.returncode == 0, result.stderr
        assert StageStore(self.work, "seeds").read_manifest()["rows_out"] > 0
        self.seeds_digest = folder_digest(self.work / "seeds")

    def cli(self, *args: str, env: dict | None = None):
        """Run the command line on this recipe."""
        return run_cli("--config", str(self.recipe), *args, env=env)

    def assert_seeds_unchanged(self) -> None:
        """The finished seeds stage is still exactly as it was, and still done."""
        assert folder_digest(self.work / "seeds") == self.seeds_digest, "the seeds stage's output changed"
        status = self.cli("--status")
        states = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines() if line.strip()}
        assert status.returncode == 0 and states["seeds"] == "done", status.stdout


@pytest.fixture()
def work(tmp_path, stdlib_corpus) -> Work:
    return Work(tmp_path / "run", stdlib_corpus)


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, bytes] | None = None) -> Path:
    """JSONL of ``rows``; ``raw_lines`` puts given bytes at given (1-based) line numbers instead."""
    lines = [json.dumps(r).encode() for r in rows]
    for lineno, raw in (raw_lines or {}).items():
        lines[lineno - 1] = raw
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def code_file_rows(n: int) -> list[dict]:
    return [{"path": f"m{i}.py", "content": f'def f{i}(x):\n    """Add {i}."""\n    return x + {i}\n'}
            for i in range(n)]


# -- 8: a work dir that cannot be created or written -----------------------------------------------------------------
def _unusable_work_dirs(tmp: Path) -> list[tuple[str, str]]:
    (tmp / "a-file").write_text("x")
    cases = [("/proc/x", "cannot create it"), (str(tmp / "a-file" / "work"), "cannot create it"),
             (str(tmp / "a-file"), "cannot create it")]
    if os.geteuid() != 0:  # root writes through permission bits
        (tmp / "read-only").mkdir(mode=0o555)
        cases.append((str(tmp / "read-only"), "cannot write in it"))
    return cases


def test_unusable_work_dir(work, tmp_path):
    for i, (work_dir, what) in enumerate(_unusable_work_dirs(tmp_path)):
        args = ["--stage", "seeds"] if i else ["--report"]
        result = work.cli(*args, "-o", f"run.work_dir={work_dir}")
        one_error_line(result, f"run.work_dir {work_dir}: {what}")
    work.assert_seeds_unchanged()


# -- 9: a few-shot file that does not exist ---------------------------------------------------------------------------
def test_missing_fewshot_file(work, tmp_path):
    missing = tmp_path / "no-such-bank.yaml"
    result = work.cli("--stage", "concepts", "-o", f"stages.concepts.fewshot_file={missing}")
    one_error_line(result, "stages.concepts.fewshot_file", str(missing))
    result = work.cli("--stage", "seeds", "-o", f"stages.seeds.docstring_judge.fewshot_file={missing}")
    one_error_line(result, "stages.seeds.docstring_judge.fewshot_file", str(missing))
    assert not (work.work / "concepts").exists()
    work.assert_seeds_unchanged()


# -- 10: JSONL that is not UTF-8, or whose later rows lack a required column -----------------------------------------
def test_jsonl_not_utf8(work, tmp_path):
    rows = code_file_rows(20)
    data = write_jsonl(tmp_path / "latin1.jsonl", rows,
                       {17: json.dumps(rows[16]).encode().replace(b"Add", b"Add \xe9t\xe9")})
    result = work.cli("--stage", "seeds", "--input", str(data))
    one_error_line(result, f"{data}: line 17, column", "not UTF-8")
    work.assert_seeds_unchanged()


def test_jsonl_later_row_lacks_a_required_column(work, tmp_path):
    seeds = [{"id": f"s{i}", "code": f"def g{i}(a):\n    return a\n"} for i in range(30)]
    del seeds[25]["code"]
    data = write_jsonl(tmp_path / "seeds.jsonl", seeds)
    result = work.cli("--stage", "concepts", "--input", str(data))
    one_error_line(result, f"{data}: line 26", "lacks required column(s) code", "stage concepts")
    assert not StageStore(work.work, "concepts").part_paths()
    files = write_jsonl(tmp_path / "files.jsonl", [*code_file_rows(12), {"path": "late.py"}])
    result = work.cli("--stage", "seeds", "--input", str(files))
    one_error_line(result, f"{files}: line 13", "lacks required column(s) content")
    work.assert_seeds_unchanged()


# -- 11: a malformed JSONL line: refused before the first batch, with the parser's message ---------------------------
def test_malformed_jsonl_line_is_found_before_any_batch(work, tmp_path):
    data = write_jsonl(tmp_path / "files.jsonl", code_file_rows(40), {33: b'{"path": "x.py", "content": "def f(:'})
    # the seeds stage of this very work dir: a run that starts would replace its finished output
    result = work.cli("--stage", "seeds", "--input", str(data))
    one_error_line(result, f"{data}: line 33, column 29: not valid JSON: Unterminated string starting at")
    work.assert_seeds_unchanged()


# -- 12: a source with no rows ----------------------------------------------------------------------------------------
def test_source_with_no_rows(work, tmp_path):
    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    elsewhere = tmp_path / "other-work"
    args = ["--stage", "seeds", "-o", f"stages.seeds.source.paths=[{empty}]", "-o", f"run.work_dir={elsewhere}"]
    one_error_line(work.cli(*args), f"stage seeds: its input ({empty}) holds no rows", "run.allow_empty_input")
    assert not (elsewhere / "seeds").exists()
    allowed = work.cli(*args, "-o", "run.allow_empty_input=true")
    assert allowed.returncode == 0, allowed.stderr
    assert "holds NO rows" in allowed.stderr
    assert StageStore(elsewhere, "seeds").read_manifest()["rows_in"] == 0
    # the next stage is refused before any model is asked (the model's server is not even there)
    later = work.cli("--stage", "concepts", "-o", f"stages.seeds.source.paths=[{empty}]", "-o", f"run.work_dir={elsewhere}")
    one_error_line(later, "stage concepts: its input (stage seeds output", "holds no rows")
    assert not (elsewhere / "concepts").exists()
    work.assert_seeds_unchanged()


# -- 13: the docstring judge without a model section ------------------------------------------------------------------
def test_docstring_judge_without_a_model_is_refused_with_the_config(work):
    result = work.cli("--stage", "seeds", "-o", "model=null",
                      "-o", f"stages.seeds.filters={json.dumps(CHEAP_FILTERS + ['docstring_judge'])}")
    one_error_line(result, "stages.seeds.filters: docstring_judge", "model section")
    work.assert_seeds_unchanged()


# -- 14: the type checker failing ------------------------------------------------------------------------------------
def test_type_checker_failure_is_one_line(work, tmp_path):
    try:
        find_basedpyright()
    except TypecheckError as exc:
        require_installed("basedpyright", str(exc))
    elsewhere = tmp_path / "other-work"
    filters = json.dumps(CHEAP_FILTERS + ["typechecks"])
    # an option the checker's Node.js refuses: basedpyright itself fails, as it would with a broken install
    result = work.cli("--stage", "seeds", "-o", f"stages.seeds.filters={filters}", "-o", f"run.work_dir={elsewhere}",
                      env={"NODE_OPTIONS": "--no-such-node-option"})
    one_error_line(result, "stages.seeds.filters: typechecks failed: basedpyright exited with", "NODE_OPTIONS")
    work.assert_seeds_unchanged()
