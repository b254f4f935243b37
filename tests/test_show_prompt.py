"""``--show-prompt STAGE [--row ID]``: the prompt a stage would send for one row, rendered without a model."""

from __future__ import annotations

import json

import yaml

from pipeline.cli import _model_config_class
from pipeline.framework.config import build_config_model, load_config
from pipeline.framework.errors import PipelineError
from pipeline.framework.runner import Runner
from pipeline.generation.stage import example_as_row
from stages import PIPELINE
from tests.conftest import run_cli

MODEL = build_config_model({s.name: s.Config for s in PIPELINE}, _model_config_class())


def recipe(tmp_path, **stages) -> "Path":  # noqa: F821 - pathlib.Path
    """A recipe with a model section that nothing connects to (no prompt needs the model)."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"run": {"work_dir": str(tmp_path / "work")}, "stages": stages,
                                    "model": {"backend": "openai", "model": "nobody", "base_url": "http://127.0.0.1:9/v1"}}))
    return path


def runner(tmp_path, **stages) -> Runner:
    return Runner(load_config(recipe(tmp_path, **stages), MODEL), PIPELINE)


def test_bank_examples_stand_in_before_the_upstream_exists(tmp_path):
    run = runner(tmp_path)
    stage = run.stage("concepts")
    bank = stage.bank.examples
    row, where, prompt = run.rendered_prompt("concepts")
    assert row["id"] == bank[0].id and "stand-ins" in where
    assert prompt == stage.build_prompt(example_as_row(bank[0]))  # exactly what process_batch would send
    assert prompt.endswith("### Concepts\n")
    assert run.rendered_prompt("concepts", bank[2].id)[0]["id"] == bank[2].id  # by id
    assert run.rendered_prompt("concepts", "1")[0]["id"] == bank[1].id  # by index


def test_rows_come_from_the_upstream_output_or_input_and_chat_mode_gives_turns(tmp_path):
    data = tmp_path / "instructions.jsonl"
    rows = [{"id": f"i{n}", "seed_id": f"s{n}", "instruction": f"Write function number {n}."} for n in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = runner(tmp_path, responses={"mode": "chat"})
    row, where, prompt = run.rendered_prompt("responses", "i2", str(data))
    assert row["id"] == "i2" and str(data) in where
    assert [m["role"] for m in prompt][0] == "system" and prompt[-1]["role"] == "user"
    assert prompt[-1]["content"].startswith("### Instruction\nWrite function number 2.")
    assert prompt == run.stage("responses").build_prompt(row)


def test_the_docstring_judge_and_repair_show_their_prompts_and_other_stages_say_they_prompt_nothing(tmp_path):
    run = runner(tmp_path)
    _, _, judge = run.rendered_prompt("seeds")
    assert judge.endswith("### Docstring describes the code\n")
    assert run.prompting_stages() == ["seeds", "concepts", "instructions", "responses", "repair"]
    for name, message in (("execute", "prompts no model"), ("repair", "no input row")):
        try:
            run.rendered_prompt(name)
        except PipelineError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{name} rendered a prompt")


def test_the_command_line_prints_the_prompt_and_a_header(tmp_path):
    path = recipe(tmp_path, instructions={"mode": "chat", "fewshot_k": 1})
    result = run_cli("-c", str(path), "--show-prompt", "instructions", "--row", "0")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("# instructions: chat prompt, 4 messages, for row ")
    assert result.stdout.startswith("--- system ---\n") and "--- user ---\nConcepts: " in result.stdout
    assert "exercise about a Python " in result.stdout and not (tmp_path / "work").exists()  # nothing written, no model
    bad = run_cli("-c", str(path), "--row", "0", "--status")
    assert bad.returncode == 2 and "--row goes with --show-prompt" in bad.stderr
