"""Pushing a fine-tuned model folder to the Hugging Face Hub (optional, off by default)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.framework.errors import PipelineError

log = logging.getLogger("pipeline.finetune")


def model_repo_id(hub, name: str | None) -> str:
    """``<namespace>/<name>``; the name defaults to the recipe's ``hub.prefix``."""
    if hub is None or not hub.namespace:
        raise PipelineError("finetune.push_to_hub needs hub.namespace (a Hub user or organisation) in the config")
    return f"{hub.namespace}/{name or hub.prefix}"


def repository_check(stage: str, hub, name: str | None):
    """``--preflight``'s row for a model to push: the repository it would go to, or why there is none."""
    from pipeline.framework.preflight import FAIL, Check

    key = f"stages.{stage}.push_to_hub"
    try:
        return Check(stage, "model repository", model_repo_id(hub, name), key)
    except PipelineError as exc:
        return Check(stage, "model repository", "no hub.namespace", key, FAIL, f"{stage}: {exc}")


def push_model(hub, folder: Path, name: str | None) -> str:
    """Create the model repository if needed and upload ``folder`` to it in one commit; return the repo id."""
    from huggingface_hub import HfApi

    repo = model_repo_id(hub, name)
    api = HfApi(token=os.environ.get(hub.token_env))
    api.create_repo(repo, repo_type="model", private=hub.private, exist_ok=True)
    api.upload_folder(repo_id=repo, repo_type="model", folder_path=Path(folder),
                      commit_message="Upload the fine-tuned model")
    log.info("finetune: pushed the model to https://huggingface.co/%s", repo)
    return repo
