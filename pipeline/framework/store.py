"""A stage's output on disk: Parquet parts written atomically, and a manifest written last.

Layout of ``work_dir/<stage>/``::

    part-<key>.parquet        kept rows of one input batch
    dropped/part-<key>.parquet  dropped rows of the same batch, each with ``drop_reason``
    _run.json                 the fingerprint the parts belong to (written when the stage starts)
    manifest.json             written last; its presence means the stage finished

Each kept part records in its Parquet metadata the ids of the input rows its
batch covered, the drop counts by reason and the stage's counters. That record
is the commit: a batch is done exactly when its kept part exists, so a rerun
after a crash skips those input ids and recounts everything from the parts.
The dropped part is written first; one left without its kept part (a crash
between the two writes) is removed when the stage resumes. A stage that needs
its whole input at once writes its output through :class:`PartWriter`, which
cuts it into parts recorded the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.framework.errors import StoreError
from pipeline.framework.ids import stable_id

META_KEY = b"selfcodealign"
PART_ROWS = 10_000
"""Input (or kept) rows per part of a whole stage's output (see :class:`PartWriter`)."""
MANIFEST = "manifest.json"
RUN_FILE = "_run.json"
DROP_PLAN = "_drop_plan.json"


@dataclass
class CommitLog:
    """What the committed parts of a stage add up to."""

    input_ids: set[str] = field(default_factory=set)
    rows: int = 0
    dropped: Counter = field(default_factory=Counter)
    stats: Counter = field(default_factory=Counter)
    parts: int = 0

    def manifest_fields(self) -> dict:
        """The counting part of a manifest: rows in and out, drops by reason, counters, parts, batch time."""
        stats = Counter(self.stats)
        batch_seconds = stats.pop("batch_seconds_x1000", 0) / 1000
        return {
            "rows_in": len(self.input_ids),
            "rows_out": self.rows,
            "dropped": dict(sorted(self.dropped.items())),
            "stats": dict(sorted(stats.items())),
            "parts": self.parts,
            "batch_seconds": round(batch_seconds, 3),
        }


def _tmp_name(path: Path) -> Path:
    """A temporary sibling of ``path`` named after this host and process (so leftovers can be told apart)."""
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _leftover(tmp: Path) -> bool:
    """Whether a temporary file was left by a dead writer on this host (live writers' files are kept)."""
    host, _, pid = tmp.name.rpartition(".tmp-")[2].rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    tmp = _tmp_name(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    """Write a Parquet file atomically (temporary name, fsync, rename)."""
    tmp = _tmp_name(path)
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def ensure_work_dir(work_dir: Path) -> None:
    """Create the work dir when needed and check that a file can be written in it, before any stage starts.

    A folder that cannot be created (``/proc/x``, a path under a file) or written (read-only) is a
    one-line :class:`StoreError` naming ``run.work_dir``; nothing inside an existing work dir is touched.
    """
    path = Path(work_dir)
    action = "create"
    try:
        path.mkdir(parents=True, exist_ok=True)
        action = "write in"
        probe = _tmp_name(path / ".write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"run.work_dir {path}: cannot {action} it ({exc.strerror or exc})") from None


def rows_to_table(rows: list[dict], schema: pa.Schema | None = None) -> pa.Table:
    """Build an Arrow table from row dicts; without a schema, the union of all rows' keys is used."""
    if schema is not None:
        return pa.Table.from_pylist(rows, schema=schema)
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows])


