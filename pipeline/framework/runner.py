"""Order the stages, decide what is done / interrupted / stale / missing, and run what is asked.

A stage is *done* when its manifest exists, its fingerprint (its config, the
run seed, the model settings it uses, its prompt files, its code version)
matches the current one, and the input it read is unchanged (the upstream
stage's output digest, or the ``--input`` it was given). A stage with parts
but no manifest is *interrupted* and resumes; any other finished stage is
*stale* and is rerun from scratch, never silently reused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from pipeline.framework.config import fingerprint_view
from pipeline.framework.context import StageContext
from pipeline.framework.errors import PipelineError, StageNotBuiltError
from pipeline.framework.executors import create_executor
from pipeline.framework.map_runner import elapsed_since, finish_map_stage, run_batches
from pipeline.framework.processes import is_main_process, wait_for_everyone, world_size
from pipeline.framework.stage import MapStage, PlannedStage, Stage, WholeStage
from pipeline.framework.store import StageStore
from pipeline.framework.summary import stage_summary

log = logging.getLogger("pipeline.runner")

DONE, INTERRUPTED, STALE, MISSING, NOT_BUILT = "done", "interrupted", "stale", "missing", "not built"


@dataclass
class StageState:
    """The state of one stage in the work dir, and why."""

    name: str
    state: str
    why: str = ""
    manifest: dict | None = field(default=None, repr=False)


def _file_digest(path) -> str:
    """sha256 of a file's bytes (short)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _input_still_exists(spec: str) -> bool:
    """Whether an --input given earlier can still be read (a local path that exists, or a Hub id)."""
    from pathlib import Path

    from pipeline.framework.inputs import HUB_ID

    return Path(spec).exists() or bool(HUB_ID.match(spec))


