"""The memory estimate: StarCoder2-15B's numbers, the command, local shapes, the fit error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.framework.errors import PipelineError
from pipeline.training import memory
from tests.conftest import REPO
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture


def test_starcoder2_15b_parameter_count():
    shape = memory.lookup("starcoder2-15b")
    assert shape.n_params == 15_957_889_024  # untied output layer, biases, LayerNorm weights and biases
    assert memory.lookup("bigcode/starcoder2-15b").n_params == shape.n_params


def test_starcoder2_15b_at_the_papers_settings_fits_an_a100_80gb():
    est = memory.estimate(memory.lookup("starcoder2-15b"), 1280, 1, bf16=True, fused_attention=True, cuda=True)
    gib = memory.GIB
    assert est.weights == est.gradients == 15_957_889_024 * 2
    assert est.optimizer_state < 0.1 * gib  # factored second moments: rows + columns per matrix
    assert est.activations_checkpointed < est.activations
    assert 60 * gib < est.total(True) < est.total(False) < 80 * gib
    memory.check_fit(est, True, 80 * gib, "A100 80GB")
    with pytest.raises(PipelineError, match="does not fit.*40.0 GiB available"):
        memory.check_fit(est, True, 40 * gib, "a 40 GB card")


def test_memory_command_prints_the_starcoder2_estimate():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.training.memory", "--model", "starcoder2-15b", "--seq-len", "1280",
         "--batch", "1", "--bf16"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "starcoder2-15b, 15.96B parameters" in out and "bfloat16, batch 1 x 1280 tokens" in out
    for label in ("weights", "gradients", "Adafactor state (factored)", "activations, no checkpointing",
                  "activations, checkpointing", "total with checkpointing"):
        assert label in out
    assert "29.72 GiB" in out  # weights (and gradients) in bfloat16


def test_memory_command_rejects_an_unknown_model():
    result = subprocess.run([sys.executable, "-m", "pipeline.training.memory", "--model", "nope/nothing"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown model" in result.stderr


def test_local_dir_shapes_come_from_safetensors_headers(tiny_model_dir):  # noqa: F811 - the fixture
    from transformers import AutoModelForCausalLM

    shape = memory.lookup(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.n_params == model.num_parameters()
    grown = shape.with_extra_tokens(4)
    assert grown.n_params == shape.n_params + 2 * 4 * 64  # untied: embeddings and output layer


def test_config_only_dir_uses_the_analytic_shapes(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    config.save_pretrained(tmp_path)
    assert memory.lookup(str(tmp_path)).n_params == LlamaForCausalLM(config).num_parameters()


def test_adafactor_state_is_factored():
    shape = memory.ModelShape("m", 1, 8, 2, 2, 4, 16, 10, True, tensors=[(1000, 500), (500,)])
    est = memory.estimate(shape, 4, 1, bf16=False, fused_attention=True, cuda=False)
    assert est.optimizer_state == 4 * (1000 + 500) + 4 * 500


def test_layouts_for_starcoder2_15b_on_1_2_4_8_gpus():
    from pipeline.training.layouts import LAYOUTS, layout_estimate

    shape = memory.lookup("starcoder2-15b")
    gib = memory.GIB
    single = memory.estimate(shape, 1280, 1, bf16=True, fused_attention=True, cuda=True).total(True)
    assert layout_estimate(shape, "ddp", 1).per_gpu == single  # one GPU: the single-device estimate (65.2 GiB)
    assert round(single / gib, 1) == 65.2
    assert layout_estimate(shape, "ddp", 2).per_gpu > single  # DDP's buckets: a second copy of the gradients
    for layout in ("fsdp", "zero3", "zero3+offload"):
        needs = [layout_estimate(shape, layout, n).per_gpu for n in (1, 2, 4, 8)]
        assert needs == sorted(needs, reverse=True), layout  # more GPUs, smaller shards
    fsdp8, zero8 = layout_estimate(shape, "fsdp", 8), layout_estimate(shape, "zero3", 8)
    assert fsdp8.parts["weights"] == -(-shape.n_params * 2 // 8)
    assert zero8.per_gpu - fsdp8.per_gpu == -(-8 * shape.n_params // 8)  # fp32 master weights and gradients
    offload = layout_estimate(shape, "fsdp+offload", 4)
    assert offload.host > 0 and offload.parts["weights"] == 0
    lora, qlora = layout_estimate(shape, "lora", 1), layout_estimate(shape, "qlora", 1)
    assert lora.parts["gradients"] < 0.01 * single and qlora.per_gpu < 24 * gib < lora.per_gpu < 40 * gib
    assert set(LAYOUTS) == {"ddp", "fsdp", "fsdp+offload", "zero3", "zero3+offload", "lora", "qlora"}


def test_memory_command_prints_the_fit_table():
    result = subprocess.run([sys.executable, "-m", "pipeline.training.memory", "--model", "starcoder2-15b", "--bf16",
                             "--table"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].split() == ["layout", "1", "GPU", "2", "GPUs", "4", "GPUs", "8", "GPUs"]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert list(rows) == ["ddp", "fsdp", "fsdp+offload", "zero3", "zero3+offload", "lora", "qlora"]
    assert rows["ddp"].split()[1:3] == ["65.2", "80"]  # fits one 80 GB card, no 40 or 24 GB one
    assert "24,40,80" in rows["fsdp"] and "none" in rows["zero3"]
    bad = subprocess.run([sys.executable, "-m", "pipeline.training.memory", "--model", "starcoder2-15b",
                          "--layout", "tp"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown layout 'tp'" in bad.stderr


def test_lora_parameter_count_matches_peft(tiny_model_dir):  # noqa: F811 - the fixture
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipeline.training.layouts import lora_params

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable, _ = model.get_nb_trainable_parameters()
    assert sum(a * b for a, b in lora_params(memory.lookup(str(tiny_model_dir)), 4)) == trainable
