"""The StarChat recipe: its published settings, a demo run end to end (Gemma 3 270M base from PyPI, our
OpenAssistant-layout fixture, HumanEval in the Docker sandbox), and a chat model that ends its turns."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture

RECIPE = REPO / "configs" / "starchat.yaml"


def load_recipe(overrides=()):
    """configs/starchat.yaml validated by the pipeline's own config model."""
    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model, load_config
    from stages import PIPELINE

    model = build_config_model({e.name: e.Config for e in PIPELINE}, _model_config_class())
    return load_config(RECIPE, model, overrides)


def test_the_recipe_carries_the_published_starchat_settings():
    config = load_recipe()
    finetune = config.stages.finetune
    assert config.model.model == "bigcode/starcoderbase"
    assert (finetune.optimizer, finetune.learning_rate, finetune.lr_scheduler, finetune.warmup_ratio) == \
        ("adamw_torch", 2e-5, "cosine", 0.03)
    assert finetune.num_epochs == 3 and finetune.per_device_batch_size * finetune.gradient_accumulation_steps == 256
    assert (finetune.max_length, finetune.weight_decay, finetune.chat_format) == (1024, 0.0, "chatml")
    sources = finetune.conversations
    assert (sources.dataset, sources.format, sources.languages, sources.paths) == \
        ("OpenAssistant/oasst1", "oasst", ["en"], "best")
    assert config.stages.evaluate.evaluate_base and config.stages.evaluate.evaluate_finetuned


def demo_command() -> list[str]:
    """The demo command written in the recipe's header, as arguments after ``run_pipeline.py``."""
    lines = RECIPE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Demo run"))
    command = []
    for line in lines[start + 1:]:
        text = line.lstrip("#").strip()
        if command or text.startswith("python run_pipeline.py"):
            command.append(text.rstrip("\\").strip())
            if not text.endswith("\\"):
                break
    args = shlex.split(" ".join(command))
    assert args[:2] == ["python", "run_pipeline.py"]
    return args[2:]


def test_the_documented_demo_command_is_valid():
    args = demo_command()
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "-o"]
    config = load_recipe(overrides)
    assert config.model.model == "gemma3-270m-gguf"
    assert (REPO / config.stages.finetune.conversations.dataset).is_file()


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_its_model_speaks_in_starchat_turns(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    args = [a if not a.startswith("run.work_dir=") else f"run.work_dir={tmp_path / 'work'}" for a in demo_command()]
    result = run_cli(*args, timeout=3000)
    assert result.returncode == 0, result.stderr[-4000:]
    work = tmp_path / "work"
    finetune = json.loads((work / "finetune" / "manifest.json").read_text())
    assert finetune["conversations"]["conversations"] == finetune["rows_in"] == 5
    assert finetune["conversations"]["dropped"] == {"deleted": 1, "language": 2, "lower_ranked_branch": 1,
                                                    "not_reviewed": 2, "trailing_user_turn": 1}
    assert finetune["training"]["added_tokens"] == 4
    evaluate = json.loads((work / "evaluate" / "manifest.json").read_text())
    assert set(evaluate["results"]["humaneval"]) >= {"base", "finetuned"}

    model_dir = Path(finetune["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
        tokenize=False)
    assert rendered.endswith("<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>")
    assert all(len(tokenizer.encode(t, add_special_tokens=False)) == 1
               for t in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"))
    assert AutoConfig.from_pretrained(model_dir).vocab_size >= len(tokenizer)


REPLIES = [("hello", "Hi! How can I help?"), ("how are you?", "Fine, thanks."), ("bye", "Goodbye!")]


@pytest.mark.slow
def test_a_chat_model_stops_at_its_end_of_turn_marker(tmp_path, tiny_model_dir):  # noqa: F811
    """The marker is read from the template: the streamed answer ends there even when the model's generation
    config names only <eos> (plain generation then runs on to max_tokens)."""
    from pipeline.llm import LLMConfig, SamplingParams, create_backend
    from tests.test_finetune_stage import recipe, run_stage, write_data

    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in REPLIES]
    data = write_data(tmp_path / "chats.jsonl", rows * 4)
    manifest = run_stage(recipe(tmp_path, tiny_model_dir, chat_format="chatml", max_steps=None, num_epochs=10,
                                gradient_accumulation_steps=1, gradient_checkpointing=False), data)
    model_dir = Path(manifest["model_dir"])
    generation = json.loads((model_dir / "generation_config.json").read_text())
    eos = json.loads((model_dir / "config.json").read_text())["eos_token_id"]
    (model_dir / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": eos}))
    params = SamplingParams(max_tokens=40)
    with create_backend(LLMConfig(backend="transformers", model=str(model_dir), device="cpu",
                                  show_progress=False)) as backend:
        for question, answer in REPLIES:
            conversation = [{"role": "user", "content": question}]
            assert "".join(backend.stream_chat(conversation, params)) == answer
            plain = backend.generate_chat([conversation], params)[0][0]
            assert plain.finish_reason == "length" and plain.text.startswith(answer) and plain.text != answer
