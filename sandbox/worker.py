"""The sandbox worker: runs inside the container as PID 1, standard library only.

Protocol (over the container's attached stdin/stdout): the host writes one JSON
object per line, a job; the worker answers with one JSON object per line, a
result. The first line the worker writes is a greeting (``{"op": "ready"}``).
Nothing else is ever written to the worker's own stdout.

For each job the already-warm interpreter forks. The child becomes the program:
it starts a new session (its own process group), moves into an empty directory,
sets rlimits, swaps stdio for pipes and executes the code as ``__main__``. The
worker reads the child's output while it runs (keeping only a tail), enforces
the wall-clock timeout by killing the whole group, then kills *every* process
left in the container (``kill(-1, SIGKILL)``: as PID 1 of its PID namespace the
worker itself is exempt) and wipes every writable place, so the next program
finds a clean container.

End marker: the child knows a random token drawn for this job. Only after the
program's top-level code finished normally does the wrapper write
``<token> done <pid>`` to a private pipe (fd 3), which is not stdout or stderr,
so printing cannot fake it; ``sys.exit``/``exit()``/``os._exit``/a signal before
the end means no marker, hence no pass. A ``SystemExit`` with a success code
counts as reaching the end only when the program's *last* top-level statement
raised it directly (``sys.exit(main())``, ``unittest.main()`` when at least
one test ran, ``exit()``, ``raise SystemExit``).
"""

import ast
import gc
import json
import os
import resource
import secrets
import select
import signal
import sys
import time

WORK_ROOT = "/tmp"
JOB_DIR = os.path.join(WORK_ROOT, "job")
EXTRA_WRITABLE = ("/dev/shm",)
PROGRAM_NAME = "main.py"
REPORT_FD = 3
READ_CHUNK = 1 << 16
# Frames a success SystemExit may come from, below the program's own last line.
_EXIT_HELPER_FILES = (
    os.path.join("unittest", "main.py"),
    "_sitebuiltins.py",
)


