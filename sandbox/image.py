"""Building the sandbox image, from sandbox/Dockerfile or offline (debootstrap + docker import).

The tag follows the content: ``selfcodealign-sandbox:<hash>`` where the hash covers
the Dockerfile, the worker source and the offline recipe, so any change to them
gives a new tag (and a rebuild on next use). The offline build first makes a base
image ``selfcodealign-sandbox-base:<hash of the offline recipe>`` (a Debian
root filesystem with python3, about a minute, done once), then builds the same
Dockerfile on top of it with ``BASE`` pointing there; changing only the worker
rebuilds in a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import docker
import docker.errors

from .config import SandboxConfig
from .engine import ENGINE_DOWN, connect
from .errors import SandboxError

log = logging.getLogger("sandbox")

HERE = Path(__file__).resolve().parent
DOCKERFILE = HERE / "Dockerfile"
WORKER = HERE / "worker.py"
IMAGE_REPO = "selfcodealign-sandbox"
BASE_REPO = "selfcodealign-sandbox-base"
REGISTRY_BASE = "python:3.12-slim"
LABEL = "selfcodealign.sandbox"

# The offline recipe; every value here is part of the image hash.
OFFLINE_SUITE = "bookworm"
OFFLINE_VARIANT = "minbase"
OFFLINE_PACKAGES = ("python3",)
OFFLINE_PRUNE = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
    "var/cache/apt/archives", "var/lib/apt/lists",
)


def offline_recipe() -> str:
    """The offline base recipe as text (what the base image's hash covers)."""
    return (
        f"debootstrap --variant={OFFLINE_VARIANT} --include={','.join(OFFLINE_PACKAGES)} {OFFLINE_SUITE}\n"
        f"prune {' '.join(OFFLINE_PRUNE)}\n"
    )


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:12]


def image_tag() -> str:
    """``selfcodealign-sandbox:<hash of Dockerfile + worker.py + offline recipe>``."""
    return f"{IMAGE_REPO}:{_digest(DOCKERFILE.read_bytes(), WORKER.read_bytes(), offline_recipe().encode())}"


def base_tag() -> str:
    """Tag of the offline Debian base image: ``selfcodealign-sandbox-base:<hash of the recipe>``."""
    return f"{BASE_REPO}:{_digest(offline_recipe().encode())}"


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    """Whether the engine has an image called ``tag``."""
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def registry_reachable(client: docker.DockerClient) -> bool:
    """Whether the Dockerfile's base image is local or its registry answers (asked through the engine)."""
    if image_exists(client, REGISTRY_BASE):
        return True
    try:
        client.api.inspect_distribution(REGISTRY_BASE)
        return True
    except docker.errors.APIError as exc:
        log.info("registry not reachable for %s: %s", REGISTRY_BASE, str(exc.explanation or exc)[:200])
        return False


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialise builds between processes on this machine."""
    path = Path(tempfile.gettempdir()) / "selfcodealign-sandbox-build.lock"
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _context_tar() -> io.BytesIO:
    """The build context: the Dockerfile and the worker, nothing else."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in (DOCKERFILE, WORKER):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _docker_build(client: docker.DockerClient, tag: str, base: str, method: str, force: bool = False) -> None:
    try:
        client.images.build(
            fileobj=_context_tar(), custom_context=True, tag=tag, rm=True, forcerm=True, nocache=force,
            pull=force and method == "dockerfile", buildargs={"BASE": base},
            labels={LABEL: "1", f"{LABEL}.build": method},
        )
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log)[-800:]
        hint = ""
        if method == "dockerfile" and ("dial tcp" in tail or "pull access" in tail or "no such host" in tail):
            hint = " (no registry reachable? build offline: `python -m sandbox build --offline`)"
        raise SandboxError(f"building {tag} from {DOCKERFILE} failed{hint}: {exc.msg}\n{tail}") from None
    except docker.errors.APIError as exc:
        raise SandboxError(f"building {tag} failed: {exc.explanation or exc}") from None


