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

from pipeline.execution.samples import EXECUTED_COLUMNS, FAILED_STATUSES, group_by_instruction, with_verdict
from pipeline.execution.verdicts import SandboxSession, build_program, sandbox_preflight
from pipeline.framework.ids import seed_from, seeded_order, stable_id
from pipeline.framework.progress import progress
from pipeline.framework.stage import WholeStage
from pipeline.framework.store import PartWriter
from pipeline.generation.fewshot import load_bank
from pipeline.generation.prompting import ParseFailure
from pipeline.generation.responses import RepairTask
from pipeline.generation.stage import GenerationConfig, ask, open_backend
from sandbox import SandboxConfig



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
    version = "2"  # chat prompts end with a reminder of the answer's format (without it 17 of 22 lacked tests)
    upstream = "execute"
    Config = RepairConfig
    uses_model = True
    timing_columns = ("duration_s",)
    input_columns = {
        "id": "sample id", "seed_id": "seed id", "instruction_id": "instruction id", "instruction": "the instruction",
        "response": "the response", "tests": "its tests", "status": "its verdict", "passed": "whether it passed",
    }
    output_columns = {
        **EXECUTED_COLUMNS,
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
        columns = ["id", "instruction", "response", "tests", "stderr", "stdout", "status"]
        prompts = [self.prompt(r, 1) for r in ctx.sample_rows(self.upstream, columns, 8) if r.get("status") in FAILED_STATUSES]
        attempts = ctx.rows_in(self.name).times(cfg.rounds * cfg.n, "rounds x n (at most)")
        return [*sandbox_preflight(self.name, f"stages.{self.name}.sandbox", cfg.sandbox),
                *prompt_checks(ctx, self.name, self.model_config, prompts, max_tokens=cfg.max_tokens,
                               max_tokens_key=f"stages.{self.name}.max_tokens", n=cfg.n, rows=attempts,
                               sample=f"{len(prompts)} longest failed {self.upstream} rows")]

    def preflight_rows(self, rows_in):
        """Every input row, plus at most ``rounds x n`` attempts per row (only unsolved instructions get them)."""
        return rows_in.times(1 + self.config.rounds * self.config.n, "1 + rounds x n (at most)")

    def prompt(self, row: dict, round_no: int):
        """The prompt (text, or chat turns) showing ``row``'s failure in round ``round_no``."""
        examples = self.config.examples(load_bank(Path(self.config.fewshot_file)), self.seed, self.name, row["id"],
                                        round_no)
        return self.task.render(examples, row, chat=self.config.mode == "chat", reminder=self.config.chat_reminder)

    def show_prompt(self, row: dict):
        """``--show-prompt``: the round-1 prompt showing a failed sample (a row of the execute stage)."""
        return self.prompt(row, 1)

    def prompt_rows(self, ctx):
        """The samples a repair round would show: the failed ones."""
        return (row for row in ctx.source.iter_rows() if row.get("status") in FAILED_STATUSES)

    def run(self, ctx) -> dict:
        """Pass the samples through, run the repair rounds, write everything with its round."""
        store = ctx.store
        store.reset_parts()  # rerun whole: generation is seeded and verdicts are cached, so it gives the same rows
        inputs = [{**row, "round": 0, "repaired_from": None} for row in ctx.source.iter_rows()]
        groups = group_by_instruction(inputs)
        unsolved = {iid: samples for iid, samples in groups.items()
                    if not any(r["passed"] for r in samples) and any(r["status"] in FAILED_STATUSES for r in samples)}
        stats = {"instructions_unsolved": len(unsolved), "rescued": 0}
        attempts, dropped = [], []
        if unsolved and self.config.rounds:
            attempts, dropped = self.repair(unsolved, stats)
        stats["still_unsolved"] = stats["instructions_unsolved"] - stats["rescued"]
        writer = PartWriter(store, self.output_schema(), self.run_config.keep_dropped)
        for row in inputs:  # the samples, then the attempts (not input rows); drops and counters with the last part
            writer.add([row["id"]], [row])
        for row in attempts:
            writer.add(kept=[row])
        writer.add(dropped=dropped, stats=stats)
        return writer.close()

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
                new = [with_verdict(row, verdicts[row["id"]]) for row in new]
                attempts += new
                rescued = {r["instruction_id"] for r in new if r["passed"]}
                stats[f"rescued_round_{round_no}"] = len(rescued)
                stats["rescued"] += len(rescued)
                stats["repair_attempts"] = stats.get("repair_attempts", 0) + len(new)
                for iid in targets:
                    failures = [r for r in new if r["instruction_id"] == iid and r["status"] in FAILED_STATUSES]
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
        return next(r for r in seeded_order(samples, self.seed) if r["status"] in FAILED_STATUSES)

    def attempts(self, shown: list[dict], round_no: int) -> tuple[list[dict], list[dict]]:
        """New responses for each shown failure in round ``round_no``: parsed attempts, and unparsable ones."""
        cfg = self.config
        if self._backend is None:
            self._backend = open_backend(self.name, self.model_config)
        prompts = [self.prompt(row, round_no) for row in shown]
        params = cfg.sampling(self.task.stop(),  # one seed per round and batch, as this stage always drew it
                              seed=seed_from(self.seed, self.name, round_no, *(r["id"] for r in shown)))
        answers = ask(self._backend, self.task, prompts, params, chat=cfg.mode == "chat")
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
