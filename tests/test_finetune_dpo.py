"""finetune with ``objective: dpo``: trl's DPOTrainer on the preferences stage's pairs, tiny model, real steps on CPU."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from pipeline.framework.errors import PipelineError
from pipeline.framework.store import StageStore
from tests.conftest import REPO, run_cli, stage_command
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture
from tests.test_finetune_stage import recipe, run_stage, write_data
from tests.test_preferences import sample


def executed(n: int = 6) -> list[dict]:
    """Executed samples: one passing and one failing answer to each of ``n`` instructions."""
    return [sample(f"{i}-{s}", f"i{i}", s, k=i + 2) for i in range(n) for s in ("passed", "failed")]


def dpo_recipe(tmp_path, model_dir, **finetune) -> dict:
    """The finetune test recipe with objective dpo (a high learning rate so 3 steps move the tiny model)."""
    return recipe(tmp_path, model_dir, **({"objective": "dpo", "max_steps": 3, "per_device_batch_size": 2,
                                           "learning_rate": 1e-2} | finetune))


def test_dpo_trains_on_the_preference_pairs_of_the_work_dir(tmp_path, tiny_model_dir):  # noqa: F811
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    run_cli(*stage_command(tmp_path, "preferences", executed()))  # the pairs, in tmp_path/work/preferences
    pairs = StageStore(tmp_path / "work", "preferences").read_manifest()
    config = dpo_recipe(tmp_path, tiny_model_dir)
    manifest = _run_from_work_dir(config)

    assert manifest["input"]["kind"] == "upstream" and manifest["input"]["digest"] == pairs["output_digest"]
    assert manifest["rows_in"] == 6 == manifest["rows_out"]
    assert manifest["title"].startswith("Preference tuning (DPO)")
    training = manifest["training"]
    assert training["objective"] == "dpo" and training["global_step"] == 3
    assert math.isfinite(manifest["stats"]["mean_loss"]) and training["fit_estimate"]["needed_gib"] > 0
    assert 0 <= training["dpo"]["final_reward_accuracies"] <= 1 and training["dpo"]["beta"] == 0.1
    model_dir = tmp_path / "work" / "finetune" / "model"
    tuned = load_file(model_dir / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(tuned[k], base[k]) for k in base if k in tuned)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert "### Response" in tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                           add_generation_prompt=True)
    # the run is done, not stale: the runner compares it with the preferences stage it read
    from pipeline.framework.runner import DONE
    assert _runner(config).state("finetune").state == DONE


def test_dpo_pairs_too_long_are_dropped_with_their_reason(tmp_path, tiny_model_dir):  # noqa: F811
    rows = [{"id": f"p{i}", "prompt": [{"role": "user", "content": f"Add {i}."}],
             "chosen": [{"role": "assistant", "content": f"return x + {i}"}],
             "rejected": [{"role": "assistant", "content": "x = 1\n" * (300 if i == 0 else 1)}]} for i in range(4)]
    data = write_data(tmp_path / "pairs.jsonl", rows)
    manifest = run_stage(dpo_recipe(tmp_path, tiny_model_dir, overflow="drop", max_length=128), data)
    assert manifest["rows_out"] == 3 and manifest["dropped"] == {"too_long": 1}
    assert manifest["training"]["examples_per_epoch"] == 3


def test_a_pair_not_in_the_conversational_layout_is_a_one_line_error(tmp_path, tiny_model_dir):  # noqa: F811
    rows = [{"id": "bad", "prompt": [{"role": "user", "content": "Add 1."}], "chosen": "return x + 1",
             "rejected": [{"role": "assistant", "content": "return x"}]}]
    data = write_data(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(PipelineError, match="row 'bad': 'chosen' must be a non-empty list"):
        run_stage(dpo_recipe(tmp_path, tiny_model_dir), data)


def _runner(config: dict):
    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model, validate_config
    from pipeline.framework.runner import Runner
    from pipeline.framework.stage import PlannedStage
    from stages import PIPELINE

    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    return Runner(validate_config(config, model, "test"), PIPELINE)


def _run_from_work_dir(config: dict) -> dict:
    """Run finetune in this process reading its upstream from the work dir (no --input)."""
    return _runner(config).run_stage("finetune")


@pytest.mark.slow
def test_a_killed_dpo_run_resumes_from_its_checkpoint(tmp_path, tiny_model_dir):  # noqa: F811
    """SIGKILL once a checkpoint is saved; the same command resumes and finishes every step once."""
    run_cli(*stage_command(tmp_path, "preferences", executed(8)))
    config = dpo_recipe(tmp_path, tiny_model_dir, max_steps=30, save_steps=3, per_device_batch_size=1)
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, str(REPO / "run_pipeline.py"), "--config", str(path), "--stage", "finetune"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    checkpoints = tmp_path / "work" / "finetune" / "checkpoints"
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 300
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and first.poll() is None \
            and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the run finished before a checkpoint could be interrupted"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = run_cli("--config", str(path), "--stage", "finetune")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr
    manifest = json.loads((tmp_path / "work" / "finetune" / "manifest.json").read_text())
    assert manifest["training"]["global_step"] == 30 and manifest["training"]["resumed_from"]
    steps = [e["step"] for e in json.loads((tmp_path / "work" / "finetune" / "train_log.json").read_text())
             if "loss" in e]
    assert steps[-1] == 30 and len(set(steps)) == len(steps)


@pytest.mark.parametrize("chat_format", ["instruction", "chatml"])
def test_dpo_trains_on_exactly_the_answer_tokens_sft_would_label(tmp_path, tiny_model_dir, chat_format):  # noqa: F811
    """trl's tokenisation of a pair, with our format's template installed, against our own SFT encoder's labels."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.training.data import IGNORE, ConversationEncoder
    from pipeline.training.preference import DpoOptions, dpo_arguments_class, dpo_settings, dpo_trainer

    encoder = ConversationEncoder(AutoTokenizer.from_pretrained(tiny_model_dir), chat_format)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(encoder.tokenizer))
    pair = {"prompt": [{"role": "user", "content": "Add one to x."}],
            "chosen": [{"role": "assistant", "content": "def f(x):\n    return x + 1"}],
            "rejected": [{"role": "assistant", "content": "def f(x):\n    return x"}]}
    args = dpo_arguments_class()(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                 **dpo_settings(DpoOptions(), 256))
    trainer = dpo_trainer(model, args, [pair], encoder.tokenizer)
    row = trainer.train_dataset[0]
    for side in ("chosen", "rejected"):
        ours = encoder.encode(pair["prompt"] + pair[side], 256)
        answer = [tok for tok, label in zip(ours.input_ids, ours.labels) if label != IGNORE]
        assert row["prompt_ids"] + row[f"{side}_ids"] == ours.input_ids
        assert row[f"{side}_ids"] == answer
