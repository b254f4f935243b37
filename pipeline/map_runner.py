"""Drive a map stage: batch its input, skip what is committed, run, commit in order, count.

Batches are consecutive runs of ``batch_size`` input rows in the input's fixed
order, so a resumed run forms exactly the batches the first run formed; a
batch whose ids are all committed is skipped whole. Results are committed
in input order, so the committed parts are always a prefix of the batches
(which also makes ``output_limit`` deterministic: the first N kept rows).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from typing import Iterator

from pipeline.context import StageContext
from pipeline.ids import stable_id
from pipeline.inputs import InputSource
from pipeline.progress import progress
from pipeline.stage import MapStage
from pipeline.store import CommitLog

LIMIT_REASON = "over_limit"


def shard_of(row_id: str, count: int) -> int:
    """The shard (0..count-1) a row id belongs to: a hash of the id, the same on every machine."""
    return int(hashlib.sha256(row_id.encode()).hexdigest()[:12], 16) % count


def _batches(
    source: InputSource, size: int, done: set[str], bar, duplicates: Counter, shard: tuple[int, int] | None = None
) -> Iterator[list[dict]]:
    """Chunks of not-yet-committed rows (of this shard); duplicate ids after the first are counted and skipped."""
    seen: set[str] = set()
    chunk: list[dict] = []

    def flush() -> list[dict]:
        todo = [r for r in chunk if r["id"] not in done]
        bar.update(len(chunk) - len(todo))
        return todo

    for row in source.iter_rows():
        rid = row["id"]
        if shard is not None and shard_of(rid, shard[1]) != shard[0]:
            continue
        if rid in seen:
            duplicates["duplicate_input_id"] += 1
            continue
        seen.add(rid)
        chunk.append(row)
        if len(chunk) >= size:
            todo = flush()
            chunk = []
            if todo:
                yield todo
    if chunk:
        todo = flush()
        if todo:
            yield todo


def _unless_empty(batches: Iterator[list[dict]]) -> Iterator[list[dict]] | None:
    """The same batches, or None when there are none (so no model is loaded and no pool started for nothing)."""
    first = next(batches, None)
    return None if first is None else itertools.chain([first], batches)


def run_batches(stage: MapStage, ctx: StageContext, source: InputSource, shard: tuple[int, int] | None = None) -> None:
    """Run every uncommitted batch of ``stage`` (only this shard's rows when ``shard=(k, n)``)."""
    store = ctx.store
    store.remove_leftovers()
    log = store.commit_log()
    size = stage.config.batch_size or ctx.pipeline_config.run.batch_size
    limit = stage.output_limit()
    kept = log.rows
    duplicates: Counter = Counter()
    keep_dropped = ctx.pipeline_config.run.keep_dropped
    if log.parts:
        stage.log.info(
            "%s: resuming: %d input rows already committed in %d parts", stage.name, len(log.input_ids), log.parts
        )
    if limit is None or kept < limit:
        total = source.count() if shard is None else None
        bar = progress(total=total, desc=stage.name if shard is None else f"{stage.name} {shard[0]}/{shard[1]}",
                       unit="rows")
        bar.update(0)
        try:
            batches = _unless_empty(_batches(source, size, log.input_ids, bar, duplicates, shard))
            for batch, result, seconds in ctx.executor.map_ordered(stage, batches) if batches else ():
                rows, dropped = result.rows, result.dropped
                if limit is not None and kept + len(rows) > limit:
                    over = rows[limit - kept :]
                    rows = rows[: limit - kept]
                    dropped = dropped + [{**r, "drop_reason": LIMIT_REASON} for r in over]
                ids = [r["id"] for r in batch]
                stats = Counter(result.stats)
                stats["batch_seconds_x1000"] += int(seconds * 1000)
                store.write_batch(
                    stable_id(*ids), rows, stage.output_schema(), dropped, ids, stats, keep_dropped=keep_dropped
                )
                kept += len(rows)
                bar.update(len(batch))
                bar.set_postfix(kept=kept, refresh=False)
                if limit is not None and kept >= limit:
                    stage.log.info("%s: reached the limit of %d rows; stopping early", stage.name, limit)
                    break
        finally:
            bar.close()
    if duplicates:
        stage.log.warning("%s: %d input rows repeat an id already seen and were skipped", stage.name,
                          duplicates["duplicate_input_id"])


def finish_map_stage(stage: MapStage, ctx: StageContext) -> dict:
    """After all batches (of all shards): apply whole-output filters, then sum the parts into manifest fields."""
    store = ctx.store
    keep_dropped = ctx.pipeline_config.run.keep_dropped
    dropped = store.apply_drop_plan(lambda: stage.whole_output_drops(store), keep_dropped=keep_dropped)
    if dropped:
        stage.log.info("%s: %d rows dropped by whole-output filters", stage.name, dropped)
    return manifest_fields(store.commit_log())


def manifest_fields(log: CommitLog) -> dict:
    """The counting part of a manifest, summed from the committed parts."""
    stats = Counter(log.stats)
    batch_seconds = stats.pop("batch_seconds_x1000", 0) / 1000
    return {
        "rows_in": len(log.input_ids),
        "rows_out": log.rows,
        "dropped": dict(sorted(log.dropped.items())),
        "stats": dict(sorted(stats.items())),
        "parts": log.parts,
        "batch_seconds": round(batch_seconds, 3),
    }


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (a ``time.time()`` value), rounded."""
    return round(time.time() - start, 3)
