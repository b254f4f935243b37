"""scripts/gpu_check.sh: its CPU rehearsal (--dry) in an interpreter that sees only what the GPU machine has.

The GPU machine has torch, transformers, accelerate and peft (and what they
depend on) but none of this project's other dependencies; pydantic, which the
generation rows need, is brought along as wheels. The tests rebuild that
situation here: a site folder with links to exactly those distributions, and
``python -S`` so the virtualenv's site-packages stay out of reach.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

GPU_MACHINE = ("torch", "transformers", "accelerate", "peft")
# transformers 5 pulls pydantic in (through typer), older ones do not: the import test leaves it out.


def distribution_closure(names, without=()) -> dict:
    """The installed distributions ``names`` need, themselves included (extras and ``without`` left out)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    found, todo = {}, list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found or key in without:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        found[key] = dist
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def restricted_site(folder: Path, names, without=()) -> Path:
    """A folder linking the top-level files of the distributions ``names`` need, and nothing else."""
    folder.mkdir()
    for dist in distribution_closure(names, without).values():
        for top in {f.parts[0] for f in dist.files or [] if not f.parts[0].startswith("..")}:
            target = Path(dist.locate_file(top))
            link = folder / top
            if target.exists() and not link.exists() and not top.endswith(".pth"):
                link.symlink_to(target)
    return folder


def restricted_python(tmp_path: Path, names, without=()):
    """A runner of ``python -S`` with only this checkout and the distributions ``names`` need on the path."""
    site = restricted_site(tmp_path / "site", names, without)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PYTHONPATH": f"{REPO}:{site}", "OMP_NUM_THREADS": "2", "PYTHONNOUSERSITE": "1"}

    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-S", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=timeout)

    return run


def test_the_check_and_training_modules_import_without_the_projects_other_dependencies(tmp_path):
    python = restricted_python(tmp_path, GPU_MACHINE, without=("pydantic", "pydantic-core"))
    missing = python("-c", "import pydantic", timeout=120)
    assert missing.returncode != 0 and "No module named 'pydantic'" in missing.stderr  # the restriction holds
    code = ("import sys, pipeline.gpu_check, pipeline.training.adapters, pipeline.training.distributed, "
            "pipeline.training.data, pipeline.training.modeling, pipeline.training.layouts; "
            "print(sorted({'pyarrow', 'datasets', 'docker', 'pydantic', 'matplotlib', 'datasketch'} & set(sys.modules)))")
    result = python("-c", code, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_gpu_check_dry_run_completes_with_only_the_gpu_machines_packages(tmp_path):
    """The dry run's table and JSON: tiny model training, LoRA, generation at two batch sizes, 15B skipped."""
    out = tmp_path / "check.json"
    python = restricted_python(tmp_path, GPU_MACHINE)
    result = python("-m", "pipeline.gpu_check", "--dry", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DRY RUN (CPU, tiny model)" in result.stdout and f"written: {out}" in result.stdout
    report = json.loads(out.read_text())
    rows = {row["check"]: row for row in report["rows"]}
    assert list(rows) == ["train-tiny", "stage-tiny", "lora-tiny", "generate-bs1", "generate-bs4", "train-15b"]
    assert rows["stage-tiny"]["status"].startswith("skipped: the pipeline's own dependencies are missing (")
    for name in ("train-tiny", "lora-tiny"):
        assert rows[name]["status"] == "ok" and rows[name]["tokens_per_s"] > 0 and rows[name]["steps"] == 3
        assert rows[name]["first_loss"] > 0 and rows[name]["estimate_gib"] > 0
    assert rows["generate-bs4"]["new_tokens"] == 4 * 8 and rows["generate-bs1"]["tokens_per_s"] > 0
    assert rows["train-15b"]["status"] == "skipped: dry run" and rows["train-15b"]["estimate_gib"] == 65.24


def test_the_shell_script_runs_from_anywhere_and_passes_options_on():
    script = (REPO / "scripts" / "gpu_check.sh").read_text()
    assert 'cd "$(dirname "$0")/.."' in script and "pip install" not in script
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--help"], cwd="/",
                            env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--dry" in result.stdout and "--skip-15b" in result.stdout


def test_the_stage_row_runs_the_finetune_stage_on_the_saved_model(tmp_path):
    """Where the pipeline's dependencies exist (here), the check runs the real stage and reads its manifest."""
    import torch

    from pipeline import gpu_check

    config = gpu_check.starcoder2_config(gpu_check.TINY, 128)
    tokenizer = gpu_check.build_tokenizer(config.vocab_size)
    model = gpu_check.build_model(config, torch.float32, "cpu")
    model.save_pretrained(str(tmp_path / "model"))
    tokenizer.save_pretrained(str(tmp_path / "model"))
    row = gpu_check.check_stage(tmp_path / "model", tokenizer, tmp_path, seq_len=128, steps=2, accumulation=2,
                                cuda=False, device_name="cpu")
    assert row["status"] == "ok" and row["steps"] == 2 and row["bf16"] is False
    assert row["estimate_gib"] > 0 and row["tokens_per_s"] > 0 and row["first_loss"] > 0
    manifest = json.loads((tmp_path / "stage" / "finetune" / "manifest.json").read_text())
    assert manifest["stats"]["truncated"] == 4  # every conversation cut to exactly 128 tokens
