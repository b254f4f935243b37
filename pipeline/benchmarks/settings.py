"""The evaluate stage's settings: benchmarks, models, decoding, time limits, sandbox, judge."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.benchmarks.contenders import BASE, FINETUNED, ModelEntry
from pipeline.benchmarks.judge import JudgeConfig
from pipeline.framework.config import StageConfig, not_fingerprinted
from sandbox import SandboxConfig


class EvaluateConfig(StageConfig):
    """Settings of the evaluate stage."""

    batch_size: int | None = not_fingerprinted(
        "Problems per generation call, committed as one Parquet part (an interrupted run resumes after the last); "
        "raise it for vLLM, which batches a whole call at once.", default=16, gt=0)
    benchmarks: list[str] = Field(default_factory=lambda: ["humaneval"], min_length=1, description=(
        "Benchmarks: humaneval, humaneval+, mbpp+, mbpp, or a file in one of their formats ([name=]path)."))
    benchmark_files: dict[str, str] = Field(default_factory=dict, description=(
        "Local path (or URL) per built-in benchmark name, for machines the release files cannot be downloaded on."))
    models: list[ModelEntry] = Field(default_factory=list, description=(
        "Models side by side, each {model: base | finetuned | directory | alias | Hub id | served name, label, "
        "prompt_format: auto | completion | chat, settings: {model-section fields}}; empty: base and/or finetuned."))
    evaluate_base: bool = Field(default=True, description="Without `models`: evaluate the base model (the `model` section).")
    evaluate_finetuned: bool = Field(default=True, description="Without `models`: evaluate the finetune stage's model.")
    prompt_format: Literal["auto", "completion", "chat"] = Field(default="auto", description=(
        "Without `models`: auto is completion for the base model and the chat template for the fine-tuned one."))
    base_overrides: dict = Field(default_factory=dict, description=(
        "Model settings that differ for the `base` model here (e.g. {backend: transformers} so that it runs on the "
        "same engine as the fine-tune when the generation stages used llamacpp); an entry's own settings win."))
    finetuned_overrides: dict = Field(default_factory=dict, description=(
        "Model settings that differ for the `finetuned` model (e.g. backend, base_url, served model name); "
        "an entry's own settings win."))
    greedy: bool = Field(default=True, description="Greedy decoding, one answer per problem (pass@1 as published).")
    samples: int = Field(default=1, ge=1, description="Answers per problem when `greedy` is false (pass@k needs n >= k).")
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], description="The k of pass@k (those <= samples are reported).")
    temperature: float = Field(default=0.2, gt=0, description="Sampling temperature when `greedy` is false.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass when `greedy` is false.")
    max_tokens: int = Field(default=512, ge=1, description="Most new tokens per answer.")
    limit: int | None = Field(default=None, ge=1, description="Evaluate only the first N problems of each benchmark.")
    task_ids: list[str] | None = Field(default=None, description="Evaluate only these problems, e.g. [HumanEval/0].")
    time_limit_factor: float = Field(default=4.0, gt=0, description="An answer's time limit is this times its reference solution's runtime (EvalPlus style), ...")
    time_limit_floor_s: float = Field(default=4.0, gt=0, description="... but never less than this many seconds.")
    reference_timeout_s: float = Field(default=60.0, gt=0, description="Time limit of the runs that measure the reference solutions.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="The sandbox's image, pool and limits.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The optional judged comparison of two models.")
    log_failures: int = not_fingerprinted("How many unsolved task ids to list per model in the log.", default=10, ge=0)

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> "EvaluateConfig":
        if not (self.models or self.evaluate_base or self.evaluate_finetuned):
            raise ValueError("evaluate_base and evaluate_finetuned are both false and no models are listed: nothing to evaluate")
        if self.greedy and self.samples > 1:
            raise ValueError("samples > 1 needs greedy: false (greedy decoding gives one answer)")
        return self

    def sampling(self, stop: list[str]):
        """Greedy decoding, or ``samples`` answers at ``temperature`` (each problem's seed is its own)."""
        from pipeline.llm import SamplingParams

        if self.greedy:
            return SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=self.max_tokens, stop=stop)
        return SamplingParams(n=self.samples, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, stop=stop)

    def entries(self) -> list[ModelEntry]:
        """The models to evaluate (the list given, else base and/or finetuned), with their overrides applied."""
        fmt = self.prompt_format
        listed = self.models or ([ModelEntry(model=BASE, prompt_format=fmt)] if self.evaluate_base else []) + (
            [ModelEntry(model=FINETUNED, prompt_format=fmt)] if self.evaluate_finetuned else [])
        overrides = {BASE: self.base_overrides, FINETUNED: self.finetuned_overrides}
        return [e.model_copy(update={"settings": {**overrides[e.model], **e.settings}}) if overrides.get(e.model) else e
                for e in listed]