def build_offline_base(client: docker.DockerClient, mirror: str, force: bool = False) -> str:
    """Make the Debian+python3 base image with debootstrap and ``docker import``; returns its tag.

    An existing base is reused unless ``force`` (e.g. to pick up Debian security updates).
    """
    tag = base_tag()
    if image_exists(client, tag) and not force:
        return tag
    if shutil.which("debootstrap") is None:
        raise SandboxError(
            "offline build needs debootstrap: `sudo apt-get install debootstrap` "
            "(or build from sandbox/Dockerfile with `python -m sandbox build --dockerfile` where a registry is reachable)"
        )
    if os.geteuid() != 0:
        raise SandboxError("offline build runs debootstrap and needs root: run `sudo python -m sandbox build --offline`")
    log.info("building offline base image %s with debootstrap from %s (about a minute)", tag, mirror)
    work = Path(tempfile.mkdtemp(prefix="selfcodealign-rootfs-"))
    rootfs = work / "rootfs"
    try:
        cmd = [
            "debootstrap", f"--variant={OFFLINE_VARIANT}", f"--include={','.join(OFFLINE_PACKAGES)}",
            OFFLINE_SUITE, str(rootfs), mirror,
        ]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise SandboxError(f"debootstrap failed (exit {proc.returncode}):\n{proc.stdout[-1500:]}")
        for rel in OFFLINE_PRUNE:
            target = rootfs / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir()
        tar_path = work / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar_path), "."], check=True)
        repo, _, version = tag.partition(":")
        client.api.import_image_from_file(str(tar_path), repository=repo, tag=version)
    except subprocess.CalledProcessError as exc:
        raise SandboxError(f"packing the root filesystem failed: {exc}") from None
    except docker.errors.APIError as exc:
        raise SandboxError(f"docker import of the root filesystem failed: {exc.explanation or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not image_exists(client, tag):
        raise SandboxError(f"docker import did not produce {tag}")
    return tag


def build_image(
    config: Optional[SandboxConfig] = None,
    method: Optional[str] = None,
    client: Optional[docker.DockerClient] = None,
    force: bool = False,
) -> str:
    """Build the sandbox image (``method``: auto/offline/dockerfile; default from config); returns its tag.

    ``force`` rebuilds from scratch: a fresh offline base / a fresh pull, no layer cache.
    """
    config = config or SandboxConfig()
    client = client or connect(config.docker_url)
    method = method or config.build
    tag = image_tag()
    with _build_lock():
        if method == "auto":
            method = "dockerfile" if registry_reachable(client) else "offline"
            log.info("no registry reachable: building offline" if method == "offline"
                     else "registry reachable: building from %s" % DOCKERFILE)
        try:
            if method == "offline":
                base = build_offline_base(client, config.debian_mirror, force=force)
            elif method == "dockerfile":
                base = REGISTRY_BASE
            else:
                raise SandboxError(f"unknown build method {method!r} (auto, offline, dockerfile)")
            log.info("building sandbox image %s (%s)", tag, method)
            _docker_build(client, tag, base, method, force=force)
        except ENGINE_DOWN as exc:
            if isinstance(exc, SandboxError):
                raise
            raise SandboxError(f"Docker engine failed while building {tag}: {exc}") from None
    return tag


def ensure_image(config: Optional[SandboxConfig] = None, client: Optional[docker.DockerClient] = None) -> str:
    """Return the image tag to run, building the image first when it is missing (and logging that)."""
    config = config or SandboxConfig()
    client = client or connect(config.docker_url)
    if config.image:
        if image_exists(client, config.image):
            return config.image
        if config.image != image_tag():
            raise SandboxError(f"sandbox image {config.image} not found (set image: null to build the default)")
    tag = image_tag()
    if image_exists(client, tag):
        return tag
    with _build_lock():
        if image_exists(client, tag):  # another process built it meanwhile
            return tag
    log.warning("sandbox image %s is missing: building it now", tag)
    return build_image(config, client=client)


def remove_old_images(client: docker.DockerClient) -> list:
    """Remove ``selfcodealign-sandbox:*`` tags other than the current recipe's (and bases but the current one)."""
    keep = {image_tag(), base_tag()}
    removed = []
    for repo in (IMAGE_REPO, BASE_REPO):
        for image in client.images.list(name=repo):
            for tag in image.tags:
                if tag.startswith(repo + ":") and tag not in keep:
                    try:
                        client.images.remove(tag)
                        removed.append(tag)
                    except docker.errors.APIError as exc:  # e.g. still used by a container
                        log.warning("could not remove %s: %s", tag, exc.explanation or exc)
    return removed
