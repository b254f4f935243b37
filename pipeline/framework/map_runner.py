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
import json
import time
from collections import Counter, deque
from typing import Iterator

from pipeline.framework.context import StageContext
from pipeline.framework.ids import stable_id
from pipeline.framework.inputs import InputSource
from pipeline.framework.progress import progress
from pipeline.framework.stage import MapStage

LIMIT_REASON = "over_limit"
DUPLICATE_REASON = "duplicate_input_id"


def shard_of(row_id: str, count: int) -> int:
    """The shard (0..count-1) a row id belongs to: a hash of the id, the same on every machine."""
    return int(hashlib.sha256(row_id.encode()).hexdigest()[:12], 16) % count


def _batches(
    source: InputSource, size: int, done: set[str], bar, shard: tuple[int, int] | None = None
) -> Iterator[tuple[list[dict], list[dict]]]:
    """``(rows to run, repeated rows)`` per chunk of ``size`` distinct ids (of this shard), not yet committed.

    A row whose id was already seen is not run: it belongs to the chunk before the next new id (the last
    chunk at the end), and is committed, as a dropped row, with that chunk, so a resumed run records it
    exactly when it runs its chunk again.
    """
    seen: set[str] = set()
    chunk: list[dict] = []
    repeats: list[dict] = []
    for row in source.iter_rows():
        rid = row["id"]
        if shard is not None and shard_of(rid, shard[1]) != shard[0]:
            continue
        if rid in seen:
            repeats.append(row)
            continue
        if len(chunk) >= size:
            yield from _todo(chunk, repeats, done, bar)
            chunk, repeats = [], []
        seen.add(rid)
        chunk.append(row)
    if chunk:
        yield from _todo(chunk, repeats, done, bar)


def _todo(chunk: list[dict], repeats: list[dict], done: set[str], bar) -> Iterator[tuple[list[dict], list[dict]]]:
    """The chunk's rows not committed yet, with its repeated rows; nothing when the whole chunk is committed."""
    todo = [r for r in chunk if r["id"] not in done]
    bar.update(len(chunk) - len(todo) + (0 if todo else len(repeats)))
    if todo:
        yield todo, [{"id": r["id"], "duplicate_row": json.dumps(r, sort_keys=True, default=str),
                      "drop_reason": DUPLICATE_REASON} for r in repeats]


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
    repeats: deque[list[dict]] = deque()  # the repeated rows of each batch handed out, in order
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
            def batches() -> Iterator[list[dict]]:
                for todo, repeated in _batches(source, size, log.input_ids, bar, shard):
                    repeats.append(repeated)
                    yield todo

            batches_or_none = _unless_empty(batches())
            for batch, result, seconds in (ctx.executor.map_ordered(stage, batches_or_none)
                                           if batches_or_none else ()):
                repeated = repeats.popleft()
                rows, dropped = result.rows, result.dropped + repeated
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
                bar.update(len(batch) + len(repeated))
                bar.set_postfix(kept=kept, refresh=False)
                if limit is not None and kept >= limit:
                    stage.log.info("%s: reached the limit of %d rows; stopping early", stage.name, limit)
                    break
        finally:
            bar.close()
    repeated = store.commit_log().dropped.get(DUPLICATE_REASON, 0)
    if repeated:
        stage.log.warning("%s: %d input rows repeat an id already seen: dropped as %s", stage.name, repeated,
                          DUPLICATE_REASON)


def finish_map_stage(stage: MapStage, ctx: StageContext) -> dict:
    """After all batches (of all shards): apply whole-output filters, then sum the parts into manifest fields."""
    store = ctx.store
    keep_dropped = ctx.pipeline_config.run.keep_dropped
    dropped = store.apply_drop_plan(lambda: stage.whole_output_drops(store), keep_dropped=keep_dropped)
    if dropped:
        stage.log.info("%s: %d rows dropped by whole-output filters", stage.name, dropped)
    return store.commit_log().manifest_fields()


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (a ``time.time()`` value), rounded."""
    return round(time.time() - start, 3)
