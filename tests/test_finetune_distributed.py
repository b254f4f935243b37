"""finetune under ``accelerate launch`` (2 CPU processes, gloo), LoRA through PEFT, and the launch layouts.

Everything runs for real on the tiny random model: the two-process runs go
through ``accelerate launch`` with ``configs/accelerate/ddp.yaml`` (on a
machine without CUDA the Trainer's ``use_cpu`` makes accelerate pick the gloo
backend). FSDP and ZeRO-3 cannot run here: accelerate's FSDP plugin stops
with "no available devices" without an accelerator (and its multi-CPU mode
never turns FSDP on) and DeepSpeed needs CUDA, so their configs are only
parsed and checked, and the stage's refusal on CPUs is tested.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.framework.errors import PipelineError
from tests.conftest import REPO
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture
from tests.test_finetune_stage import conversation, recipe, run_stage, write_data


def free_port() -> int:
    """A TCP port nobody listens on now (for the launch's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(config: dict, tmp_path: Path, data: Path, name: str) -> list[str]:
    """``accelerate launch`` of the finetune stage in 2 processes with the DDP config."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "2",
            "--main_process_port", str(free_port()), str(REPO / "run_pipeline.py"), "--config", str(path),
            "--stage", "finetune", "--input", str(data)]


def launch_env() -> dict:
    """The environment of a launched run: this checkout on the path, one thread per process."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def kill_run(launcher: subprocess.Popen) -> None:
    """SIGKILL a launched run at once: the launcher's process group and every process under it, then wait them out.

    torch's elastic agent starts each training process in a session of its
    own (``start_new_session=True``), so killing the launcher's group alone
    leaves the workers training on, orphaned, until they write the manifest.
    """
    import psutil

    try:
        root = psutil.Process(launcher.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(launcher.pid, signal.SIGKILL)  # anything else the launcher's group holds
    except ProcessLookupError:
        pass
    launcher.wait(timeout=60)
    deadline = time.time() + 60
    while any(process_alive(p) for p in tree):
        assert time.time() < deadline, "a training process outlived SIGKILL for 60 s"
        time.sleep(0.05)


def process_alive(process) -> bool:
    """Whether a ``psutil.Process`` still runs (a zombie waiting to be reaped does not)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints written to the end: both processes' RNG state and the trainer state (written last by rank 0)."""
    return [p for p in folder.glob("checkpoint-*") if (p / "rng_state_1.pth").is_file()
            and (p / "trainer_state.json").is_file()]


def losses(work: Path) -> list[float]:
    """The logged training losses of a finished run, step by step."""
    return [e["loss"] for e in json.loads((work / "finetune" / "train_log.json").read_text()) if "loss" in e]


def weights(model_dir: Path) -> dict:
    """The saved model's tensors."""
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def small(tmp_path: Path, model_dir: Path, work: str, **finetune) -> dict:
    """A recipe with an effective batch of 4 (2 per device x 2 accumulated, as written for one process)."""
    config = recipe(tmp_path, model_dir, per_device_batch_size=2, gradient_accumulation_steps=2,
                    gradient_checkpointing=False, **finetune)
    config["run"]["work_dir"] = str(tmp_path / work)
    return config


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_curve(tmp_path, tiny_model_dir):  # noqa: F811
    data = write_data(tmp_path / "data.jsonl", [conversation(i) for i in range(16)])
    single = run_stage(small(tmp_path, tiny_model_dir, "single", max_steps=6), data)
    run = subprocess.run(launch_command(small(tmp_path, tiny_model_dir, "ddp", max_steps=6), tmp_path, data, "ddp"),
                         cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gradient accumulation 2 -> 1 per process; effective batch stays 4" in run.stderr

    manifest = json.loads((tmp_path / "ddp" / "finetune" / "manifest.json").read_text())
    training = manifest["training"]
    assert (training["processes"], training["gradient_accumulation_per_process"], training["effective_batch"]) == \
        (2, 1, 4)
    assert single["training"]["effective_batch"] == 4 and single["training"]["processes"] == 1
    assert manifest["rows_out"] == single["rows_out"] == 16  # one writer: no row written twice
    assert len(list((tmp_path / "ddp" / "logs").glob("*.log"))) == 1
    assert run.stdout.count("finetune      done") == 1  # only the main process prints the summary

    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), rel=1e-3)
    ddp, one = weights(tmp_path / "ddp" / "finetune" / "model"), weights(tmp_path / "single" / "finetune" / "model")
    for name, tensor in one.items():
        assert ddp[name].sub(tensor).abs().max() < 1e-4, name


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(tmp_path, tiny_model_dir):  # noqa: F811
    data = write_data(tmp_path / "data.jsonl", [conversation(i) for i in range(16)])
    steps = 160
    whole = subprocess.run(launch_command(small(tmp_path, tiny_model_dir, "whole", max_steps=steps, save_steps=5),
                                          tmp_path, data, "whole"),
                           cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    command = launch_command(small(tmp_path, tiny_model_dir, "killed", max_steps=steps, save_steps=5), tmp_path,
                             data, "killed")
    checkpoints = tmp_path / "killed" / "finetune" / "checkpoints"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=REPO, env=launch_env(), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            deadline = time.time() + 300
            while not complete_checkpoints(checkpoints):
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.time() < deadline, "no checkpoint within 300 s"
                time.sleep(0.05)
        finally:
            kill_run(first)  # the launcher and both training processes at once
    assert not (tmp_path / "killed" / "finetune" / "manifest.json").exists()
    done_before = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert done_before < steps

    second = subprocess.run(command, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    training = json.loads((tmp_path / "killed" / "finetune" / "manifest.json").read_text())["training"]
    assert training["resumed_from"], second.stderr[:6000]
    assert training["global_step"] == steps and training["processes"] == 2
    resumed, reference = weights(Path(training["model_dir"])), weights(tmp_path / "whole" / "finetune" / "model")
    for name, tensor in reference.items():
        assert resumed[name].sub(tensor).abs().max() < 1e-6, name


def test_lora_trains_only_the_adapter_and_the_merged_model_generates(tmp_path, tiny_model_dir):  # noqa: F811
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_data(tmp_path / "data.jsonl", [conversation(i) for i in range(8)])
    manifest = run_stage(recipe(tmp_path, tiny_model_dir, adapter="lora", lora_r=4, lora_alpha=8,
                                lora_target_modules=["q_proj", "v_proj"], learning_rate=1e-2, max_steps=3), data)
    training = manifest["training"]
    assert training["adapter"] == "lora" and training["fit_estimate"]["layout"] == "lora"
    adapter_dir, merged_dir = Path(training["adapter_dir"]), Path(training["model_dir"])
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in
                                                                                      adapter_dir.iterdir()}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir)
    lora_b = [p for n, p in with_adapter.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero: it trained

    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    original = base.state_dict()
    changed = {n for n, t in merged.state_dict().items() if not torch.equal(t, original[n])}
    assert changed == {f"model.layers.{i}.self_attn.{m}.weight" for i in range(2) for m in ("q_proj", "v_proj")}

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    prompt = tokenizer.apply_chat_template(conversation(1)["messages"][:1], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = merged.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_lora_with_an_unknown_target_module_is_a_one_line_error(tmp_path, tiny_model_dir):  # noqa: F811
    data = write_data(tmp_path / "data.jsonl", [conversation(0)])
    with pytest.raises(PipelineError, match="lora_target_modules"):
        run_stage(recipe(tmp_path, tiny_model_dir, adapter="lora", lora_target_modules=["no_such_proj"]), data)


def test_qlora_without_a_gpu_says_so(tmp_path, tiny_model_dir):  # noqa: F811
    data = write_data(tmp_path / "data.jsonl", [conversation(0)])
    with pytest.raises(PipelineError, match="qlora' needs a CUDA GPU"):
        run_stage(recipe(tmp_path, tiny_model_dir, adapter="qlora"), data)


def test_a_sharded_layout_without_gpus_is_a_one_line_error(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    """What `accelerate launch --config_file configs/accelerate/fsdp.yaml` sets, on this CPU-only machine."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    data = write_data(tmp_path / "data.jsonl", [conversation(0)])
    with pytest.raises(PipelineError, match="the fsdp layout needs CUDA GPUs"):
        run_stage(recipe(tmp_path, tiny_model_dir), data)
    assert not (tmp_path / "work" / "finetune" / "checkpoints").exists()


def test_accumulation_is_shared_among_the_processes():
    from pipeline.training.distributed import accumulation_per_process

    assert accumulation_per_process(1, 64, 8) == 8 and accumulation_per_process(1, 64, 1) == 64
    with pytest.raises(PipelineError, match="gradient_accumulation_steps=64 is not a multiple of the 3 processes"):
        accumulation_per_process(1, 64, 3)


def test_a_map_stage_refuses_a_multi_process_launch(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model, validate_config
    from pipeline.framework.runner import Runner
    from pipeline.framework.stage import PlannedStage
    from stages import PIPELINE

    monkeypatch.setenv("WORLD_SIZE", "2")
    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    runner = Runner(validate_config(recipe(tmp_path, tiny_model_dir), model, "test"), PIPELINE)
    data = write_data(tmp_path / "data.jsonl", [{"messages": conversation(0)["messages"], "id": "a"}])
    with pytest.raises(PipelineError, match="stage dedup runs in one process"):
        runner.run_stage("dedup", input_override=str(data))


def test_accelerate_configs_parse_and_name_their_layouts(monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig

    from pipeline.training.layouts import launched_layout

    folder = REPO / "configs" / "accelerate"
    ddp = ClusterConfig.from_yaml_file(str(folder / "ddp.yaml"))
    fsdp = ClusterConfig.from_yaml_file(str(folder / "fsdp.yaml"))
    zero3 = ClusterConfig.from_yaml_file(str(folder / "zero3.yaml"))
    assert (ddp.distributed_type, fsdp.distributed_type, zero3.distributed_type) == \
        ("MULTI_GPU", "FSDP", "DEEPSPEED")
    assert fsdp.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    ds = json.loads((REPO / zero3.deepspeed_config["deepspeed_config_file"]).read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_allow_untested_optimizer"] is True
    assert ds["gradient_accumulation_steps"] == "auto"  # the stage's per-process count

    assert launched_layout("none") == "ddp" and launched_layout("lora") == "lora"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert launched_layout("none") == "fsdp"
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    assert launched_layout("none") == "fsdp+offload"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert launched_layout("none") == "zero3"


@pytest.mark.slow
@pytest.mark.docker
def test_lora_fine_tune_of_the_demo_model_then_evaluate_on_the_merged_model(tmp_path):
    """Gemma 3 270M base (configs/demo-gemma-base.yaml's model): a LoRA finetune stage, then evaluate loads the
    merged model, all by the CLI."""
    from tests.conftest import run_cli

    demo = yaml.safe_load((REPO / "configs" / "demo-gemma-base.yaml").read_text())
    assert demo["model"]["backend"] == "transformers"  # the recipe fine-tunes the model it generates with
    conversations = write_data(tmp_path / "conversations.jsonl", [{"id": f"c{i}", **conversation(i)} for i in range(4)])
    config = {
        "name": "demo-lora",
        "run": {"work_dir": str(tmp_path / "work")},
        "model": {**demo["model"], "show_progress": False},
        "stages": {"finetune": {"adapter": "lora", "lora_r": 8, "max_steps": 2, "per_device_batch_size": 2,
                                "gradient_accumulation_steps": 1, "max_length": 256, "learning_rate": 1e-4},
                   "evaluate": {"limit": 2, "max_tokens": 24, "evaluate_base": False, "sandbox": {"workers": 2}}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    finetune = run_cli("--config", str(path), "--stage", "finetune", "--input", str(conversations), timeout=900)
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    training = json.loads((tmp_path / "work" / "finetune" / "manifest.json").read_text())["training"]
    assert training["adapter"] == "lora" and training["global_step"] == 2
    assert (Path(training["adapter_dir"]) / "adapter_model.safetensors").is_file()
    assert not (Path(training["model_dir"]) / "adapter_config.json").exists()  # a plain, merged model

    evaluate = run_cli("--config", str(path), "--stage", "evaluate", timeout=900)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    manifest = json.loads((tmp_path / "work" / "evaluate" / "manifest.json").read_text())
    assert manifest["models"]["finetuned"]["model_path"] == training["model_dir"]
    assert manifest["results"]["humaneval"]["finetuned"]["base"]["total"] == 2
