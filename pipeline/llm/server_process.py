"""A local inference server the pipeline starts, health-checks and always stops.

:class:`ManagedServer` runs a server command on a free loopback port and
guarantees that the server does not outlive the run:

* **with its parent**: the server is started through a tiny launcher that
  asks Linux to SIGKILL it when the pipeline process dies
  (``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``), so even a SIGKILL of
  the pipeline takes the server with it;
* **on a normal end, an error, Ctrl-C or SIGTERM**: :meth:`ManagedServer.stop`
  (called by the backend's ``close``, by ``atexit``, and by a SIGTERM handler
  installed while a server runs) sends SIGTERM to the server's process group,
  waits ``stop_grace_s``, then SIGKILLs it (a llama.cpp server ignores
  SIGTERM while it is generating);
* **orphans of an earlier run**: each server is recorded in a registry
  folder (owner pid and start time, server pid, start time and command line).
  Before starting a server, records whose owner is gone are reaped: the
  recorded server is killed if a process with that pid, start time and
  command line still runs (a reused pid is left alone), and the record is
  removed.

The server's output goes to a log file beside its record; a server that
exits or never answers its health URL within ``start_timeout_s`` is killed
and reported in one line with the log's last line (its log is kept; the log
of a server that ran fine goes with its record).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.llm.base import BackendError

log = logging.getLogger(__name__)

#: Run by ``python -c``: die when the parent dies (Linux), then exec the server command.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "parent = int(sys.argv[1])\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)\n"  # PR_SET_PDEATHSIG
    "except (AttributeError, OSError):\n"
    "    pass\n"
    "if os.getppid() != parent:\n"
    "    sys.exit(0)\n"  # the parent died before prctl took effect
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)

_live: set["ManagedServer"] = set()
_live_lock = threading.Lock()
_previous_sigterm: object = None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 counted after the command name


def process_cmdline(pid: int) -> list[str] | None:
    """The command line of process ``pid`` (Linux ``/proc``), None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class ManagedServer:
    """One server process: started, waited for, recorded, and stopped with escalation."""

    def __init__(
        self,
        name: str,
        command: list[str],
        health_url: str,
        registry_dir: str | Path,
        start_timeout_s: float = 300.0,
        stop_grace_s: float = 10.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.env = env
        self.command = command
        self.health_url = health_url
        self.registry_dir = Path(registry_dir)
        self.start_timeout_s = start_timeout_s
        self.stop_grace_s = stop_grace_s
        self.proc: subprocess.Popen | None = None
        self.record_path: Path | None = None
        self.log_path: Path | None = None
        self.healthy = False

    # -- start ----------------------------------------------------------------
    def start(self) -> "ManagedServer":
        """Reap orphans of dead runs, start the server, and return once its health URL answers."""
        reap_orphans(self.registry_dir)
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{self.name}-{os.getpid()}-{int(time.time() * 1000)}"
        self.log_path = self.registry_dir / f"{stem}.log"
        self.record_path = self.registry_dir / f"{stem}.json"
        argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *self.command]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                env=self.env,
            )
        _register(self)
        self._write_record()
        log.info("%s: started pid %d (log %s)", self.name, self.proc.pid, self.log_path)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.healthy = True
        return self

    def _write_record(self) -> None:
        assert self.proc is not None and self.record_path is not None
        record = {
            "owner_pid": os.getpid(), "owner_start": process_start_time(os.getpid()),
            "server_pid": self.proc.pid, "server_start": process_start_time(self.proc.pid),
            "command": self.command, "health_url": self.health_url,
        }
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.record_path)

    def _wait_healthy(self) -> None:
        """Poll the health URL until it answers 200; fail if the process exits or time runs out."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise BackendError(f"{self.name} exited with status {code} while starting: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{self.name} did not answer {self.health_url} within {self.start_timeout_s:g}s: {self.log_tail()}"
                )
            time.sleep(0.25)

    def log_tail(self) -> str:
        """The last non-empty line of the server's log (for one-line errors)."""
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except (OSError, AttributeError):
            return "(no log)"
        return f"{lines[-1]} (log {self.log_path})" if lines else f"(empty log {self.log_path})"

    # -- stop -------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after the grace period. Safe to call twice.

        The log of a server that started fine is removed with its record; the
        log of one that failed to start is kept (the error names it).
        """
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate_group(proc.pid, self.stop_grace_s, wait=proc.wait)
            log.info("%s: stopped pid %d", self.name, proc.pid)
        _unregister(self)
        if self.record_path is not None:
            self.record_path.unlink(missing_ok=True)
        if self.healthy and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.proc is not None and self.proc.poll() is None


def terminate_group(pid: int, grace_s: float, wait=None) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL it if ``pid`` lives on after ``grace_s``."""
    _signal_group(pid, signal.SIGTERM)
    if not _wait_exit(pid, grace_s, wait):
        log.warning("pid %d ignored SIGTERM for %gs: sending SIGKILL", pid, grace_s)
        _signal_group(pid, signal.SIGKILL)
        _wait_exit(pid, 30.0, wait)
    _signal_group(pid, signal.SIGKILL)  # anything left in the group


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_exit(pid: int, timeout_s: float, wait=None) -> bool:
    """Wait until ``pid`` exits (reaping it with ``wait`` when it is our child); True if it did."""
    if wait is not None:
        try:
            wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process_start_time(pid) is None:
            return True
        time.sleep(0.1)
    return process_start_time(pid) is None


def reap_orphans(registry_dir: str | Path) -> int:
    """Kill servers recorded by runs that are gone; return how many were killed.

    A record whose owner still runs (same pid and start time) is left alone:
    it belongs to another live run. A recorded server is killed only if a
    process with its pid, start time and command line still runs.
    """
    killed = 0
    for record_path in sorted(Path(registry_dir).glob("*.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        owner = record.get("owner_pid")
        owner_start = process_start_time(owner) if owner else None
        if owner_start is not None and owner_start == record.get("owner_start"):
            continue
        pid = record.get("server_pid")
        if pid and process_start_time(pid) == record.get("server_start") and _is_recorded_command(pid, record):
            log.warning("stopping the server pid %d left by run pid %s (record %s)", pid, owner, record_path)
            terminate_group(pid, 5.0)
            killed += 1
        record_path.unlink(missing_ok=True)
    return killed


def _is_recorded_command(pid: int, record: dict) -> bool:
    """True when process ``pid`` runs the recorded command (directly or through the launcher)."""
    cmdline = process_cmdline(pid)
    command = record.get("command") or []
    return bool(cmdline and command) and cmdline[-len(command):] == command


# -- every live server stops when the process ends -----------------------------------
def _register(server: ManagedServer) -> None:
    with _live_lock:
        _live.add(server)
    _install_sigterm_handler()


def _unregister(server: ManagedServer) -> None:
    with _live_lock:
        _live.discard(server)


def stop_all() -> None:
    """Stop every server this process started and has not stopped yet."""
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop()


def _install_sigterm_handler() -> None:
    """On SIGTERM, stop the servers, then exit with 143 (finally blocks run); only from the main thread."""
    global _previous_sigterm
    if _previous_sigterm is not None or threading.current_thread() is not threading.main_thread():
        return
    _previous_sigterm = signal.getsignal(signal.SIGTERM)
    if _previous_sigterm == signal.SIG_IGN:
        return  # whoever runs us chose to ignore SIGTERM

    def on_sigterm(signum, frame):
        stop_all()
        previous = _previous_sigterm
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)


atexit.register(stop_all)