class StageStore:
    """The output folder of one stage."""

    def __init__(self, work_dir: Path, stage: str):
        self.stage = stage
        self.dir = Path(work_dir) / stage
        self.dropped_dir = self.dir / "dropped"

    # -- paths ---------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        """Where the manifest lives."""
        return self.dir / MANIFEST

    def part_paths(self) -> list[Path]:
        """Kept part files, in a fixed order (by name)."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("part-*.parquet"))

    def dropped_paths(self) -> list[Path]:
        """Dropped part files, by name."""
        if not self.dropped_dir.is_dir():
            return []
        return sorted(self.dropped_dir.glob("part-*.parquet"))

    def exists(self) -> bool:
        """Whether the stage has written anything at all."""
        return self.manifest_path.exists() or bool(self.part_paths())

    # -- run bookkeeping -------------------------------------------------------
    def begin(self, fingerprint: str, info: dict | None = None) -> None:
        """Record which fingerprint the parts about to be written belong to."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / RUN_FILE, {"fingerprint": fingerprint, **(info or {})})

    def run_info(self) -> dict | None:
        """The record written by :meth:`begin`, or None."""
        path = self.dir / RUN_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable run record ({exc}); delete it to start the stage afresh") from None

    def clear(self) -> None:
        """Remove everything the stage wrote (used for --force and for stale stages)."""
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def reset_parts(self) -> None:
        """Remove every part (kept and dropped) but keep the run record: for stages that redo all their work."""
        for path in self.part_paths():
            path.unlink()
        if self.dropped_dir.exists():
            shutil.rmtree(self.dropped_dir)
        (self.dir / DROP_PLAN).unlink(missing_ok=True)

    def remove_leftovers(self) -> int:
        """Delete temporary files of dead writers and dropped parts without their kept part; return how many.

        A dropped part whose kept part is missing is an orphan only once its writer is gone; while other
        shards run side by side, the newest orphans may be theirs, so only parts older than a minute go.
        """
        import time

        removed = 0
        for folder in (self.dir, self.dropped_dir):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp-*"):
                    if _leftover(tmp):
                        tmp.unlink(missing_ok=True)
                        removed += 1
        kept = {p.name for p in self.part_paths()}
        for orphan in self.dropped_paths():
            if orphan.name not in kept and time.time() - orphan.stat().st_mtime > 60:
                orphan.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- writing ---------------------------------------------------------------
    def write_batch(
        self,
        key: str,
        rows: list[dict],
        schema: pa.Schema,
        dropped: list[dict],
        input_ids: list[str],
        stats: dict[str, int] | None = None,
        keep_dropped: bool = True,
    ) -> Path:
        """Commit one batch: dropped rows first, then the kept part whose metadata records the batch."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{key}.parquet"
        if dropped and keep_dropped:
            self.dropped_dir.mkdir(exist_ok=True)
            _atomic_write_table(self.dropped_dir / name, rows_to_table(dropped))
        record = {
            "input_ids": list(input_ids),
            "rows": len(rows),
            "dropped": dict(Counter(r["drop_reason"] for r in dropped)),
            "stats": dict(stats or {}),
        }
        try:
            table = rows_to_table(rows, schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
            raise StoreError(f"stage {self.stage}: a row does not fit the stage's output schema: {exc}") from exc
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(record)})
        path = self.dir / name
        _atomic_write_table(path, table)
        return path

    def apply_drop_plan(self, compute_plan, keep_dropped: bool = True) -> int:
        """Drop rows already committed, for filters that need the whole output (near-dedup).

        ``compute_plan()`` returns ``{row id: reason}``. The plan is saved before
        any part changes, so a crash half-way is finished with the same plan on
        the next run rather than recomputed over a half-filtered output. Each
        affected part is rewritten atomically: its dropped rows go to its dropped
        part (never twice) and its record's counts move from kept to dropped.
        Returns the number of rows dropped by this call.
        """
        import pyarrow.compute as pc

        plan_path = self.dir / DROP_PLAN
        if plan_path.exists():
            plan = json.loads(plan_path.read_text())
        else:
            plan = compute_plan()
            atomic_write_json(plan_path, plan)
        if not plan:
            return 0
        wanted = pa.array(sorted(plan), pa.string())
        total = 0
        for path in self.part_paths():
            record = self.part_record(path)
            table = pq.read_table(path)
            mask = pc.is_in(table["id"], value_set=wanted)
            removed = table.filter(mask)
            if removed.num_rows == 0:
                continue
            rows = removed.to_pylist()
            if keep_dropped:
                self.dropped_dir.mkdir(exist_ok=True)
                dropped_path = self.dropped_dir / path.name
                existing = pq.read_table(dropped_path).to_pylist() if dropped_path.exists() else []
                present = {r.get("id") for r in existing}
                extra = [{**r, "drop_reason": plan[r["id"]]} for r in rows if r["id"] not in present]
                if extra:
                    _atomic_write_table(dropped_path, rows_to_table(existing + extra))
            record["rows"] -= len(rows)
            for row in rows:
                reason = plan[row["id"]]
                record["dropped"][reason] = record["dropped"].get(reason, 0) + 1
            kept = table.filter(pc.invert(mask)).replace_schema_metadata({META_KEY: json.dumps(record)})
            _atomic_write_table(path, kept)
            total += len(rows)
        return total

    def mark_shard_done(self, index: int, count: int, fingerprint: str) -> None:
        """Record that shard ``index`` of ``count`` finished all its batches."""
        atomic_write_json(self.dir / f"_shard-{index}-of-{count}.json", {"fingerprint": fingerprint})

    def shards_done(self, count: int, fingerprint: str) -> set[int]:
        """Indexes of the finished shards of a ``count``-way run of ``fingerprint``."""
        done = set()
        for path in self.dir.glob(f"_shard-*-of-{count}.json"):
            if json.loads(path.read_text()).get("fingerprint") == fingerprint:
                done.add(int(path.name.split("-")[1]))
        return done

    def shard_counts(self, fingerprint: str) -> set[int]:
        """The shard counts (N of K/N) with at least one finished shard of ``fingerprint``."""
        counts = set()
        for path in self.dir.glob("_shard-*-of-*.json"):
            if json.loads(path.read_text()).get("fingerprint") == fingerprint:
                counts.add(int(path.stem.split("-of-")[1]))
        return counts

    def write_manifest(self, manifest: dict) -> None:
        """Write the manifest; this is the last write of a finished stage."""
        atomic_write_json(self.manifest_path, manifest)

    # -- reading ---------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        """The manifest, or None when the stage has not finished."""
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"{self.manifest_path}: corrupted manifest ({exc}); rerun the stage with --force"
            ) from None

    def part_record(self, path: Path) -> dict:
        """The commit record stored in a part's metadata (reads only the file footer)."""
        try:
            meta = pq.read_metadata(path).metadata or {}
            return json.loads(meta[META_KEY])
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise StoreError(
                f"{path}: corrupted part file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "move it away and rerun the stage to redo its batch"
            ) from None

    def commit_log(self) -> CommitLog:
        """Sum the records of every committed part."""
        log = CommitLog()
        for path in self.part_paths():
            record = self.part_record(path)
            log.input_ids.update(record["input_ids"])
            log.rows += record["rows"]
            log.dropped.update(record["dropped"])
            log.stats.update(record["stats"])
            log.parts += 1
        return log

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """All kept rows as one Arrow table, parts in name order."""
        tables = []
        for path in self.part_paths():
            try:
                tables.append(pq.read_table(path, columns=columns))
            except Exception as exc:
                raise StoreError(f"{path}: corrupted part file ({type(exc).__name__}); move it away and rerun") from None
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default").replace_schema_metadata(None)

    def read_dropped(self) -> pa.Table:
        """All dropped rows (with ``drop_reason``) as one table."""
        tables = [pq.read_table(p) for p in self.dropped_paths()]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="permissive")

    def iter_rows(self, columns: list[str] | None = None, batch_rows: int = 1024) -> Iterator[dict]:
        """Stream kept rows as dicts, part by part, without loading the whole stage."""
        for path in self.part_paths():
            try:
                pf = pq.ParquetFile(path)
                for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                    yield from batch.to_pylist()
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"{path}: corrupted part file ({type(exc).__name__}); move it away and rerun") from None

    def output_digest(self, ignore: Iterable[str] = ()) -> str:
        """A digest of the kept rows, whatever parts they sit in (batch sizes and shards do not change it).

        Each row is hashed on its own and the hashes are summed, so the digest depends on the set of rows,
        not on how they were batched; timings kept in part metadata are not part of it, nor are the
        columns named in ``ignore`` (a stage's timing columns).
        """
        import hashlib

        skip = set(ignore)
        total = 0
        for path in self.part_paths():
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    for name in skip:
                        row.pop(name, None)
                    line = json.dumps(row, sort_keys=True, default=str).encode("utf-8", "surrogatepass")
                    total += int.from_bytes(hashlib.blake2b(line, digest_size=16).digest(), "big")
        return f"{total % 2**128:032x}"[:16]