def _preload(modules):
    """Import commonly used modules once, so every forked program finds them warm."""
    loaded = []
    for name in modules:
        try:
            __import__(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - a missing module must not stop the worker
            pass
    return loaded


_LIBC = []


def _set_dumpable(flag):
    """Make this process (non-)ptraceable by processes of the same uid; best effort."""
    try:
        if not _LIBC:
            import ctypes

            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        _LIBC[0].prctl(4, 1 if flag else 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except Exception:  # noqa: BLE001
        pass


def _close_fds_from(lowest):
    """Close every file descriptor >= ``lowest`` (one close_range call where libc has it)."""
    try:
        if _LIBC and _LIBC[0].close_range(lowest, 0xFFFFFFFF, 0) == 0:
            return
    except Exception:  # noqa: BLE001 - old libc: fall back to closing one by one
        pass
    os.closerange(lowest, 1 << 16)


class _Tail:
    """Keeps the last ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit):
        self.limit = max(0, int(limit))
        self.total = 0
        self.buf = bytearray()

    def add(self, data):
        """Append ``data``, trimming the buffer so it stays around ``limit`` bytes."""
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 2 * self.limit + READ_CHUNK:
            del self.buf[: len(self.buf) - self.limit]

    def text(self):
        """The kept tail as text, prefixed by a note when bytes were dropped."""
        kept = bytes(self.buf[-self.limit :]) if self.limit else b""
        dropped = self.total - len(kept)
        body = kept.decode("utf-8", errors="replace")
        if dropped > 0:
            return "[... %d bytes truncated ...]\n%s" % (dropped, body)
        return body


# --------------------------------------------------------------------------
# Inside the forked child: become the program.
# --------------------------------------------------------------------------


def _last_leaf_ranges(tree):
    """Line ranges of the statements that can be the last one a module executes."""
    ranges = []

    def visit(body):
        if not body:
            return
        node = body[-1]
        if isinstance(node, ast.If):
            visit(node.body)
            if node.orelse:
                visit(node.orelse)
        elif isinstance(node, (ast.With, getattr(ast, "AsyncWith", ast.With))):
            visit(node.body)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            if node.finalbody:
                visit(node.finalbody)
            else:
                visit(node.orelse or node.body)
                for handler in node.handlers:
                    visit(handler.body)
        else:
            end = getattr(node, "end_lineno", None) or node.lineno
            ranges.append((node.lineno, end))

    visit(tree.body)
    return ranges


def _exit_reached_end(exc, code_obj, source):
    """Whether a success ``SystemExit`` was raised by the program's final statement."""
    if exc.code not in (None, 0, False):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code is not code_obj:
        tb = tb.tb_next
    if tb is None:
        return False
    line = tb.tb_lineno
    deeper = tb.tb_next
    from_unittest = False
    while deeper is not None:
        filename = deeper.tb_frame.f_code.co_filename
        if not filename.endswith(_EXIT_HELPER_FILES):
            return False
        if filename.endswith(_EXIT_HELPER_FILES[0]):
            from_unittest = True
            program = deeper.tb_frame.f_locals.get("self")
            result = getattr(program, "result", None)
            if result is not None and getattr(result, "testsRun", 1) == 0:
                sys.stderr.write("[sandbox] unittest.main() ran no tests\n")
                return False
        deeper = deeper.tb_next
    del from_unittest
    try:
        ranges = _last_leaf_ranges(ast.parse(source))
    except SyntaxError:
        return False
    return any(start <= line <= end for start, end in ranges)


def _exit_status(code):
    """Process exit status Python itself would use for ``SystemExit(code)``."""
    if code is None or code is False:
        return 0
    if code is True:
        return 1
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:  # noqa: BLE001
        pass
    return 1


def _print_program_error(exc):
    """Print a traceback as Python would, without the wrapper's own frame."""
    import traceback

    try:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
    except BaseException:  # noqa: BLE001 - e.g. no memory left to format it
        pass


def _report(token, what):
    """Write ``<token> <what> <pid>`` to the private report pipe."""
    try:
        os.write(REPORT_FD, ("%s %s %d\n" % (token, what, os.getpid())).encode())
    except OSError:
        pass


def _finish(status):
    """Flush stdio, run atexit handlers, wait for non-daemon threads, then exit."""
    import threading

    try:
        main_thread = threading.main_thread()
        for thread in threading.enumerate():
            if thread is not main_thread and not thread.daemon:
                thread.join()
    except BaseException:  # noqa: BLE001
        pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream in {id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}.values():
        flush = getattr(stream, "flush", None)
        if flush is None:
            continue
        try:
            flush()
        except BaseException:  # noqa: BLE001 - Python itself exits 120 when flushing fails
            status = status or 120
    os._exit(status)


def _wire_fds(pipes):
    """Close the read ends; new session; stdin /dev/null, stdout/stderr/fd 3 the pipes; close the rest."""
    (out_r, out_w), (err_r, err_w), (rep_r, rep_w) = pipes
    for fd in (out_r, err_r, rep_r):
        os.close(fd)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(rep_w, REPORT_FD)  # dup2 leaves it inheritable; exec'd helpers lose it:
    os.set_inheritable(REPORT_FD, False)
    _close_fds_from(REPORT_FD + 1)


def _settle_in_job_dir():
    """Move into the job dir; lowest CPU priority, first in line for the OOM killer, ptraceable."""
    os.chdir(JOB_DIR)
    os.umask(0o022)
    try:  # the worker must keep winning the CPU against whatever the program spawns
        os.nice(19)
    except OSError:
        pass
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass
    _set_dumpable(True)


def _apply_limits(limits):
    """Set the job's rlimits (CPU seconds, address space, file size, open files) and no core dumps."""
    for name, value in (
        ("RLIMIT_CPU", limits.get("cpu_s")),
        ("RLIMIT_AS", limits.get("memory_bytes")),
        ("RLIMIT_FSIZE", limits.get("file_bytes")),
        ("RLIMIT_NOFILE", limits.get("open_files")),
        ("RLIMIT_CORE", 0),
    ):
        if value is None or not hasattr(resource, name):
            continue
        res = getattr(resource, name)
        value = int(value)
        hard = value + 1 if name == "RLIMIT_CPU" else value
        try:
            resource.setrlimit(res, (value, hard))
        except (ValueError, OSError):
            pass


def _reset_process_state():
    """Default signal handlers, a clean environment and a reseeded ``random``, as in a fresh interpreter."""
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter

    os.environ.clear()
    os.environ.update(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": JOB_DIR,
            "TMPDIR": WORK_ROOT,
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
        }
    )
    if "random" in sys.modules:  # do not share the worker's random state
        sys.modules["random"].seed()


def _text_stream(fd, mode):
    """A UTF-8 text stream on ``fd`` (not closing it); stderr (fd 2) writes through."""
    import io

    raw = io.FileIO(fd, mode, closefd=False)
    if mode == "r":
        return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")
    return io.TextIOWrapper(
        io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace",
        line_buffering=False, write_through=(fd == 2),
    )


def _install_stdio():
    """Replace ``sys.stdin``/``stdout``/``stderr`` (and their ``__x__`` twins) with fresh streams on fds 0-2."""
    sys.stdin = sys.__stdin__ = _text_stream(0, "r")
    sys.stdout = sys.__stdout__ = _text_stream(1, "w")
    sys.stderr = sys.__stderr__ = _text_stream(2, "w")


def _fresh_main_module(path):
    """A new, empty ``__main__`` module for the program at ``path``; sets ``sys.argv`` and ``sys.path``."""
    import types

    sys.argv = [path]
    sys.path.insert(0, JOB_DIR)
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    return module


def _compile_or_finish(source, path):
    """The program's code object; on a syntax error print it and exit 1 (never returns then)."""
    import traceback

    try:
        return compile(source, path, "exec", dont_inherit=True)
    except BaseException as exc:  # noqa: BLE001 - syntax errors and friends
        traceback.print_exception(type(exc), exc, None)
        _finish(1)


def _status_after(exc, code_obj, source, token):
    """Exit status of a program whose top level raised ``exc``; reports ``done``/``oom`` on fd 3.

    A success ``SystemExit`` from the last statement counts as the end (marker, status 0);
    an earlier one is said on stderr. ``MemoryError`` is reported as ``oom``.
    """
    if isinstance(exc, SystemExit):
        if _exit_reached_end(exc, code_obj, source):
            _report(token, "done")
            return 0
        status = _exit_status(exc.code)
        if status == 0:
            sys.stderr.write(
                "[sandbox] the program exited before its end (SystemExit(%r)); not a pass\n" % (exc.code,)
            )
        return status
    if isinstance(exc, MemoryError):
        _report(token, "oom")
    _print_program_error(exc)
    return 1


def _become_program(job, token, pipes):
    """In the forked child: isolate, limit, and execute the program. Never returns (71: a step failed).

    Called straight from ``run_job`` and running ``exec`` itself: the program finds the
    same Python frames below it (worker module, ``main``, ``run_job``, this one), and
    ``_print_program_error`` (drops this frame) and ``_exit_reached_end`` (looks below
    it) rely on the ``exec`` being right here.
    """
    try:
        import io  # noqa: F401 - the steps below need these: load them before the rlimits are set
        import types  # noqa: F401
        import traceback  # noqa: F401

        _wire_fds(pipes)
        _settle_in_job_dir()
        _apply_limits(job.get("limits") or {})
        _reset_process_state()
        _install_stdio()
        path = os.path.join(JOB_DIR, PROGRAM_NAME)
        source = job.get("code") or ""
        module = _fresh_main_module(path)
        code_obj = _compile_or_finish(source, path)
        try:
            exec(code_obj, module.__dict__)
        except BaseException as exc:  # noqa: BLE001 - SystemExit, MemoryError and everything else
            status = _status_after(exc, code_obj, source, token)
        else:
            _report(token, "done")
            status = 0
        _finish(status)
    finally:
        os._exit(71)


# --------------------------------------------------------------------------
# In the worker: run one job, clean up after it.
# --------------------------------------------------------------------------


def _kill_everything():
    """Kill every process of the container but this one and reap them."""
    for _ in range(50):
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                break
        time.sleep(0.002)
    return False


def _wipe(root, keep_root=True):
    """Remove everything under ``root``; fixes permissions a program may have removed."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return True
    except PermissionError:
        try:
            os.chmod(root, 0o700)
            entries = list(os.scandir(root))
        except OSError:
            return False
    ok = True
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                try:
                    os.chmod(entry.path, 0o700)
                except OSError:
                    pass
                ok = _wipe(entry.path, keep_root=False) and ok
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            pass
        except OSError:
            ok = False
    if not keep_root:
        try:
            os.rmdir(root)
        except FileNotFoundError:
            pass
        except OSError:
            ok = False
    return ok


def _oom_kills():
    """The container's cgroup OOM-kill counter, or None when it cannot be read."""
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def _read_into(fd, sink):
    """Read what is available from ``fd`` into ``sink``; False at end of file."""
    try:
        data = os.read(fd, READ_CHUNK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    if not data:
        return False
    sink.add(data)
    return True


def _wipe_writable():
    """Wipe ``/tmp`` and the other writable places; False when something could not be removed."""
    return _wipe(WORK_ROOT) and all(_wipe(p) for p in EXTRA_WRITABLE)


def _prepare_job_dir(code):
    """Wipe every writable place and write the program to the fresh job dir; False when the wipe failed."""
    clean = _wipe_writable()
    os.mkdir(JOB_DIR, 0o700)
    with open(os.path.join(JOB_DIR, PROGRAM_NAME), "w", encoding="utf-8") as fh:
        fh.write(code)
    return clean


def _fork(pipes):
    """Fork; returns ``(pid, start time)``, pid 0 in the child. The parent closes the write ends."""
    for stream in (sys.stdout, sys.stderr):  # nothing buffered may leak into the child
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    start = time.monotonic()
    pid = os.fork()
    if pid != 0:
        for _, write_end in pipes:
            os.close(write_end)
    return pid, start


def _nonblocking_readers(pipes, sinks):
    """Map the read end of each ``(read, write)`` pipe to its sink, set non-blocking."""
    readers = {read_end: sink for (read_end, _), sink in zip(pipes, sinks)}
    for fd in readers:
        os.set_blocking(fd, False)
    return readers


def _open_pidfd(pid):
    """A pidfd for ``pid`` (readable when it exits), or None where the kernel or Python has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _poll_pipes(readers, pidfd, remaining):
    """Wait up to ``remaining`` seconds for output or the child's exit; read what came.

    A pipe at end of file is closed and dropped from ``readers``. Without a pidfd
    the wait is capped at 10 ms, so the caller notices the exit soon.
    """
    watch = list(readers)
    if pidfd is not None:
        watch.append(pidfd)
    ready, _, _ = select.select(watch, [], [], remaining if pidfd is not None else min(remaining, 0.01))
    for fd in ready:
        if fd == pidfd:
            continue
        if not _read_into(fd, readers[fd]):
            os.close(fd)
            del readers[fd]


def _wait_for_exit(pid, pidfd, readers, deadline):
    """Read the program's output until it exits, or kill its process group at ``deadline``.

    Returns ``(wait_status, rusage, timed_out)``.
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            _, wait_status, rusage = os.wait4(pid, 0)
            return wait_status, rusage, True
        _poll_pipes(readers, pidfd, remaining)
        got, wait_status, rusage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return wait_status, rusage, False


def _watch(pid, readers, deadline):
    """Collect the program's output until it exits or ``deadline``.

    Returns ``(wait_status, rusage, timed_out, end)``, ``end`` the monotonic time it ended.
    """
    pidfd = _open_pidfd(pid)
    wait_status, rusage, timed_out = _wait_for_exit(pid, pidfd, readers, deadline)
    end = time.monotonic()
    if pidfd is not None:
        os.close(pidfd)
    return wait_status, rusage, timed_out, end


def _end_all_processes(readers):
    """Kill every process left, then read the pipes to their end; False when some process survived."""
    killed = _kill_everything()
    # Every writer is dead after this, so draining the pipes terminates.
    for fd, sink in list(readers.items()):
        os.set_blocking(fd, True)
        while _read_into(fd, sink):
            pass
        os.close(fd)
    return killed


def _exit_code(wait_status):
    """The exit code of a wait status: the exit status, or minus the signal that killed it."""
    if hasattr(os, "waitstatus_to_exitcode"):
        return os.waitstatus_to_exitcode(wait_status)
    return -os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else os.WEXITSTATUS(wait_status)


def parse_report(data, token, pid):
    """What the child wrote to the report pipe: ``(completed, memory_error)``. Pure.

    ``completed``: the line ``<token> done <pid>`` from the program's own pid;
    ``memory_error``: a ``<token> oom <pid>`` line (a ``MemoryError`` escaped the program).
    """
    marks = bytes(data).decode("ascii", errors="replace").split("\n")
    completed = ("%s done %d" % (token, pid)) in marks
    memory_error = any(line.startswith(token + " oom ") for line in marks)
    return completed, memory_error


def classify_status(exit_code, *, completed, timed_out, memory_error=False,
                    oom_kills_before=None, oom_kills_after=None, cpu_limit=None, cpu_used=0.0):
    """The job's status from what the worker saw; pure (no I/O), tested on the host.

    ``exit_code``: the program's, negative for a signal; ``completed``: the end marker
    arrived; ``timed_out``: the wall clock ran out; ``memory_error``: the child reported
    a ``MemoryError``; ``oom_kills_before/after``: the cgroup OOM-kill counter around the
    job (None: unreadable); ``cpu_limit``: the CPU rlimit in seconds (None/0: none);
    ``cpu_used``: the child's user + system CPU seconds. First match wins: ``timeout``
    (wall clock; SIGXCPU; SIGKILL at the CPU limit), ``passed`` (exit 0 and the
    marker), ``oom``, else ``failed``. (``error``, the sandbox's fault, is not decided here.)
    """
    if timed_out:
        return "timeout"
    if exit_code == -signal.SIGXCPU or (cpu_limit and exit_code == -signal.SIGKILL and cpu_used >= cpu_limit):
        return "timeout"
    if exit_code == 0 and completed:
        return "passed"  # ran to its end; a helper process it lost to the OOM killer is its own business
    if memory_error or (oom_kills_before is not None and oom_kills_after is not None
                        and oom_kills_after > oom_kills_before):
        return "oom"
    return "failed"


def run_job(job):
    """Run one program and return the result dict (status, exit code, output tails)."""
    job_id = job.get("id")
    timeout = float(job.get("timeout") or 10.0)
    output_limit = int(job.get("output_limit") or 16384)
    clean = _prepare_job_dir(job.get("code") or "")
    token = secrets.token_hex(16)
    pipes = (os.pipe(), os.pipe(), os.pipe())  # (read, write) for stdout, stderr, report
    oom_before = _oom_kills()
    pid, start = _fork(pipes)
    if pid == 0:  # pragma: no cover - the child; from this frame, see _become_program
        _become_program(job, token, pipes)
    stdout, stderr, report = _Tail(output_limit), _Tail(output_limit), _Tail(4096)
    readers = _nonblocking_readers(pipes, (stdout, stderr, report))
    wait_status, rusage, timed_out, end = _watch(pid, readers, start + timeout)
    clean = _end_all_processes(readers) and clean
    oom_after = _oom_kills()

    exit_code = _exit_code(wait_status)
    completed, memory_error = parse_report(report.buf, token, pid)
    cpu_used = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else 0.0
    status = classify_status(
        exit_code, completed=completed, timed_out=timed_out, memory_error=memory_error,
        oom_kills_before=oom_before, oom_kills_after=oom_after,
        cpu_limit=(job.get("limits") or {}).get("cpu_s"), cpu_used=cpu_used,
    )
    clean = _wipe_writable() and clean
    return {
        "op": "result", "id": job_id, "status": status, "exit_code": exit_code,
        "duration_s": round(end - start, 6), "cpu_s": round(cpu_used, 6),
        "stdout": stdout.text(), "stderr": stderr.text(), "healthy": bool(clean),
    }


def _error_result(job_id, exc):
    """The result for a job the worker itself failed on (``run_job`` raised): status ``error``. Pure."""
    return {"op": "result", "id": job_id, "status": "error", "exit_code": None,
            "duration_s": 0.0, "stdout": "", "stderr": "worker error: %r" % (exc,),
            "healthy": False}


def _send(obj):
    """Write one JSON line to the host (the worker's stdout)."""
    data = (json.dumps(obj) + "\n").encode("utf-8")
    view = memoryview(data)
    while view:
        written = os.write(1, view)
        view = view[written:]


def _lines(fd):
    """Yield the lines the host writes to ``fd`` until it closes."""
    pending = bytearray()
    while True:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except InterruptedError:
            continue
        if not chunk:
            return
        pending += chunk
        while True:
            cut = pending.find(b"\n")
            if cut < 0:
                break
            line = bytes(pending[:cut])
            del pending[: cut + 1]
            if line.strip():
                yield line


def main(argv):
    """Greet the host, then serve jobs from stdin until it closes."""
    preload = []
    if len(argv) > 2 and argv[1] == "--preload":
        preload = [m for m in argv[2].split(",") if m]
    loaded = _preload(preload)
    _set_dumpable(False)  # programs (same uid) may not ptrace or read the worker
    # Move everything loaded so far out of the collector's sight: a program's garbage
    # collections then do not touch (and copy-on-write) the worker's inherited pages.
    gc.collect()
    gc.freeze()
    # As PID 1 the kernel drops signals from inside the container that have no
    # handler; Python's SIGINT handler would let a program interrupt the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _send({"op": "ready", "python": sys.version.split()[0], "pid": os.getpid(), "preloaded": loaded})
    for line in _lines(0):
        try:
            job = json.loads(line)
        except ValueError as exc:
            _send({"op": "error", "error": "bad request: %s" % exc})
            continue
        try:
            result = run_job(job)
        except Exception as exc:  # noqa: BLE001 - report, let the host decide
            _kill_everything()
            result = _error_result(job.get("id"), exc)
        _send(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
