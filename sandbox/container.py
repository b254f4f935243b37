"""One long-lived sandbox container and the attached stream to the worker inside it."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Any, Dict, Optional

import docker
import docker.errors
from docker.types import LogConfig

from .config import SandboxConfig
from .engine import ENGINE_DOWN

LABEL = "selfcodealign.sandbox"
LABEL_RUN = "selfcodealign.sandbox.run"
LABEL_OWNER_HOST = "selfcodealign.sandbox.owner-host"
LABEL_OWNER_PID = "selfcodealign.sandbox.owner-pid"
LABEL_OWNER_START = "selfcodealign.sandbox.owner-start"


class ContainerLost(Exception):
    """The container (or its worker) stopped answering: it died, hung or broke the protocol."""


def process_start_time(pid: int) -> Optional[str]:
    """Start time of process ``pid`` in clock ticks since boot (None if unknown or gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def owner_labels(run_id: str) -> Dict[str, str]:
    """Labels naming this run and the process that owns its containers."""
    return {
        LABEL: "1",
        LABEL_RUN: run_id,
        LABEL_OWNER_HOST: socket.gethostname(),
        LABEL_OWNER_PID: str(os.getpid()),
        LABEL_OWNER_START: process_start_time(os.getpid()) or "",
    }


def create_kwargs(config: SandboxConfig, image: str, labels: Dict[str, str], name: str) -> Dict[str, Any]:
    """Arguments for ``containers.create``: no network, read-only root, caps dropped, limits set."""
    memory = config.container_memory_bytes()
    return dict(
        image=image,
        command=["--preload", ",".join(config.preload_modules)],
        name=name,
        labels=labels,
        stdin_open=True,
        tty=False,
        detach=True,
        network_mode="none",
        read_only=True,
        user=config.user,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=config.pids_limit,
        mem_limit=memory,
        memswap_limit=memory,
        nano_cpus=int(config.cpus * 1e9),
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={config.tmpfs_mb}m,mode=1777"},
        shm_size=f"{config.shm_mb}m",
        working_dir="/tmp",
        log_config=LogConfig(type=LogConfig.types.NONE),
    )


class SandboxContainer:
    """A started container whose worker serves one job at a time over the attach socket."""

    def __init__(self, client: docker.DockerClient, config: SandboxConfig, image: str,
                 labels: Dict[str, str], name: str):
        """Create, attach and start the container, then wait for the worker's greeting."""
        self.client = client
        self.config = config
        self.name = name
        self.container = None
        self._sock: Optional[socket.socket] = None
        self._frames = bytearray()  # raw multiplexed bytes not yet parsed
        self._lines = bytearray()  # worker stdout bytes not yet split into lines
        self._stderr = bytearray()  # worker stderr tail, for diagnostics
        self.container = client.containers.create(**create_kwargs(config, image, labels, name))
        try:
            attached = client.api.attach_socket(
                self.container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            self._sock = getattr(attached, "_sock", attached)
            self._attached = attached  # keep the response object alive
            self.container.start()
            hello = self._read_message(time.monotonic() + config.start_timeout_s)
        except ContainerLost as exc:
            self.remove()
            raise ContainerLost(f"container {name} did not start: {exc}") from None
        except BaseException:
            self.remove()
            raise
        if hello.get("op") != "ready":
            self.remove()
            raise ContainerLost(f"container {name} greeted with {hello!r}")
        self.python = hello.get("python")

    @property
    def id(self) -> str:
        """The Docker container id."""
        return self.container.id if self.container is not None else ""

    def run(self, payload: Dict[str, Any], wait_s: float) -> Dict[str, Any]:
        """Send one job and return the worker's result; ContainerLost if none comes within ``wait_s``."""
        data = (json.dumps(payload) + "\n").encode("utf-8")
        try:
            self._sock.settimeout(wait_s)
            self._sock.sendall(data)
        except OSError as exc:
            raise ContainerLost(f"cannot send to the worker: {exc}") from None
        return self._read_message(time.monotonic() + wait_s)

    def _read_message(self, deadline: float) -> Dict[str, Any]:
        while True:
            cut = self._lines.find(b"\n")
            if cut >= 0:
                line = bytes(self._lines[:cut])
                del self._lines[: cut + 1]
                try:
                    return json.loads(line)
                except ValueError:
                    raise ContainerLost(f"worker wrote a non-JSON line: {line[:200]!r}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ContainerLost("worker did not answer in time (hung)")
            try:
                self._sock.settimeout(remaining)
                chunk = self._sock.recv(1 << 16)
            except socket.timeout:
                raise ContainerLost("worker did not answer in time (hung)") from None
            except OSError as exc:
                raise ContainerLost(f"attach stream broke: {exc}") from None
            if not chunk:
                raise ContainerLost(f"container exited ({self.death_reason()})")
            self._frames += chunk
            self._demux()

    def _demux(self) -> None:
        """Split Docker's multiplexed stream (8-byte headers) into worker stdout and stderr."""
        buf = self._frames
        while len(buf) >= 8:
            stream, size = buf[0], struct.unpack(">I", bytes(buf[4:8]))[0]
            if len(buf) < 8 + size:
                break
            payload = bytes(buf[8 : 8 + size])
            del buf[: 8 + size]
            if stream == 1:
                self._lines += payload
            else:
                self._stderr += payload
                del self._stderr[:-4096]

    def death_reason(self) -> str:
        """Why the container stopped, as far as the engine knows (OOM kill, exit code, worker stderr)."""
        parts = []
        try:
            self.container.reload()
            state = self.container.attrs.get("State", {})
            parts.append(f"status {state.get('Status')}, exit code {state.get('ExitCode')}")
            if state.get("OOMKilled"):
                parts.append("OOM-killed")
        except ENGINE_DOWN as exc:
            parts.append(f"engine unreachable: {str(exc)[:120]}")
        if self._stderr:
            parts.append("worker stderr: " + self._stderr[-400:].decode("utf-8", "replace").strip())
        return "; ".join(parts)

    def remove(self) -> None:
        """Close the stream and force-remove the container; never raises."""
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except ENGINE_DOWN:
                pass
            self.container = None
