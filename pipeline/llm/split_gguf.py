"""A GGUF file shipped on PyPI in several packages, put back together and verified.

Some models are too big for one PyPI wheel, so they ship as numbered parts,
one package each (each holding ``<module>/data/<file>``). :func:`assemble`
concatenates the parts in order into one file under the cache directory,
checking every part's size and sha256 on the way and the whole file's size
and sha256 at the end. The file is written under a temporary name and
renamed when it checks out, so a crash or a corrupt part never leaves a
file that looks complete. A stamp beside it (size and modification time of
the verified file) lets later calls skip re-hashing half a gigabyte.

Every failure is a one-line :class:`BackendError` naming the package to
(re)install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.llm.base import BackendError

_BLOCK = 1 << 20


@dataclass(frozen=True)
class Part:
    """One piece of a split model: the PyPI package, its import name, its data file, size and sha256."""

    package: str
    module: str
    data_file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF model split over PyPI packages, with the size and sha256 of the whole file."""

    alias: str
    file_name: str
    parts: tuple[Part, ...]
    size: int
    sha256: str
    install_hint: str

    def locate(self, part: Part) -> Path:
        """The installed data file of ``part``; a one-line error naming the package when it is missing."""
        spec = importlib.util.find_spec(part.module)
        if spec is None or not spec.submodule_search_locations:
            raise BackendError(
                f"model {self.alias!r} needs the package {part.package} ({self.install_hint}): it is not installed"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / part.data_file
        if not path.is_file():
            raise BackendError(f"package {part.package} is installed but lacks {path}: reinstall it ({self.install_hint})")
        if path.stat().st_size != part.size:
            raise BackendError(
                f"package {part.package} is corrupt: {path} has {path.stat().st_size} bytes, expected {part.size}; "
                f"reinstall it ({self.install_hint})"
            )
        return path


def assemble(model: SplitGGUF, cache_dir: str | Path) -> Path:
    """Return the verified GGUF file of ``model`` under ``cache_dir``, assembling it first if needed."""
    target = Path(cache_dir) / model.file_name
    if _stamp_matches(target):
        return target
    sources = [model.locate(part) for part in model.parts]  # every part present, before writing anything
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        whole = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part, source in zip(model.parts, sources):
                piece = hashlib.sha256()
                with source.open("rb") as f:
                    while block := f.read(_BLOCK):
                        piece.update(block)
                        whole.update(block)
                        out.write(block)
                if piece.hexdigest() != part.sha256:
                    raise BackendError(
                        f"package {part.package} is corrupt: {source} has sha256 {piece.hexdigest()[:16]}..., "
                        f"expected {part.sha256[:16]}...; reinstall it ({model.install_hint})"
                    )
        size = tmp.stat().st_size
        if size != model.size or whole.hexdigest() != model.sha256:
            raise BackendError(
                f"model {model.alias!r} assembled to {size} bytes with sha256 {whole.hexdigest()[:16]}..., "
                f"expected {model.size} bytes and {model.sha256[:16]}...; reinstall its packages ({model.install_hint})"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is readable like any model file
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, model.sha256)
    return target


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _stamp_matches(target: Path) -> bool:
    """True when ``target`` exists and is the very file that was verified (same size and mtime)."""
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns


def _write_stamp(target: Path, sha256: str) -> None:
    st = target.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    tmp = _stamp_path(target).with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, _stamp_path(target))
