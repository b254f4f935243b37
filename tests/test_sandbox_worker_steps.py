"""The sandbox worker's pure steps, on the host: status classification, the report pipe, exit codes.

``sandbox/worker.py`` runs inside the container and is standard library only, so it
loads here straight from its file, without the ``sandbox`` package around it.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox import Job, SandboxConfig, SandboxPool
from tests.test_sandbox import sandbox_image  # noqa: F401 - the session fixture, for the one engine test

WORKER_PATH = Path(__file__).resolve().parent.parent / "sandbox" / "worker.py"


def _load_worker():
    spec = importlib.util.spec_from_file_location("sandbox_worker_on_host", WORKER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()
KILL, XCPU, SEGV, TERM = -signal.SIGKILL, -signal.SIGXCPU, -signal.SIGSEGV, -signal.SIGTERM


# --------------------------------------------------------------------------- the file itself


def test_worker_imports_only_the_standard_library():
    tree = ast.parse(WORKER_PATH.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "worker.py must not use relative imports"
            imported.add(node.module.split(".")[0])
    assert imported, "no imports found: the check is not looking at the worker"
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_worker_functions_are_short_and_documented():
    tree = ast.parse(WORKER_PATH.read_text())
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert len(functions) > 20
    for fn in functions:
        assert ast.get_docstring(fn), f"{fn.name} has no docstring"
        assert fn.end_lineno - fn.lineno + 1 <= 40, f"{fn.name} is {fn.end_lineno - fn.lineno + 1} lines"


# --------------------------------------------------------------------------- classify_status

# (id, exit_code, keyword arguments, expected status)
CASES = [
    # passed: exit 0 and the end marker, nothing else.
    ("ran to its end", 0, dict(completed=True), "passed"),
    ("passed while a helper process was OOM-killed", 0,
     dict(completed=True, oom_kills_before=3, oom_kills_after=4), "passed"),
    ("passed although a MemoryError was reported", 0, dict(completed=True, memory_error=True), "passed"),
    ("passed with CPU time to spare", 0, dict(completed=True, cpu_limit=4, cpu_used=3.9), "passed"),
    # failed: no marker, or a marker with a nonzero exit.
    ("exit 0 without the marker (sys.exit(0) early, os._exit(0))", 0, dict(completed=False), "failed"),
    ("marker, then a nonzero exit (atexit/flush failure)", 120, dict(completed=True), "failed"),
    ("marker, then exit 1", 1, dict(completed=True), "failed"),
    ("an exception: exit 1", 1, dict(completed=False), "failed"),
    ("sys.exit(3)", 3, dict(completed=False), "failed"),
    ("the wrapper itself failed (71)", 71, dict(completed=False), "failed"),
    ("killed by SIGSEGV", SEGV, dict(completed=False), "failed"),
    ("killed by SIGTERM, marker or not", TERM, dict(completed=True), "failed"),
    ("SIGKILL without OOM evidence", KILL, dict(completed=False, oom_kills_before=2, oom_kills_after=2), "failed"),
    ("SIGKILL, OOM counter unreadable", KILL, dict(completed=False), "failed"),
    ("SIGKILL, OOM counter unreadable after", KILL,
     dict(completed=False, oom_kills_before=0, oom_kills_after=None), "failed"),
    ("SIGKILL, OOM counter unreadable before", KILL,
     dict(completed=False, oom_kills_before=None, oom_kills_after=1), "failed"),
    ("SIGKILL, no CPU limit however much CPU", KILL, dict(completed=False, cpu_limit=None, cpu_used=99.0), "failed"),
    ("SIGKILL, CPU limit 0 means none", KILL, dict(completed=False, cpu_limit=0, cpu_used=99.0), "failed"),
    # oom: a MemoryError escaped, or the cgroup OOM killer struck during a job that did not pass.
    ("SIGKILL under the memory limit: the OOM counter rose", KILL,
     dict(completed=False, oom_kills_before=0, oom_kills_after=1), "oom"),
    ("MemoryError escaped the program", 1, dict(completed=False, memory_error=True), "oom"),
    ("exit 0 without the marker, OOM kill meanwhile", 0,
     dict(completed=False, oom_kills_before=5, oom_kills_after=6), "oom"),
    ("nonzero exit after the marker, OOM kill meanwhile", 1,
     dict(completed=True, oom_kills_before=5, oom_kills_after=6), "oom"),
    ("SIGKILL below the CPU limit with OOM evidence", KILL,
     dict(completed=False, cpu_limit=4, cpu_used=1.0, oom_kills_before=0, oom_kills_after=1), "oom"),
    # timeout: the wall clock, or the CPU rlimit (SIGXCPU at the soft limit, SIGKILL at the hard one).
    ("wall clock ran out", KILL, dict(completed=False, timed_out=True), "timeout"),
    ("timeout wins over the marker and exit 0", 0, dict(completed=True, timed_out=True), "timeout"),
    ("timeout wins over OOM evidence", KILL,
     dict(completed=False, timed_out=True, memory_error=True, oom_kills_before=0, oom_kills_after=1), "timeout"),
    ("SIGXCPU: the CPU soft limit", XCPU, dict(completed=False), "timeout"),
    ("SIGXCPU even after the marker", XCPU, dict(completed=True), "timeout"),
    ("SIGKILL at the CPU hard limit", KILL, dict(completed=False, cpu_limit=4, cpu_used=4.0), "timeout"),
    ("CPU limit wins over OOM evidence", KILL,
     dict(completed=False, cpu_limit=4, cpu_used=4.5, oom_kills_before=0, oom_kills_after=1), "timeout"),
]


@pytest.mark.parametrize("exit_code, kwargs, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify_status(exit_code, kwargs, expected):
    kwargs = {"timed_out": False, **kwargs}
    assert worker.classify_status(exit_code, **kwargs) == expected


def test_classify_status_covers_every_status_it_decides():
    assert {c[-1] for c in CASES} == {"passed", "failed", "oom", "timeout"}


def test_classify_status_needs_the_marker_and_timeout_flags_by_name():
    with pytest.raises(TypeError):
        worker.classify_status(0, True, False)  # positional flags are too easy to swap


def test_error_status_is_the_worker_failing_not_the_program():
    result = worker._error_result("j1", RuntimeError("boom"))
    assert result == {
        "op": "result", "id": "j1", "status": "error", "exit_code": None, "duration_s": 0.0,
        "stdout": "", "stderr": "worker error: RuntimeError('boom')", "healthy": False,
    }


# --------------------------------------------------------------------------- the report pipe and exit codes

TOKEN = "ab" * 16


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", (False, False)),
        (f"{TOKEN} done 42\n".encode(), (True, False)),
        (bytearray(f"{TOKEN} done 42\n".encode()), (True, False)),
        (f"{TOKEN} done 42".encode(), (True, False)),  # no trailing newline
        (f"{TOKEN} done 43\n".encode(), (False, False)),  # a forked child of the program is not the program
        (f"{'cd' * 16} done 42\n".encode(), (False, False)),  # another token
        (f"x{TOKEN} done 42\n".encode(), (False, False)),  # the line must be exactly the marker
        (f"{TOKEN} done 42 \n".encode(), (False, False)),
        (f"{TOKEN} done 4\n".encode(), (False, False)),
        (f"junk\xff\n{TOKEN} done 42\n".encode("latin-1"), (True, False)),  # undecodable junk does not hide it
        (f"{TOKEN} oom 42\n".encode(), (False, True)),
        (f"{TOKEN} oom 7\n".encode(), (False, True)),  # a MemoryError counts from any pid
        (f"{'cd' * 16} oom 42\n".encode(), (False, False)),
        (f"{TOKEN} oom 42\n{TOKEN} done 42\n".encode(), (True, True)),
    ],
)
def test_parse_report(data, expected):
    assert worker.parse_report(data, TOKEN, 42) == expected


@pytest.mark.parametrize("with_helper", [True, False], ids=["waitstatus_to_exitcode", "fallback"])
@pytest.mark.parametrize("wait_status, exit_code", [(0, 0), (3 << 8, 3), (255 << 8, 255), (9, -9), (24, -24)])
def test_exit_code(monkeypatch, with_helper, wait_status, exit_code):
    if not with_helper:
        monkeypatch.delattr(os, "waitstatus_to_exitcode", raising=False)
    assert worker._exit_code(wait_status) == exit_code


def test_tail_keeps_the_end_and_counts_the_rest():
    tail = worker._Tail(4)
    tail.add(b"hello ")
    tail.add(b"world")
    assert tail.text() == "[... 7 bytes truncated ...]\norld"
    short = worker._Tail(100)
    short.add("é".encode())
    assert short.text() == "é"
    assert worker._Tail(0).text() == ""


# --------------------------------------------------------------------------- against the engine


@pytest.mark.docker
def test_program_runs_on_the_same_stack_of_worker_frames(sandbox_image):  # noqa: F811 - the imported fixture
    """The split keeps ``_become_program`` called from ``run_job`` and running ``exec`` itself.

    A helper between them would shrink every program's recursion headroom.
    """
    code = "import inspect\nprint([f.function for f in inspect.stack(0)])\n"
    with SandboxPool(SandboxConfig(workers=1, timeout_s=5, image=sandbox_image)) as pool:
        (verdict,) = pool.run([Job(id="stack", code=textwrap.dedent(code))])
    assert verdict.status == "passed", verdict
    assert verdict.stdout == "['<module>', '_become_program', 'run_job', 'main', '<module>']\n"
