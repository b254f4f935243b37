"""repair: more attempts for the instructions none of whose answers passed.

An instruction is *unsolved* when none of its executed samples passed and at
least one failed, timed out or ran out of memory (a sandbox ``error`` judges
the sandbox, not the answer). For up to ``rounds`` rounds, the model writes a
new response with tests for every unsolved instruction, and each is run in
the sandbox like the execute stage runs it (same program, same verdict
cache). With ``feedback`` on, the prompt shows the instruction, the failed
attempt (the seeded pick among the latest round's failures), its tests and
the tail of what the sandbox printed, and asks for a corrected response; with
it off, the model makes a fresh attempt from the instruction alone, as in
the responses stage. An instruction one of whose new answers passes is
*rescued* in that round and leaves the loop.

The output is every executed sample (``round`` 0) followed by every repair
attempt (``round`` 1, 2, ...; ``repaired_from`` names the failed sample shown),
each with its verdict, so the dedup and preferences stages treat a rescued
answer like any other passing one while its provenance stays in the row.
The manifest counts ``rescued_round_<r>`` per round, ``rescued`` in all and
``still_unsolved``; attempts that cannot be parsed are kept under
``dropped/`` with their reason. ``rounds: 0`` (the default, as published)
passes the executed samples through unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from pipeline.execution.samples import SAMPLE_COLUMNS
from pipeline.execution.verdicts import SandboxSession, build_program, sandbox_preflight
from pipeline.framework.errors import PipelineError
from pipeline.framework.ids import stable_id
from pipeline.framework.map_runner import manifest_fields
from pipeline.framework.progress import progress
from pipeline.framework.stage import WholeStage
from pipeline.generation.fewshot import load_bank
from pipeline.generation.prompting import ParseFailure, answer_with_tests, section
from pipeline.generation.responses import ResponseTask
from pipeline.generation.stage import GenerationConfig, ask
from pipeline.training.pairs import group_by_instruction, seeded_order
from sandbox import SandboxConfig

PART_ROWS = 10_000
REPAIRABLE = ("failed", "timeout", "oom")
VERDICT = ("status", "passed", "exit_code", "duration_s", "stdout", "stderr", "program_hash")


class RepairTask(ResponseTask):
    """An instruction (with, for feedback, the failed attempt and its test output) in; a response with tests out.

    The examples, the answer's header and its parsing are the responses stage's.
    """

    preamble = (
        "Each example below gives a programming instruction and then a response that solves it: a brief "
        "explanation and the complete Python solution in one fenced code block, followed by a tests section "
        "with assert statements that check it. When an earlier attempt and its test output are shown, the "
        "response fixes what made that attempt fail."
    )
    chat_reminder = ""

    def __init__(self, feedback: bool, tail_chars: int):
        self.feedback, self.tail_chars = feedback, tail_chars

    def query(self, row: dict) -> str:
        text = section("Instruction", row["instruction"])
        if self.feedback and row.get("response") is not None:
            output = (row.get("stderr") or row.get("stdout") or f"(no output; verdict {row['status']})")
            text += "\n" + section("Failed attempt", answer_with_tests(row["response"], row["tests"]))
            text += "\n" + section("Test output", output[-self.tail_chars:])
        return text


class RepairConfig(GenerationConfig):
    """Settings of the repair stage (off by default: ``rounds: 0``)."""

    rounds: int = Field(default=0, ge=0, description="Repair rounds for instructions with no passing sample "
                                                     "(0: none, the samples pass through).")
    feedback: bool = Field(default=True, description="Show the failed attempt and the sandbox's output tail; "
                                                     "false: a fresh attempt from the instruction alone.")
    feedback_chars: int = Field(default=1000, ge=1, description="Characters of the sandbox's output shown.")
    fewshot_k: int = Field(default=1, ge=0, description="Bank examples shown before each instruction.")
    n: int = Field(default=1, ge=1, description="New responses per unsolved instruction and round.")
    max_tokens: int = Field(default=1536, ge=1, description="Most new tokens per response.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="The sandbox's image, pool and limits.")
    drop_stdin_main: bool = Field(default=True, description="As in the execute stage: run a program without a "
                                                            "`__main__` block that reads standard input.")


class RepairStage(WholeStage):
    """Retry, up to R rounds, the instructions none of whose answers passed."""

    name = "repair"
    title = "Repair rounds: new attempts (with the failure shown) for instructions no sample solved"
    upstream = "execute"
    Config = RepairConfig
    uses_model = True
    timing_columns = ("duration_s",)
    input_columns = {
        "id": "sample id", "seed_id": "seed id", "instruction_id": "instruction id", "instruction": "the instruction",
        "response": "the response", "tests": "its tests", "status": "its verdict", "passed": "whether it passed",
    }
    output_columns = {
        **SAMPLE_COLUMNS,
        "tests": (pa.string(), "its tests"),
        "status": (pa.string(), "its verdict: passed, failed, timeout, oom or error"),
        "passed": (pa.bool_(), "whether its tests passed"),
        "exit_code": (pa.int32(), "the program's exit code (null if killed or never run)"),
        "duration_s": (pa.float64(), "seconds the program ran"),
        "stdout": (pa.string(), "tail of its standard output"),
        "stderr": (pa.string(), "tail of its standard error"),
        "program_hash": (pa.string(), "sha256 of the program run"),
        "round": (pa.int32(), "0: sampled by the responses stage; r: written in repair round r"),
        "repaired_from": (pa.string(), "the failed sample shown to the model (null in round 0 and without feedback)"),
    }

    def __init__(self, config: RepairConfig, pipeline_config: Any):
        super().__init__(config, pipeline_config)
        self.task = RepairTask(config.feedback, config.feedback_chars)
        self._backend = None

    def fingerprint_files(self) -> list[Path]:
        """The few-shot bank, when there are rounds to run."""
        return [Path(self.config.fewshot_file)] if self.config.rounds else []

    def preflight_checks(self, ctx) -> list:
        """With rounds to run: the sandbox answers, and the longest repair prompts fit the model's context."""
        if not self.config.rounds:
            return []
        from pipeline.generation.budget import prompt_checks

        cfg = self.config
        rows = [r for r in ctx.sample_rows(self.upstream, ["instruction", "response", "tests", "stderr", "stdout", "status", "id"],
                                        8)
                if r.get("status") in REPAIRABLE]
        bank = load_bank(Path(cfg.fewshot_file))
        prompts = [self.prompt(bank, row, 1) for row in rows]
        attempts = ctx.rows_in(self.name).times(cfg.rounds * cfg.n, "rounds x n (at most)")
        return [*sandbox_preflight(self.name, f"stages.{self.name}.sandbox", cfg.sandbox),
                *prompt_checks(ctx, self.name, self.model_config, prompts, max_tokens=cfg.max_tokens,
                               max_tokens_key=f"stages.{self.name}.max_tokens", n=cfg.n, rows=attempts,
                               sample=f"{len(prompts)} longest failed {self.upstream} rows")]

    def preflight_rows(self, rows_in):
        """Every input row, plus at most ``rounds x n`` attempts per row (only unsolved instructions get them)."""
        return rows_in.times(1 + self.config.rounds * self.config.n, "1 + rounds x n (at most)")

    def prompt(self, bank, row: dict, round_no: int):
        """The prompt (text, or chat turns) showing ``row``'s failure in round ``round_no``."""
        cfg = self.config
        examples = bank.sample(cfg.fewshot_k, self.seed, self.name, row["id"], round_no, max_chars=cfg.fewshot_max_chars)
        return self.task.chat_messages(examples, row) if cfg.mode == "chat" else self.task.completion_prompt(examples, row)

    def run(self, ctx) -> dict:
        """Pass the samples through, run the repair rounds, write everything with its round."""
        store = ctx.store
        store.reset_parts()  # rerun whole: generation is seeded and verdicts are cached, so it gives the same rows
        inputs = [{**row, "round": 0, "repaired_from": None} for row in ctx.source.iter_rows()]
        groups = group_by_instruction(inputs)
        unsolved = {iid: samples for iid, samples in groups.items()
                    if not any(r["passed"] for r in samples) and any(r["status"] in REPAIRABLE for r in samples)}
        stats = {"instructions_unsolved": len(unsolved), "rescued": 0}
        attempts, dropped = [], []
        if unsolved and self.config.rounds:
            attempts, dropped = self.repair(unsolved, stats)
        stats["still_unsolved"] = stats["instructions_unsolved"] - stats["rescued"]
        self._write(store, inputs, attempts, dropped, stats)
        return manifest_fields(store.commit_log())

    def repair(self, unsolved: dict[str, list[dict]], stats: dict) -> tuple[list[dict], list[dict]]:
        """The repair rounds: every attempt with its verdict, and the attempts that could not be parsed."""
        cfg = self.config
        latest = {iid: self.shown(samples) for iid, samples in unsolved.items()}
        attempts, dropped = [], []
        session = SandboxSession(cfg.sandbox, self.run_config.work_dir).open()
        bar = progress(total=cfg.rounds, desc="repair rounds", unit="rounds")
        try:
            for round_no in range(1, cfg.rounds + 1):
                targets = sorted(latest)
                new, bad = self.attempts([latest[iid] for iid in targets], round_no)
                dropped += bad
                verdicts = session.run({r["id"]: build_program(r["response"], r["tests"], cfg.drop_stdin_main)
                                        for r in new})
                for row in new:
                    row.update({k: verdicts[row["id"]][k] for k in VERDICT})
                attempts += new
                rescued = {r["instruction_id"] for r in new if r["passed"]}
                stats[f"rescued_round_{round_no}"] = len(rescued)
                stats["rescued"] += len(rescued)
                stats["repair_attempts"] = stats.get("repair_attempts", 0) + len(new)
                for iid in targets:
                    failures = [r for r in new if r["instruction_id"] == iid and r["status"] in REPAIRABLE]
                    if iid in rescued:
                        del latest[iid]
                    elif failures:
                        latest[iid] = self.shown(failures)
                bar.update(1)
                if not latest:
                    break
        finally:
            bar.close()
            session.close()
            if self._backend is not None:
                self._backend.close()
                self._backend = None
        return attempts, dropped

    def shown(self, samples: list[dict]) -> dict:
        """The failed sample shown to the model: the first repairable one in seeded order."""
        return next(r for r in seeded_order(samples, self.seed) if r["status"] in REPAIRABLE)

    def attempts(self, shown: list[dict], round_no: int) -> tuple[list[dict], list[dict]]:
        """New responses for each shown failure in round ``round_no``: parsed attempts, and unparsable ones."""
        from pipeline.llm import SamplingParams, create_backend

        cfg = self.config
        if self.model_config is None:
            raise PipelineError("stage repair generates text: the config needs a model section (model.backend, "
                                "model.model)")
        bank = load_bank(Path(cfg.fewshot_file))
        if self._backend is None:
            self._backend = create_backend(self.model_config)
        chat = cfg.mode == "chat"
        prompts = [self.prompt(bank, row, round_no) for row in shown]
        params = SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                repetition_penalty=cfg.repetition_penalty, stop=self.task.stop(),
                                seed=int(stable_id(self.seed, self.name, round_no, *(r["id"] for r in shown)), 16)
                                % 2**31)
        answers = ask(self._backend, self.task, prompts, params, chat=chat)
        new, bad = [], []
        for row, samples in zip(shown, answers):
            for index, (completion, parsed) in enumerate(samples):
                if isinstance(parsed, ParseFailure):
                    bad.append({"id": stable_id(row["id"], round_no, index), "instruction_id": row["instruction_id"],
                                "round": round_no, "completion": completion.text, "drop_reason": parsed.reason})
                    continue
                new.append({
                    "id": stable_id(row["id"], round_no, index, parsed["response"], parsed["tests"]),
                    "seed_id": row["seed_id"], "instruction_id": row["instruction_id"],
                    "instruction": row["instruction"], "response": parsed["response"], "tests": parsed["tests"],
                    "round": round_no, "repaired_from": row["id"] if cfg.feedback else None,
                })
        return new, bad

    def _write(self, store, inputs: list[dict], attempts: list[dict], dropped: list[dict], stats: dict) -> None:
        """The samples then the attempts in parts; each part records the input ids it holds, the last the stats."""
        rows = inputs + attempts
        chunks = [rows[i : i + PART_ROWS] for i in range(0, len(rows), PART_ROWS)] or [[]]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            ids = [r["id"] for r in chunk if r["round"] == 0]
            store.write_batch(stable_id(n, *(r["id"] for r in chunk)), chunk, self.output_schema(),
                              dropped if last else [], ids, stats if last else None,
                              keep_dropped=self.run_config.keep_dropped)
