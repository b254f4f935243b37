"""The shape shared by the generation stages (concepts, instructions, responses).

A generation stage is a map stage whose batch function builds one prompt per
input row (k bank examples chosen by the run seed and the row id), asks the
configured backend for ``n`` completions each (sampled with a seed of the
row's own, so a row's completions do not depend on its batch), and parses every completion
with its task. A completion that hit the token limit is dropped as
``truncated``; one that does not parse is dropped with its parser's reason.
Everything else becomes an output row carrying the ids back to its seed.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeline.framework.config import ExistingFile, StageConfig, not_fingerprinted
from pipeline.framework.errors import PipelineError
from pipeline.framework.ids import seed_from, stable_id
from pipeline.framework.preflight import FAIL, Check, PreflightContext, RowEstimate
from pipeline.framework.stage import BatchResult, MapStage
from pipeline.generation.fewshot import DEFAULT_BANK, FewShotBank, FewShotExample, load_bank
from pipeline.generation.prompting import ParseFailure, PromptTask

PREFLIGHT_SAMPLE = 64
"""Upstream rows (the longest) whose prompts ``--preflight`` renders."""


def example_as_row(example: FewShotExample) -> dict:
    """A bank example standing in for an input row of any generation stage (it carries every step's fields)."""
    return {"id": example.id, "seed_id": example.id, "code": example.seed, "concepts": list(example.concepts),
            "instruction": example.instruction}


def prompt_chars(prompt: Any) -> int:
    """The length of a prompt in characters: its text, or its messages' contents."""
    return len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)


class GenerationConfig(StageConfig):
    """Settings every generation stage accepts."""

    fewshot_file: ExistingFile = not_fingerprinted(
        "The few-shot example bank (YAML); its content, not its path, is part of the fingerprint.", default=DEFAULT_BANK
    )
    fewshot_k: int = Field(default=8, ge=0, description="Bank examples shown before each query.")
    fewshot_max_chars: int | None = Field(
        default=None, gt=0,
        description="Draw only examples whose instruction, response and tests total at most this many characters.",
    )
    mode: Literal["completion", "chat"] = Field(
        default="completion",
        description="completion: few-shot text for a base model; chat: the same task as chat turns for an instruct model.",
    )
    n: int = Field(default=1, ge=1, description="Completions per prompt.")
    temperature: float = Field(
        default=0.7, ge=0, description="Sampling temperature (0.7 at every generation step, as published); 0 is greedy."
    )
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(default=512, ge=1, description="Most new tokens per completion.")
    chat_reminder: str | None = Field(
        default=None,
        description="Chat mode: the line that follows the last query and restates the answer's form "
        "(default: the step's own; '' for none). Small instruct models follow it more than the examples.",
    )
    repetition_penalty: float = Field(
        default=1.0, gt=0,
        description="Above 1 discourages repeating tokens (1 = off, as published); helps small models that loop.",
    )

    def examples(self, bank: FewShotBank, *key: object) -> list[FewShotExample]:
        """The ``fewshot_k`` bank examples ``key`` (run seed, stage, row id, ...) draws."""
        return bank.sample(self.fewshot_k, *key, max_chars=self.fewshot_max_chars)

    def sampling(self, stop: list[str], seed: int | None = None):
        """The sampling parameters of every prompt; ``seed`` for the whole call (else each row's own)."""
        from pipeline.llm import SamplingParams

        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              repetition_penalty=self.repetition_penalty, stop=stop, seed=seed)


