"""Sources of source-code files: local folders of ``.py`` files, the local Python standard library,
Parquet/JSONL tables of files, and Hub datasets of files (The Stack).

Every source yields rows ``{"id", "path", "content"}`` in a fixed order; the id
is derived from the path and the content. :class:`SourceConfig` is the seeds
stage's ``source`` section, and :func:`corpus_source` the source it names.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import sysconfig
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field

from pipeline.framework.config import StrictModel
from pipeline.framework.errors import InputError
from pipeline.framework.ids import stable_id
from pipeline.framework.inputs import DATA_SUFFIXES, FileSource, HubSource, InputSource


def read_python_file(path: Path) -> str:
    """Read a Python file the way the interpreter does (coding cookie, universal newlines)."""
    data = path.read_bytes()
    try:
        return importlib.util.decode_source(data)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return data.decode("utf-8", errors="replace")


def stdlib_dir() -> Path:
    """This interpreter's standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


class LocalCodeFiles(InputSource):
    """Every ``.py`` file under some folders (or the files themselves), sorted, minus excluded globs."""

    def __init__(self, roots: list[Path], exclude: list[str], max_files: int | None = None, label: str = ""):
        self.roots = [Path(r) for r in roots]
        for root in self.roots:
            if not root.exists():
                raise InputError(f"seeds source: {root} does not exist")
        self.exclude = exclude
        self.max_files = max_files
        self.description = label or ", ".join(str(r) for r in self.roots)
        self._files: list[tuple[Path, str]] | None = None

    def files(self) -> list[tuple[Path, str]]:
        """(absolute path, path relative to its root) for every selected file, in order."""
        if self._files is None:
            found: list[tuple[Path, str]] = []
            for root in self.roots:
                if root.is_file():
                    candidates = [(root, root.name)]
                else:
                    candidates = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*.py"))]
                for path, rel in candidates:
                    if not any(fnmatch.fnmatch(rel, pat) for pat in self.exclude) and path.is_file():
                        found.append((path, rel))
            self._files = found[: self.max_files] if self.max_files else found
        return self._files

    def columns(self) -> list[str]:
        return ["path", "content"]

    def count(self) -> int | None:
        return len(self.files())

    def iter_rows(self) -> Iterator[dict]:
        for path, rel in self.files():
            content = read_python_file(path)
            yield {"id": stable_id(rel, content), "path": rel, "content": content}

    def digest(self) -> str:
        h = hashlib.sha256(f"{self.exclude}|{self.max_files}".encode())
        for path, rel in self.files():
            st = path.stat()
            h.update(f"{rel}\x1f{st.st_size}\x1f{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]


class TableCodeFiles(InputSource):
    """Files stored as rows of a table (Parquet/JSONL, or a Hub dataset), renamed to path/content."""

    def __init__(self, inner: InputSource, content_column: str, path_column: str | None, max_files: int | None):
        self.inner = inner
        self.content_column = content_column
        self.path_column = path_column
        self.max_files = max_files
        self.description = inner.description

    def columns(self) -> list[str]:
        return ["path", "content"]

    def require(self, needed: list[str], stage: str) -> None:
        self.inner.require([self.content_column], stage)

    def count(self) -> int | None:
        n = self.inner.count()
        return min(n, self.max_files) if (n is not None and self.max_files) else n

    def iter_rows(self) -> Iterator[dict]:
        for i, row in enumerate(self.inner.iter_rows()):
            if self.max_files and i >= self.max_files:
                return
            content = row.get(self.content_column)
            if not isinstance(content, str):
                raise InputError(f"{self.description}: row {i} has no text in column {self.content_column!r}")
            path = str(row.get(self.path_column) or "") if self.path_column else ""
            yield {"id": stable_id(path or row["id"], content), "path": path or row["id"], "content": content}

    def digest(self) -> str:
        return stable_id(self.inner.digest(), self.content_column, self.path_column, self.max_files)


def table_files(path: Path, content_column: str, path_column: str | None, max_files: int | None) -> TableCodeFiles:
    """Files from a Parquet/JSONL file or folder."""
    return TableCodeFiles(FileSource(path), content_column, path_column, max_files)


def hub_files(
    dataset: str, data_dir: str | None, split: str, revision: str | None,
    content_column: str, path_column: str | None, max_files: int | None,
) -> TableCodeFiles:
    """Files streamed from a Hub dataset such as The Stack (needs Hub access and, for gated sets, a token)."""
    spec = dataset + (f"@{revision}" if revision else "") + f":{split}"
    return TableCodeFiles(HubSource(spec, data_dir), content_column, path_column, max_files)


class SourceConfig(StrictModel):
    """Where the code files come from."""

    kind: Literal["stdlib", "local", "files", "hub"] = Field(
        default="stdlib",
        description="stdlib: this interpreter's standard library; local: folders of .py files (paths); "
        "files: Parquet/JSONL tables of files (paths); hub: a Hub dataset streamed with datasets.",
    )
    paths: list[Path] = Field(default_factory=list, description="Folders or files for kind local/files.")
    exclude: list[str] = Field(
        default_factory=lambda: ["site-packages/*", "*/site-packages/*"],
        description="Glob patterns (relative paths) of .py files to skip, for kind stdlib/local.",
    )
    dataset: str = Field(
        default="bigcode/the-stack-dedup", description="Hub dataset id, for kind hub (The Stack v1 deduplicated, as published)."
    )
    data_dir: str | None = Field(default="data/python", description="Folder inside the Hub dataset.")
    split: str = Field(default="train", description="Split of the Hub dataset.")
    revision: str | None = Field(default=None, description="Revision (commit/tag) of the Hub dataset.")
    content_column: str = Field(default="content", description="Column holding the file text (files/hub).")
    path_column: str | None = Field(
        default="max_stars_repo_path", description="Column holding the file path (files/hub), if any."
    )
    max_files: int | None = Field(default=None, gt=0, description="Read at most this many files.")


def corpus_source(src: SourceConfig, override: str | None = None) -> InputSource:
    """The corpus ``src`` configures, or ``override`` (``--input``: a folder of .py files, or tables of files)."""
    if override is not None:
        path = Path(override)
        if not path.exists():
            raise InputError(f"--input {override}: no such file or folder")
        if path.is_file() and path.suffix in DATA_SUFFIXES or (
            path.is_dir() and any(p.suffix in DATA_SUFFIXES for p in path.rglob("*"))
        ):
            return table_files(path, src.content_column, src.path_column, src.max_files)
        return LocalCodeFiles([path], src.exclude, src.max_files)
    if src.kind == "stdlib":
        return LocalCodeFiles([stdlib_dir()], src.exclude, src.max_files, label=f"Python stdlib {stdlib_dir()}")
    if src.kind == "local":
        if not src.paths:
            raise InputError("stages.seeds.source.paths: give at least one folder for kind local")
        return LocalCodeFiles(src.paths, src.exclude, src.max_files)
    if src.kind == "files":
        if len(src.paths) != 1:
            raise InputError("stages.seeds.source.paths: give exactly one file or folder for kind files")
        return table_files(src.paths[0], src.content_column, src.path_column, src.max_files)
    return hub_files(
        src.dataset, src.data_dir, src.split, src.revision, src.content_column, src.path_column, src.max_files
    )