class Runner:
    """Runs the stages of one pipeline config over one work dir."""

    def __init__(self, config: Any, registry: Sequence[type[Stage] | PlannedStage]):
        self.config = config
        self.registry = list(registry)
        self.by_name = {entry.name: entry for entry in self.registry}
        self.order = [entry.name for entry in self.registry]

    # -- lookup --------------------------------------------------------------
    def entry(self, name: str) -> type[Stage] | PlannedStage:
        """The registry entry of a stage; an unknown name is a one-line error listing the stages."""
        if name not in self.by_name:
            raise PipelineError(f"unknown stage {name!r}; stages are: {', '.join(self.order)}")
        return self.by_name[name]

    def stage(self, name: str) -> Stage:
        """An instance of a built stage, configured from the pipeline config."""
        entry = self.entry(name)
        if isinstance(entry, PlannedStage):
            raise StageNotBuiltError(
                f"stage {name} is not built yet (tracked in issue #{entry.issue}); nothing was run for it"
            )
        return entry(getattr(self.config.stages, name), self.config)

    def store(self, name: str) -> StageStore:
        """The output folder of a stage."""
        return StageStore(self.config.run.work_dir, name)

    # -- fingerprints and states ---------------------------------------------
    def fingerprint(self, stage: Stage) -> str:
        """Hash of everything that decides the stage's output, apart from its input."""
        view = fingerprint_view(stage.config)
        for path in stage.unfingerprinted:
            *parents, leaf = path.split(".")
            node = view
            for part in parents:
                node = node.get(part, {})
            node.pop(leaf, None)
        payload: dict[str, Any] = {
            "stage": stage.name,
            "version": stage.version,
            "config": view,
            "seed": self.config.run.seed,
        }
        if stage.uses_model:
            model = getattr(self.config, "model", None)
            payload["model"] = fingerprint_view(model) if model is not None else None
        payload["files"] = {str(p): _file_digest(p) for p in stage.fingerprint_files()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def states(self) -> list[StageState]:
        """The state of every stage, in pipeline order."""
        memo: dict[str, StageState] = {}
        return [self.state(name, memo) for name in self.order]

    def state(self, name: str, memo: dict[str, StageState] | None = None) -> StageState:
        """Decide whether a stage is done, interrupted, stale, missing or not built."""
        memo = {} if memo is None else memo
        if name in memo:
            return memo[name]
        entry = self.entry(name)
        store = self.store(name)
        if isinstance(entry, PlannedStage):
            result = StageState(name, NOT_BUILT, f"issue #{entry.issue}")
        else:
            manifest = store.read_manifest()
            if manifest is None:
                shards = sorted(store.dir.glob("_shard-*-of-*.json")) if store.dir.exists() else []
                note = f"{len(shards)} shard(s) finished" if shards else ""
                result = StageState(name, INTERRUPTED if store.part_paths() or shards else MISSING, note)
            else:
                why = self._staleness(entry, manifest, memo)
                result = StageState(name, STALE if why else DONE, why or "", manifest)
        memo[name] = result
        return result

    def _staleness(self, entry: type[Stage], manifest: dict, memo: dict) -> str | None:
        """Why a finished stage can no longer be reused, or None when it can."""
        stage = entry(getattr(self.config.stages, entry.name), self.config)
        if manifest.get("fingerprint") != self.fingerprint(stage):
            return "its config, prompts or code changed"
        retry = stage.rerun_reason(manifest)
        if retry:
            return retry
        source = manifest.get("input", {})
        reads = stage.reads_from()
        if source.get("kind") == "upstream" and reads:
            upstream = self.state(reads, memo)
            if upstream.state != DONE:
                return f"upstream {reads} is {upstream.state}"
            if upstream.manifest.get("output_digest") != source.get("digest"):
                return f"upstream {reads} output changed"
        elif source.get("kind") in ("source", "path"):
            spec = source.get("spec")
            if spec is not None and not _input_still_exists(spec):
                return None  # the external input is gone; the output it made is kept as it is
            ctx = StageContext(self.config, entry.name, reads, executor=None, input_override=spec)
            if stage.input_source(ctx, spec).digest() != source.get("digest"):
                return "its input changed"
        return None

    # -- prompts -------------------------------------------------------------
    def rendered_prompt(self, name: str, row: str | None = None,
                        input_override: str | None = None) -> tuple[dict, str, str | list[dict]]:
        """What stage ``name`` would send the model for one row, rendered without loading a model.

        The row is picked from the stage's input in the work dir (or ``--input``) by id, else by position
        (``row`` an index; default: the first); when that holds no rows, the stage's stand-ins (bank examples)
        are picked from instead. Returns ``(row, where it came from, prompt)``.
        """
        stage = self.stage(name)
        if type(stage).show_prompt is Stage.show_prompt:
            raise PipelineError(f"stage {name} prompts no model; --show-prompt works for: "
                                f"{', '.join(self.prompting_stages())}")
        ctx = StageContext(self.config, name, stage.reads_from(), executor=None, input_override=input_override)
        try:
            ctx.source = stage.input_source(ctx, input_override)
            rows = stage.prompt_rows(ctx)
            where = ctx.source.description
            first = next(rows, None)
        except PipelineError:
            first = None
        if first is None:
            rows, where = iter(stage.stand_in_rows()), "stand-ins: the work dir holds no input rows for it yet"
            first = next(rows, None)
        picked = _pick(itertools.chain([first], rows) if first is not None else iter(()), row)
        if picked is None:
            raise PipelineError(f"stage {name}: no input row {row!r} to render a prompt for ({where})" if row
                                else f"stage {name}: no input row to render a prompt for ({where})")
        return picked, where, stage.show_prompt(picked)

    def prompting_stages(self) -> list[str]:
        """The built stages that render prompts for ``--show-prompt``."""
        return [name for name in self.order if not isinstance(self.by_name[name], PlannedStage)
                and self.by_name[name].show_prompt is not Stage.show_prompt]

    # -- selection -----------------------------------------------------------
    def select(self, stage: str | None, start: str | None, end: str | None) -> list[str]:
        """The stages named by --stage / --from / --to, in pipeline order."""
        if stage and stage != "all":
            if start or end:
                raise PipelineError("--stage NAME cannot be combined with --from/--to")
            self.entry(stage)
            return [stage]
        first = self.order.index(self.entry(start).name) if start else 0
        last = self.order.index(self.entry(end).name) if end else len(self.order) - 1
        if first > last:
            raise PipelineError(f"--from {start} comes after --to {end} in the pipeline")
        return self.order[first : last + 1]

    def _model_config(self, stage: Stage) -> dict:
        """The model section for a manifest, for stages that use the model."""
        model = getattr(self.config, "model", None)
        if not stage.uses_model or model is None:
            return {}
        return {"model": json.loads(model.model_dump_json())}

    # -- running -------------------------------------------------------------
    def run(self, names: list[str], *, force: bool = False, input_override: str | None = None) -> list[dict]:
        """Run the named stages in order, skipping done ones unless ``force``; return their manifests."""
        manifests = []  # --input feeds the first selected stage; later ones read their upstream
        for i, name in enumerate(names):
            state = self.state(name)
            if state.state == DONE and input_override is not None and i == 0 and \
                    (state.manifest.get("input") or {}).get("spec") != input_override:
                state = StageState(name, STALE, "it ran on another input than this --input")
            if state.state == DONE and not force:
                log.info("%s: done (fingerprint matches), skipping; use --force to rerun", name)
                manifests.append(state.manifest)
                continue
            if state.state == STALE:
                log.info("%s: stale (%s): rerunning it", name, state.why)
            manifests.append(self.run_stage(name, force=force, input_override=input_override if i == 0 else None))
        return manifests

    def _prepare(self, name: str, input_override: str | None, *, with_executor: bool = True):
        """The stage, its context and input, checked: the upstream done (unless --input), columns present."""
        stage = self.stage(name)
        reads = stage.reads_from()
        if input_override is None:
            input_override = stage.configured_input()
        if input_override is None and reads is not None:
            upstream = self.state(reads)
            if upstream.state != DONE:
                raise PipelineError(
                    f"stage {name} reads the output of {reads}, which is {upstream.state}: "
                    f"run it first (--stage {reads} or --from {reads}) or give --input"
                )
        # only map stages hand batches to an executor: whole stages never start Ray or a process pool
        executor = create_executor(self.config.run) if with_executor and isinstance(stage, MapStage) else None
        ctx = StageContext(self.config, name, reads, executor, input_override=input_override)
        source = stage.input_source(ctx, input_override)
        source.require(stage.needed_columns(), name)
        if stage.needed_columns() and source.is_empty():  # a stage that reads no columns needs no rows
            check_empty_input_allowed(name, source.description, self.config.run.allow_empty_input)
        ctx.source = source
        return stage, ctx

    def run_stage(
        self, name: str, *, force: bool = False, input_override: str | None = None, shard: tuple[int, int] | None = None
    ) -> dict | None:
        """Run one stage (resuming an interrupted run of the same config) and write its manifest.

        With ``shard=(k, n)`` only the input rows whose id hashes to k mod n are processed; the manifest is
        written by whichever shard finishes last (or by :meth:`merge`), and None is returned until then.
        """
        if world_size() > 1:
            return self._run_in_launch(name, input_override, force)
        stage, ctx = self._prepare(name, input_override)
        fingerprint, digest = self.fingerprint(stage), ctx.source.digest()
        store = ctx.store
        info = store.run_info()
        mismatch = info is not None and (info.get("fingerprint"), info.get("input_digest")) != (fingerprint, digest)
        if shard is not None:
            check_shardable(stage, force)
            if mismatch:
                raise PipelineError(
                    f"stage {name}: the parts in {store.dir} belong to another config or input; "
                    "remove that folder before running shards of the new one"
                )
        elif force or store.read_manifest() is not None:
            store.clear()
        elif mismatch:
            log.info("%s: the parts on disk belong to another config or input: starting afresh", name)
            store.clear()
        store.begin(fingerprint, {"input_digest": digest, "input": ctx.source.description})
        where = f" shard {shard[0]}/{shard[1]}" if shard else ""
        log.info("%s%s: %s (reading %s)", name, where, stage.title, ctx.source.description)
        started = time.time()
        if isinstance(stage, MapStage):
            run_batches(stage, ctx, ctx.source, shard=shard)
            if shard is not None:
                store.mark_shard_done(*shard, fingerprint)
                done = store.shards_done(shard[1], fingerprint)
                if len(done) < shard[1]:
                    log.info("%s: shard %d/%d done; %d of %d shards finished (the last one writes the manifest, "
                             "or run --merge)", name, shard[0], shard[1], len(done), shard[1])
                    return None
            fields = finish_map_stage(stage, ctx)
        elif isinstance(stage, WholeStage):
            fields = stage.run(ctx)
        else:  # pragma: no cover - the registry only holds the two shapes
            raise PipelineError(f"stage {name} is neither a map stage nor a whole stage")
        return self._write_manifest(stage, ctx, fields, fingerprint, digest, started)

    def _run_in_launch(self, name: str, input_override: str | None, force: bool) -> dict:
        """Run a whole stage in every process of a multi-process launch; only the main process writes.

        The main process prepares the stage's folder (clearing a finished or stale run) while the others
        wait, so every process then sees the same folder; the manifest is the main process's alone.
        """
        stage = self.stage(name)
        if not (isinstance(stage, WholeStage) and stage.multi_process):
            raise PipelineError(f"stage {name} runs in one process: launch it without accelerate launch / "
                                f"torchrun (WORLD_SIZE is {world_size()})")
        stage, ctx = self._prepare(name, input_override)
        fingerprint, digest = self.fingerprint(stage), ctx.source.digest()
        store = ctx.store
        if is_main_process():
            info = store.run_info()
            mismatch = info is not None and (info.get("fingerprint"), info.get("input_digest")) != (fingerprint, digest)
            if force or mismatch or store.read_manifest() is not None:
                store.clear()
            store.begin(fingerprint, {"input_digest": digest, "input": ctx.source.description})
            log.info("%s: %s (reading %s; %d processes)", stage.name, stage.title, ctx.source.description,
                     world_size())
        wait_for_everyone()
        started = time.time()
        fields = stage.run(ctx)
        if not is_main_process():
            return fields
        return self._write_manifest(stage, ctx, fields, fingerprint, digest, started)

    def merge(self, name: str, input_override: str | None = None) -> dict:
        """Write the manifest of a stage run as shards once every shard has finished."""
        stage, ctx = self._prepare(name, input_override, with_executor=False)
        fingerprint, digest = self.fingerprint(stage), ctx.source.digest()
        store = ctx.store
        if store.read_manifest() is not None:
            raise PipelineError(f"stage {name} is already merged (its manifest exists)")
        counts = store.shard_counts(fingerprint)
        if not counts:
            raise PipelineError(f"stage {name}: no finished shard of the current config in {store.dir}")
        total = next(iter(counts))
        done = store.shards_done(total, fingerprint)
        if len(done) < total:
            missing = sorted(set(range(total)) - done)
            raise PipelineError(f"stage {name}: shards {missing} of {total} have not finished; run them first")
        return self._write_manifest(stage, ctx, finish_map_stage(stage, ctx), fingerprint, digest, time.time())

    def _write_manifest(self, stage: Stage, ctx: StageContext, fields: dict, fingerprint: str, digest: str,
                        started: float) -> dict:
        """The manifest, written last: counts, input, fingerprint, digest, config; then the stage summary."""
        store = ctx.store
        override = ctx.input_override
        manifest = {
            "stage": stage.name,
            "title": stage.title,
            "fingerprint": fingerprint,
            "input": {
                "kind": "path" if override is not None else ("upstream" if stage.reads_from() else "source"),
                "spec": override,
                "description": ctx.source.description,
                "digest": digest,
            },
            **fields,
            # to the microsecond: two runs of a stage never share a manifest (a retrained model makes evaluate stale)
            "finished_at": datetime.now().astimezone().isoformat(timespec="microseconds"),
            "wall_seconds": elapsed_since(started),
            "output_digest": store.output_digest(ignore=stage.timing_columns),
            "config": {
                "stage": json.loads(stage.config.model_dump_json()),
                "seed": self.config.run.seed,
                **self._model_config(stage),
            },
        }
        store.write_manifest(manifest)
        for line in stage_summary(manifest, store.dir).splitlines():
            log.info(line)
        return manifest


def _pick(rows: Iterator[dict], key: str | None) -> dict | None:
    """The row whose id is ``key``, else the row at index ``key`` (an integer), else (no key) the first."""
    index = int(key) if key is not None and key.lstrip("-").isdigit() else None
    by_position = None
    for i, candidate in enumerate(rows):
        if key is None or str(candidate.get("id")) == key:
            return candidate
        if i == index:
            by_position = candidate
    return by_position


def check_empty_input_allowed(name: str, description: str, allowed: bool) -> None:
    """An input with no rows is an error (a stage would finish "done" with nothing), unless allowed: then a warning."""
    if not allowed:
        raise PipelineError(
            f"stage {name}: its input ({description}) holds no rows, so there is nothing to run; fix the input, "
            "or set run.allow_empty_input=true to let the stage finish empty"
        )
    log.warning("%s: its input (%s) holds NO rows; the stage finishes with 0 rows (run.allow_empty_input)",
                name, description)


def check_shardable(stage: Stage, force: bool) -> None:
    """Refuse what sharding cannot do: whole-input stages, output limits, --force."""
    if not isinstance(stage, MapStage):
        raise PipelineError(f"stage {stage.name} needs its whole input at once and cannot run as shards")
    if stage.output_limit() is not None:
        raise PipelineError(f"stage {stage.name} has an output limit (e.g. max_seeds), which shards cannot share")
    if force:
        raise PipelineError("--force cannot be combined with --shard: remove the stage's folder to start over")
