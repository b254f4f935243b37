"""Config validation: unknown keys, wrong types and missing values are named by their full key path."""

from __future__ import annotations

import pytest
import yaml

from pipeline.cli import _model_config_class
from pipeline.framework.config import apply_overrides, build_config_model, load_config
from pipeline.framework.errors import ConfigError
from pipeline.framework.stage import PlannedStage
from stages import PIPELINE
from tests.conftest import REPO, run_cli

MODEL = build_config_model(
    {e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE}, _model_config_class()
)


def _write(tmp_path, data) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_recipes_in_configs_validate():
    demo = load_config(REPO / "configs/demo.yaml", MODEL)
    assert demo.stages.seeds.source.kind == "stdlib"
    assert (demo.model.backend, demo.model.model) == ("llamacpp", "qwen2.5-coder-0.5b-instruct-gguf")
    assert demo.model.gguf_weights == "q8_0"  # generation and both evaluated models from 8-bit exports
    evaluated = demo.stages.evaluate.entries()
    assert [(e.model, e.settings.get("backend", "llamacpp"), e.settings.get("gguf_weights"), e.prompt_format)
            for e in evaluated] == [("base", "llamacpp", None, "completion"), ("finetuned", "llamacpp", None, "completion")]
    gemma = load_config(REPO / "configs/demo-gemma-base.yaml", MODEL)
    assert (gemma.model.backend, gemma.model.model) == ("transformers", "gemma3-270m-gguf")
    mini = load_config(REPO / "configs/mini-repro.yaml", MODEL)
    assert mini.stages.evaluate.limit is None and mini.stages.responses.n == 3
    paper = load_config(REPO / "configs/selfcodealign-sc2-15b.yaml", MODEL)
    assert paper.model.backend == "vllm" and paper.model.model == "bigcode/starcoder2-15b"
    assert paper.stages.seeds.source.dataset == "bigcode/the-stack-dedup"
    responses = paper.stages.responses
    assert (responses.n, responses.temperature, responses.max_tokens) == (10, 0.7, 1536)
    assert paper.stages.concepts.fewshot_k == 8
    finetune = paper.stages.finetune
    assert (finetune.learning_rate, finetune.num_epochs, finetune.gradient_accumulation_steps) == (1e-5, 4, 64)
    assert (finetune.warmup_ratio, finetune.max_length, finetune.dropout) == (0.05, 1280, 0.0)


def test_misspelled_key_names_full_path_and_choices(tmp_path):
    path = _write(tmp_path, {"run": {"work_dir": "w"}, "stages": {"seeds": {"max_seds": 3}}})
    with pytest.raises(ConfigError) as err:
        load_config(path, MODEL)
    message = str(err.value)
    assert "stages.seeds.max_seds: unknown key" in message
    assert "max_seeds" in message and path in message


def test_wrong_type_and_missing_value(tmp_path):
    path = _write(tmp_path, {"run": {"seed": "abc"}, "stages": {"seeds": {"max_lines": "many"}}})
    with pytest.raises(ConfigError) as err:
        load_config(path, MODEL)
    message = str(err.value)
    assert "run.work_dir: missing required value" in message
    assert "run.seed: Input should be a valid integer" in message
    assert "stages.seeds.max_lines: Input should be a valid integer" in message and "'many'" in message


def test_overrides_parse_values_and_reach_any_key(tmp_path):
    path = _write(tmp_path, {"run": {"work_dir": "w"}})
    config = load_config(path, MODEL, ["stages.seeds.max_seeds=100", "run.seed=7", "stages.seeds.filters=[no_todo]"])
    assert config.stages.seeds.max_seeds == 100 and config.run.seed == 7
    assert config.stages.seeds.filters == ["no_todo"]
    with pytest.raises(ConfigError, match=r"stages\.seeds\.nope: unknown key"):
        load_config(path, MODEL, ["stages.seeds.nope=1"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(path, MODEL, ["stages.seeds.max_seeds"])


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="run.seed is a value"):
        apply_overrides({"run": {"seed": 1}}, ["run.seed.x=2"])


def test_whole_output_filter_must_come_last(tmp_path):
    path = _write(tmp_path, {"run": {"work_dir": "w"}, "stages": {"seeds": {"filters": ["near_dedup", "no_todo"]}}})
    with pytest.raises(ConfigError, match=r"stages\.seeds\.filters: .*no_todo comes after a whole-output filter"):
        load_config(path, MODEL)
    fine = _write(tmp_path, {"run": {"work_dir": "w"}, "model": {"backend": "openai", "model": "m"},
                             "stages": {"seeds": {"filters": ["no_todo", "docstring_judge", "near_dedup"]}}})
    assert load_config(fine, MODEL).stages.seeds.filters[-2:] == ["docstring_judge", "near_dedup"]


def test_cli_misspelled_key_is_one_line_and_exit_2(tmp_path):
    path = _write(tmp_path, {"run": {"work_dir": str(tmp_path / "w")}, "stages": {"seeds": {"max_seds": 3}}})
    result = run_cli("--config", path, "--stage", "seeds")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "stages.seeds.max_seds: unknown key" in lines[0]
    assert not (tmp_path / "w").exists(), "nothing may be written before the config is valid"


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  work_dir: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(path, MODEL)
