"""The finetune stage, run for real on the tiny random model on CPU (no mocks of Trainer or torch)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.framework.errors import PipelineError
from tests.conftest import REPO
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture


def conversation(i: int) -> dict:
    """A short conversation whose answer is easy to learn."""
    return {"messages": [{"role": "user", "content": f"Write f(x) returning x plus {i}."},
                         {"role": "assistant", "content": f"def f(x):\n    return x + {i}\n"}]}


def write_data(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSONL."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tmp_path: Path, model_dir: Path, hub: dict | None = None, **finetune) -> dict:
    """A recipe fine-tuning the tiny model quickly on CPU; keyword arguments set stages.finetune keys."""
    settings = {"learning_rate": 3e-3, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
                "max_length": 256, "max_steps": 2, "save_steps": 50, "use_default_system": False} | finetune
    return {"name": "test-finetune", "run": {"work_dir": str(tmp_path / "work")},
            "model": {"backend": "transformers", "model": str(model_dir), "device": "cpu"},
            "hub": hub or {}, "stages": {"finetune": settings}}


def run_stage(data: dict, input_path: Path) -> dict:
    """Validate a recipe and run the finetune stage in this process; return its manifest."""
    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model, validate_config
    from pipeline.framework.runner import Runner
    from pipeline.framework.stage import PlannedStage
    from stages import PIPELINE

    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    runner = Runner(validate_config(data, model, "test"), PIPELINE)
    return runner.run_stage("finetune", input_override=str(input_path))


def test_stage_writes_its_data_contract_model_and_curve(tmp_path, tiny_model_dir):  # noqa: F811
    from transformers import AutoTokenizer

    rows = [conversation(i) for i in range(6)]
    rows.append({"messages": [{"role": "user", "content": "no answer"}]})
    rows.append({"messages": [{"role": "user", "content": "long"},
                              {"role": "assistant", "content": "x = 1\n" * 300}]})
    data = write_data(tmp_path / "data.jsonl", rows)
    manifest = run_stage(recipe(tmp_path, tiny_model_dir, chat_format="chatml", overflow="drop"), data)

    assert manifest["rows_in"] == 8 and manifest["rows_out"] == 6
    assert manifest["dropped"] == {"no_assistant_turn": 1, "too_long": 1}
    stats, training = manifest["stats"], manifest["training"]
    assert stats["train_steps"] == 2 and stats["final_loss"] > 0 and stats["train_tokens"] > 0
    assert training["global_step"] == 2 and training["fit_estimate"]["needed_gib"] > 0
    folder = tmp_path / "work" / "finetune"
    assert manifest["model_dir"] == str(folder / "model") == training["model_dir"]
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    parts = pq.read_table(sorted(folder.glob("part-*.parquet"))).to_pylist()
    assert {r["status"] for r in parts} == {"kept"} and all(r["n_label_tokens"] > 0 for r in parts)
    dropped = pq.read_table(sorted((folder / "dropped").glob("part-*.parquet"))).to_pylist()
    assert sorted(r["status"] for r in dropped) == ["dropped_no_assistant_turn", "dropped_too_long"]

    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    text = tokenizer.apply_chat_template(rows[0]["messages"], tokenize=False)
    assert text == ("<|user|>\nWrite f(x) returning x plus 0.<|end|>\n<|assistant|>\n"
                    "def f(x):\n    return x + 0\n<|end|>")
    saved = json.loads((folder / "model" / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|end|>") in saved["eos_token_id"]
    assert json.loads((folder / "model" / "config.json").read_text())["use_cache"] is True


def test_model_is_pushed_to_the_hub_with_a_recording_api(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    import huggingface_hub

    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            files = sorted(p.name for p in Path(folder_path).iterdir())
            calls.append(("upload_folder", repo_id, kwargs["repo_type"], files))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.setenv("HF_TOKEN", "secret")
    data = write_data(tmp_path / "data.jsonl", [conversation(i) for i in range(4)])
    hub = {"namespace": "org", "prefix": "demo", "private": True}
    manifest = run_stage(recipe(tmp_path, tiny_model_dir, hub=hub, max_steps=1, push_to_hub=True), data)
    assert manifest["training"]["hub_repo"] == "org/demo"
    assert calls[:2] == [("token", "secret"),
                         ("create_repo", "org/demo", {"repo_type": "model", "private": True, "exist_ok": True})]
    _, repo, kind, files = calls[2]
    assert (repo, kind) == ("org/demo", "model")
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(files)


def test_push_without_a_namespace_fails_before_training(tmp_path, tiny_model_dir):  # noqa: F811
    data = write_data(tmp_path / "data.jsonl", [conversation(0)])
    with pytest.raises(PipelineError, match="needs hub.namespace"):
        run_stage(recipe(tmp_path, tiny_model_dir, push_to_hub=True), data)
    assert not (tmp_path / "work" / "finetune" / "checkpoints").exists()


def test_a_model_too_big_for_this_machine_stops_before_loading(tmp_path, tiny_model_dir):  # noqa: F811
    """A local directory describing StarCoder2-15B (config only, no weights) fails the fit check at once."""
    big = tmp_path / "big"
    shutil.copytree(tiny_model_dir, big)
    (big / "model.safetensors").unlink()
    config = json.loads((big / "config.json").read_text())
    config.update(model_type="starcoder2", hidden_size=6144, num_hidden_layers=40, num_attention_heads=48,
                  num_key_value_heads=4, intermediate_size=24576, vocab_size=49152, use_bias=True,
                  tie_word_embeddings=False)
    (big / "config.json").write_text(json.dumps(config))
    data = write_data(tmp_path / "data.jsonl", [conversation(0)])
    with pytest.raises(PipelineError, match=r"does not fit: full fine-tuning needs about \d+"):
        run_stage(recipe(tmp_path, tiny_model_dir, base_model=str(big)), data)


def test_paper_recipe_section_parses_with_the_papers_defaults():
    from stages.finetune import FinetuneConfig

    paper = yaml.safe_load((REPO / "configs" / "selfcodealign-sc2-15b.yaml").read_text())["stages"]["finetune"]
    parsed = FinetuneConfig.model_validate(paper)
    defaults = FinetuneConfig()
    for key in ("learning_rate", "num_epochs", "per_device_batch_size", "gradient_accumulation_steps",
                "warmup_ratio", "lr_scheduler", "max_length", "dropout", "optimizer"):
        assert getattr(parsed, key) == getattr(defaults, key)
    assert (defaults.learning_rate, defaults.gradient_accumulation_steps, defaults.max_length) == (1e-5, 64, 1280)


def test_openassistant_recipe_validates():
    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model, load_config
    from pipeline.framework.stage import PlannedStage
    from stages import PIPELINE

    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    config = load_config(REPO / "configs" / "openassistant-sft.yaml", model)
    assert config.stages.finetune.chat_format == "chatml"


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_saved_model_generates(tmp_path, tiny_model_dir):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_data(tmp_path / "data.jsonl", [conversation(i) for i in range(16)] * 2)
    manifest = run_stage(recipe(tmp_path, tiny_model_dir, max_steps=None, num_epochs=4,
                                gradient_accumulation_steps=2, use_default_system=True,
                                gradient_checkpointing=False), data)
    training = manifest["training"]
    assert manifest["stats"]["train_steps"] == 16  # 32 rows / (4 x 2) per step x 4 epochs
    assert training["final_loss"] < 0.35 * training["first_loss"]

    folder = Path(training["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(conversation(3)["messages"][:1], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer.startswith("def f(x):")


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, tiny_model_dir):  # noqa: F811
    data = write_data(tmp_path / "data.jsonl", [conversation(i) for i in range(16)])
    config = recipe(tmp_path, tiny_model_dir, max_steps=40, save_steps=4, per_device_batch_size=2,
                    gradient_checkpointing=True)
    config_path = tmp_path / "recipe.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, str(REPO / "run_pipeline.py"), "--config", str(config_path), "--stage", "finetune",
               "--input", str(data)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    checkpoints = tmp_path / "work" / "finetune" / "checkpoints"
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    assert first.returncode == -signal.SIGKILL
    manifest_path = tmp_path / "work" / "finetune" / "manifest.json"
    assert not manifest_path.exists()
    done_before = max(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/trainer_state.json"))
    assert done_before < 40

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr + second.stdout
    manifest = json.loads(manifest_path.read_text())
    assert manifest["training"]["global_step"] == 40 == manifest["stats"]["train_steps"]
    assert manifest["training"]["resumed_from"].endswith(f"checkpoint-{done_before}") or \
        int(manifest["training"]["resumed_from"].rsplit("-", 1)[1]) >= done_before
    steps = [e["step"] for e in json.loads((tmp_path / "work" / "finetune" / "train_log.json").read_text())
             if "loss" in e]
    assert steps[0] == 1 and steps[-1] == 40 and len(set(steps)) == len(steps)
