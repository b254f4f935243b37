"""Publishing a finished stage's output as its own Hugging Face Hub dataset, with a dataset card.

One code path builds the folder to upload: ``data/train-XXXXX-of-YYYYY.parquet``
shards (the layout ``datasets``' ``push_to_hub`` produces, so ``load_dataset``
reads it the same way) and a ``README.md`` card. ``--publish-dry-run DIR``
stops there and leaves the folder in ``DIR/<dataset name>``; a real publish
uploads that very folder with ``huggingface_hub``'s ``upload_folder`` in one
commit. Building the folder ourselves, rather than calling ``push_to_hub``
and then pushing a card, is what lets the dry run be exactly what is uploaded.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline.framework.errors import PipelineError

log = logging.getLogger("pipeline.hub")

SHARD_ROWS = 100_000


def dataset_name(hub: Any, stage: str) -> str:
    """The dataset's name on the Hub: ``<prefix>-<stage>``."""
    return f"{hub.prefix}-{stage}"


def repo_id(hub: Any, stage: str) -> str:
    """``<namespace>/<prefix>-<stage>``; needs ``hub.namespace``."""
    if not hub.namespace:
        raise PipelineError("publishing needs hub.namespace (a Hub user or organisation) in the config")
    return f"{hub.namespace}/{dataset_name(hub, stage)}"


def _write_shards(table: pa.Table, data_dir: Path) -> list[str]:
    """Write the table as train-XXXXX-of-YYYYY.parquet shards; return the file names."""
    data_dir.mkdir(parents=True, exist_ok=True)
    n = max(1, -(-table.num_rows // SHARD_ROWS))
    names = []
    for i in range(n):
        name = f"train-{i:05d}-of-{n:05d}.parquet"
        pq.write_table(table.slice(i * SHARD_ROWS, SHARD_ROWS), data_dir / name, compression="zstd")
        names.append(name)
    return names


def render_card(stage_cls: type, manifest: dict, recipe: str, upstream: str) -> str:
    """The dataset card: what the stage did, its config, counts and drop reasons, the upstream dataset."""
    header = {
        "pretty_name": f"{recipe}: {manifest['stage']}",
        "tags": ["code", "synthetic", "selfcodealign", manifest["stage"]],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        f"# {recipe}: the `{manifest['stage']}` stage",
        "",
        f"{stage_cls.title}.",
        "",
        "## How it was made",
        "",
        stage_cls.description(),
        "",
        f"Upstream dataset: {upstream}",
        "",
        "## Counts",
        "",
        "| | rows |",
        "|---|---:|",
        f"| read | {manifest['rows_in']} |",
        f"| kept | {manifest['rows_out']} |",
    ]
    for reason, count in sorted((manifest.get("dropped") or {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"| dropped: {reason} | {count} |")
    for key, value in (manifest.get("stats") or {}).items():
        lines.append(f"| counter: {key} | {value} |")
    lines += ["", "## Columns", "", "| column | type | meaning |", "|---|---|---|"]
    for column, (dtype, meaning) in stage_cls.output_columns.items():
        lines.append(f"| `{column}` | {dtype} | {meaning} |")
    lines += [
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(manifest.get("config", {}), sort_keys=False).rstrip(),
        "```",
        "",
        f"Fingerprint `{manifest['fingerprint']}`, output digest `{manifest.get('output_digest')}`.",
        "",
    ]
    return "\n".join(lines)


def build_folder(runner: Any, stage: str, folder: Path) -> Path:
    """Write what publishing ``stage`` uploads (Parquet shards and README.md) into ``folder``."""
    state = runner.state(stage)
    if state.state != "done":
        raise PipelineError(f"cannot publish stage {stage}: it is {state.state}, not done")
    manifest = state.manifest
    stage_cls = runner.entry(stage)
    table = runner.store(stage).read_table()
    folder.mkdir(parents=True, exist_ok=True)
    _write_shards(table, folder / "data")
    hub = runner.config.hub
    source = manifest.get("input", {})
    if source.get("kind") == "upstream" and stage_cls.upstream:
        upstream = (
            f"https://huggingface.co/datasets/{repo_id(hub, stage_cls.upstream)}"
            if hub.namespace
            else f"the `{stage_cls.upstream}` stage of this recipe"
        )
    else:
        upstream = source.get("description", "none")
    card = render_card(stage_cls, manifest, runner.config.name, upstream)
    (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


def publish(runner: Any, stages: list[str], dry_run_dir: Path | None = None) -> list[Path]:
    """Publish each stage's dataset, or with ``dry_run_dir`` only write what would be uploaded."""
    hub = runner.config.hub
    wanted = [s for s in stages if hub.stages is None or s in hub.stages]
    written = []
    for stage in wanted:
        if dry_run_dir is not None:
            folder = build_folder(runner, stage, Path(dry_run_dir) / dataset_name(hub, stage))
            log.info("%s: dry run: wrote what would be published to %s", stage, folder)
            written.append(folder)
            continue
        target = repo_id(hub, stage)
        token = os.environ.get(hub.token_env)
        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as tmp:
            folder = build_folder(runner, stage, Path(tmp) / dataset_name(hub, stage))
            api = HfApi(token=token)
            api.create_repo(target, repo_type="dataset", private=hub.private, exist_ok=True)
            api.upload_folder(
                repo_id=target, repo_type="dataset", folder_path=folder,
                commit_message=f"Publish {stage} stage",
                delete_patterns=["data/*.parquet"],
            )
        log.info("%s: published to https://huggingface.co/datasets/%s", stage, target)
        written.append(Path(target))
    return written
