"""Connecting to the Docker engine, with a clear error when there is none."""

from __future__ import annotations

import os
from typing import Optional

import docker
import docker.errors
import requests.exceptions

from .errors import SandboxUnavailable

START_HINT = "start it with `sudo dockerd &` or `sudo systemctl start docker`"

#: Exceptions that mean "the engine is not there (any more)".
ENGINE_DOWN = (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError, OSError)


def connect(url: Optional[str] = None, timeout: float = 120.0) -> docker.DockerClient:
    """A client for the engine at ``url`` (None: DOCKER_HOST or the default socket), checked with a ping.

    Raises SandboxUnavailable with a one-line hint when no engine answers.
    """
    where = url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=url, timeout=timeout) if url else docker.from_env(timeout=timeout)
        client.ping()
    except ENGINE_DOWN as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SandboxUnavailable(
            f"no Docker engine reachable at {where} ({reason[:160]}); {START_HINT}"
        ) from None
    return client


def engine_alive(client: docker.DockerClient) -> bool:
    """Whether the engine still answers a ping."""
    try:
        return bool(client.ping())
    except ENGINE_DOWN:
        return False