class PartWriter:
    """Writes a whole stage's output in parts: kept rows, dropped rows and counters, each part recording its inputs.

    The stage hands over its work unit by unit with :meth:`add` (an input row and what became of it, a
    group of input rows and their pairs, ...); a part holds at most about ``part_rows`` input ids or kept
    rows and is written once the next unit would overfill it, or by :meth:`close`. A unit with neither
    (drops and counters of the run as a whole) joins the part being filled. Counters add up per part,
    zeros included, so the manifest lists every counter the stage keeps. A part is named after the input
    ids it covers (after its place and rows when it covers none).
    """

    def __init__(self, store: "StageStore", schema: pa.Schema, keep_dropped: bool = True,
                 part_rows: int = PART_ROWS):
        self.store, self.schema, self.keep_dropped, self.part_rows = store, schema, keep_dropped, part_rows
        self.parts = 0
        self._empty()

    def _empty(self) -> None:
        self._ids: list[str] = []
        self._kept: list[dict] = []
        self._dropped: list[dict] = []
        self._stats: dict[str, int] = {}

    def add(self, input_ids: Iterable[str] = (), kept: Iterable[dict] = (), dropped: Iterable[dict] = (),
            stats: dict[str, int] | None = None) -> None:
        """One unit of work: the input ids it covers, its kept rows, its dropped rows (each with ``drop_reason``)
        and its counters."""
        input_ids, kept = list(input_ids), list(kept)
        if (input_ids or kept) and max(len(self._ids), len(self._kept)) >= self.part_rows:
            self._flush()
        self._ids += input_ids
        self._kept += kept
        self._dropped += dropped
        for name, value in (stats or {}).items():
            self._stats[name] = self._stats.get(name, 0) + value

    def _flush(self) -> None:
        """Write the part being filled."""
        key = stable_id(*self._ids) if self._ids else stable_id("part", self.parts, *(r.get("id") for r in self._kept))
        self.store.write_batch(key, self._kept, self.schema, self._dropped, self._ids, self._stats,
                               keep_dropped=self.keep_dropped)
        self.parts += 1
        self._empty()

    def close(self) -> dict:
        """Write the last part (if anything is pending) and return the manifest fields the parts add up to."""
        if self._ids or self._kept or self._dropped or self._stats:
            self._flush()
        return self.store.commit_log().manifest_fields()
