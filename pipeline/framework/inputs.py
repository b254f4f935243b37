"""Where a stage's input rows come from: its upstream stage's store, or ``--input``.

``--input`` accepts a Parquet file, a JSONL file, a folder of either (read in
name order), a stage's output folder (``work_dir/<stage>``: its kept parts only,
not its manifest, run records or ``dropped/``), or a Hub dataset id (``owner/name``,
optionally ``owner/name@revision`` and ``:split``). Rows without an ``id`` column
get one derived from their content, so a user's own data can enter the pipeline at
any stage. Local files are checked whole before the first batch runs: every JSONL
line must be UTF-8 JSON holding the stage's required columns.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from pipeline.framework.errors import InputError
from pipeline.framework.ids import stable_id
from pipeline.framework.jsonl import jsonl_records
from pipeline.framework.store import MANIFEST, RUN_FILE, StageStore

DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?(:[\w.-]+)?$")


def with_id(row: dict) -> dict:
    """Give a row an ``id`` derived from its content when it has none."""
    if row.get("id") in (None, ""):
        row = dict(row)
        row["id"] = stable_id(json.dumps(row, sort_keys=True, default=str))
    else:
        row["id"] = str(row["id"])
    return row


class InputSource(ABC):
    """An ordered, re-readable stream of input rows."""

    description: str

    @abstractmethod
    def columns(self) -> list[str]:
        """Column names available in every row."""

    @abstractmethod
    def iter_rows(self) -> Iterator[dict]:
        """Rows in a fixed order; each has an ``id``."""

    @abstractmethod
    def digest(self) -> str:
        """Changes when the input's content changes (used in the stage's fingerprint)."""

    def count(self) -> int | None:
        """Number of rows when cheaply known (for progress bars)."""
        return None

    def is_empty(self) -> bool:
        """Whether the input holds no rows at all (reads at most one row)."""
        return next(iter(self.iter_rows()), None) is None

    def require(self, needed: list[str], stage: str) -> None:
        """Fail with a one-line error naming the missing columns, before any work starts."""
        have = set(self.columns()) | {"id"}
        missing = [c for c in needed if c not in have]
        if missing:
            raise InputError(
                f"{self.description}: missing required column(s) {', '.join(missing)} for stage {stage} "
                f"(has: {', '.join(sorted(have - {'id'})) or 'nothing'})"
            )


class StoreSource(InputSource):
    """The kept rows of an upstream stage."""

    def __init__(self, store: StageStore):
        self.store = store
        self.description = f"stage {store.stage} output ({store.dir})"

    def columns(self) -> list[str]:
        parts = self.store.part_paths()
        return list(pq.read_schema(parts[0]).names) if parts else []

    def iter_rows(self) -> Iterator[dict]:
        return self.store.iter_rows()

    def digest(self) -> str:
        manifest = self.store.read_manifest() or {}
        return manifest.get("output_digest") or self.store.output_digest()

    def count(self) -> int | None:
        manifest = self.store.read_manifest() or {}
        return manifest.get("rows_out")

    def require(self, needed: list[str], stage: str) -> None:
        """An upstream that finished with no rows at all is a valid, empty input: nothing to check."""
        if not self.store.part_paths() and (self.store.read_manifest() or {}).get("rows_out") == 0:
            return
        super().require(needed, stage)


class FileSource(InputSource):
    """Parquet and JSONL files (one file, or every data file in a folder, by name)."""

    def __init__(self, path: Path):
        self.path = path
        self.description = f"--input {path}"
        self._rows: int | None = None
        if path.is_dir() and ((path / MANIFEST).is_file() or (path / RUN_FILE).is_file()):
            self.files = StageStore(path.parent, path.name).part_paths()  # a stage's output: its kept rows
            self.description = f"--input {path} (kept rows of a stage's output)"
        elif path.is_dir():
            self.files = sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file())
            if not self.files:
                raise InputError(f"--input {path}: the folder holds no .parquet or .jsonl files")
        else:
            if path.suffix not in DATA_SUFFIXES:
                raise InputError(f"--input {path}: expected a .parquet or .jsonl file (or a folder of them)")
            self.files = [path]

    def columns(self) -> list[str]:
        if not self.files:
            return []
        first = self.files[0]
        if first.suffix == ".parquet":
            return _parquet_columns(first)
        for _, row in jsonl_records(first):
            return list(row)
        return []

    def require(self, needed: list[str], stage: str) -> None:
        """Check every file whole before any work: each Parquet schema, and each JSONL line and its columns."""
        needed = [c for c in needed if c != "id"]
        rows = 0
        for path in self.files:
            if path.suffix == ".parquet":
                have = _parquet_columns(path)
                missing = [c for c in needed if c not in have]
                if missing:
                    raise InputError(f"{path}: missing required column(s) {', '.join(missing)} for stage {stage} "
                                     f"(has: {', '.join(c for c in have if c != 'id') or 'nothing'})")
                rows += pq.read_metadata(path).num_rows
                continue
            for lineno, row in jsonl_records(path):
                missing = [c for c in needed if c not in row]
                if missing:
                    raise InputError(f"{path}: line {lineno}: the row lacks required column(s) {', '.join(missing)} "
                                     f"for stage {stage}")
                rows += 1
        self._rows = rows

    def iter_rows(self) -> Iterator[dict]:
        for path in self.files:
            if path.suffix == ".parquet":
                try:
                    pf = pq.ParquetFile(path)
                    batches = pf.iter_batches(batch_size=1024)
                    for batch in batches:
                        for row in batch.to_pylist():
                            yield with_id(row)
                except InputError:
                    raise
                except Exception as exc:
                    raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
            else:
                for _, row in jsonl_records(path):
                    yield with_id(row)

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in self.files:
            st = path.stat()
            h.update(f"{path}\x1f{st.st_size}\x1f{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def count(self) -> int | None:
        if self._rows is not None:
            return self._rows
        if all(p.suffix == ".parquet" for p in self.files):
            return sum(pq.read_metadata(p).num_rows for p in self.files)
        return None

    def is_empty(self) -> bool:
        rows = self.count()
        return rows == 0 if rows is not None else super().is_empty()


def _parquet_columns(path: Path) -> list[str]:
    """The column names of a Parquet file; an unreadable file is a one-line error naming it."""
    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:
        raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None


class HubSource(InputSource):
    """A Hub dataset, streamed with ``datasets`` (needs network access to the Hub)."""

    def __init__(self, spec: str, data_dir: str | None = None):
        name, _, split = spec.partition(":")
        name, _, revision = name.partition("@")
        self.name, self.split, self.revision = name, split or "train", revision or None
        self.data_dir = data_dir
        self.description = f"Hub dataset {spec}" + (f" ({data_dir})" if data_dir else "")
        self._dataset = None

    def _load(self):
        if self._dataset is None:
            import datasets

            try:
                self._dataset = datasets.load_dataset(
                    self.name, data_dir=self.data_dir, split=self.split, revision=self.revision, streaming=True
                )
            except Exception as exc:
                raise InputError(f"{self.description}: cannot load ({type(exc).__name__}: {exc})") from None
        return self._dataset

    def columns(self) -> list[str]:
        ds = self._load()
        names = getattr(ds, "column_names", None)
        if names:
            return list(names)
        for row in ds:
            return list(row)
        return []

    def iter_rows(self) -> Iterator[dict]:
        for row in self._load():
            yield with_id(dict(row))

    def digest(self) -> str:
        return stable_id(self.name, self.revision, self.split, self.data_dir)


def open_input(spec: str | Path) -> InputSource:
    """Resolve an ``--input`` value to a source; a path that does not exist is a one-line error."""
    text = str(spec)
    path = Path(text)
    if path.exists():
        return FileSource(path)
    if HUB_ID.match(text) and not text.startswith((".", "/")) and Path(text).suffix not in DATA_SUFFIXES:
        return HubSource(text)
    raise InputError(f"--input {text}: no such file or folder (nor a Hub dataset id like owner/name)")