class GenerationStage(MapStage):
    """A map stage that prompts the model once per input row."""

    uses_model = True
    parallel = False
    ray_layout = "per_gpu"
    task: ClassVar[PromptTask]

    def __init__(self, config: GenerationConfig, pipeline_config: Any):
        super().__init__(config, pipeline_config)
        self._backend = None

    def fingerprint_files(self) -> list[Path]:
        return [Path(self.config.fewshot_file)]

    @property
    def bank(self) -> FewShotBank:
        """The few-shot bank named by the config."""
        return load_bank(Path(self.config.fewshot_file))

    def setup(self) -> None:
        """Load the bank (failing early on a bad file) and start the backend."""
        self.bank  # noqa: B018 - validates the bank before the model loads
        if self._backend is None:
            self._backend = open_backend(self.name, self.model_config)

    def teardown(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- what a subclass adds ------------------------------------------------
    def query_row(self, row: dict) -> dict:
        """The fields the task's query shows for this row (default: the row itself)."""
        return row

    @abstractmethod
    def output_row(self, row: dict, fields: dict, index: int) -> dict:
        """The output row for completion ``index`` of ``row`` with parsed ``fields``."""

    # -- the batch function ------------------------------------------------
    def prompt_examples(self, row: dict):
        """The k bank examples shown for this row, chosen by run seed, stage and row id."""
        return self.config.examples(self.bank, self.seed, self.name, row["id"])

    def build_prompt(self, row: dict):
        """The completion prompt (text) or chat messages for one row."""
        return self.render(self.prompt_examples(row), row)

    def render(self, examples: list[FewShotExample], row: dict):
        """The prompt showing ``examples`` and then ``row``'s query, in the configured mode."""
        return self.task.render(examples, self.query_row(row), chat=self.config.mode == "chat",
                                reminder=self.config.chat_reminder)

    def show_prompt(self, row: dict):
        """``--show-prompt``: the prompt of ``row``, as :meth:`process_batch` sends it."""
        return self.build_prompt(row)

    def stand_in_rows(self) -> list[dict]:
        """The bank's examples, standing in for upstream rows that do not exist yet."""
        return [example_as_row(e) for e in self.bank.examples]

    # -- preflight ------------------------------------------------------------
    def preflight_rows(self, rows_in: RowEstimate) -> RowEstimate:
        """Each input row gives at most ``n`` output rows."""
        return rows_in.times(self.config.n, f"{self.name}.n")

    def preflight_prompts(self, ctx: PreflightContext) -> tuple[list, str]:
        """Real prompts to measure, and where they came from.

        The longest upstream rows in the work dir when there are any, else the
        bank's examples standing in as queries; each with the k examples its id
        draws, plus the worst draw: the longest query shown with the k longest
        examples the bank can draw (any row of a long run may draw them).
        """
        rows = ctx.sample_rows(self.upstream, list(self.input_columns), PREFLIGHT_SAMPLE) if self.upstream else []
        where = f"{len(rows)} longest {self.upstream} rows"
        if not rows:
            rows = [example_as_row(e) for e in self.bank.examples]
            where = f"{len(rows)} bank examples as queries"
        prompts = [self.build_prompt(row) for row in rows]
        cfg = self.config
        pool = self.bank.sample(len(self.bank.examples), 0, max_chars=cfg.fewshot_max_chars)
        longest = sorted(pool, key=lambda e: -len(self.task.example_query(e) + self.task.example_answer(e)))
        worst = max((self.render(longest[: cfg.fewshot_k], row) for row in rows), key=prompt_chars)
        return [*prompts, worst], f"{where} + worst draw of {cfg.fewshot_k}"

    def preflight_checks(self, ctx: PreflightContext) -> list[Check]:
        """The longest prompt plus max_tokens against the context, and the stage's generation budget."""
        from pipeline.generation.budget import prompt_checks

        try:
            prompts, where = self.preflight_prompts(ctx)
        except PipelineError as exc:
            return [Check(self.name, "few-shot bank", "unusable", str(self.config.fewshot_file), FAIL,
                          f"{self.name}: {exc}")]
        return prompt_checks(ctx, self.name, self.model_config, prompts, max_tokens=self.config.max_tokens,
                             max_tokens_key=f"stages.{self.name}.max_tokens", n=self.config.n,
                             rows=ctx.rows_in(self.name), sample=where)

    def sampling(self):
        """The sampling parameters of every prompt (the seeds are per row: :meth:`row_seed`)."""
        return self.config.sampling(self.task.stop())

    def row_seed(self, row: dict) -> int:
        """The sampling seed of one row: the run seed, the stage and the row id, never its batch."""
        return row_seed(self.seed, self.name, row["id"])

    def process_batch(self, rows: list[dict]) -> BatchResult:
        """Prompt the model for every row of the batch and parse each completion."""
        self.setup()
        prompts = [self.build_prompt(row) for row in rows]
        seeds = [self.row_seed(row) for row in rows]
        answers = ask(self._backend, self.task, prompts, self.sampling(), chat=self.config.mode == "chat", seeds=seeds)
        result = BatchResult()
        result.count("prompts", len(rows))
        for row, samples in zip(rows, answers):
            for index, (completion, parsed) in enumerate(samples):
                result.count("completions")
                if isinstance(parsed, ParseFailure):
                    audit = {"id": stable_id(row["id"], index), "parent_id": row["id"], "completion": completion.text}
                    result.drop(audit, parsed.reason)
                else:
                    result.keep(self.output_row(row, parsed, index))
        return result


def open_backend(stage: str, model_config: Any):
    """The generation backend of the config's model section; a stage that generates without one is an error."""
    if model_config is None:
        raise PipelineError(f"stage {stage} generates text: the config needs a model section "
                            "(model.backend, model.model)")
    from pipeline.llm import create_backend

    return create_backend(model_config)


def row_seed(run_seed: int, step: str, row_id: str) -> int:
    """A sampling seed for one row of one step, from the run seed and the row id alone."""
    return seed_from(run_seed, step, row_id)


def ask(backend, task: PromptTask, prompts: list, params, chat: bool = False,
        seeds: list[int] | None = None) -> list[list[tuple[Any, Any]]]:
    """Send prompts (text, or chat messages when ``chat``), each with its seed, and parse every completion.

    Returns, per prompt, ``(completion, parsed fields or ParseFailure)`` for each of the n samples; a
    completion that hit the token limit is a ``ParseFailure("truncated")``.
    """
    generate = backend.generate_chat if chat else backend.generate
    outputs = generate(prompts, params, seeds=seeds)
    answers = []
    for completions in outputs:
        parsed = [
            (c, task.read_answer(c.text) if c.finish_reason == "stop" else ParseFailure("truncated"))
            for c in completions
        ]
        answers.append(parsed)
    return answers
