"""Preference pairs from executed samples: a passing answer preferred to a failing one to the same instruction.

Samples are grouped by instruction. An instruction with at least one passing
sample (``chosen`` candidates) and at least one sample whose verdict is among
the rejected statuses (``failed``, ``timeout``, ``oom`` by default; a sandbox
``error`` says nothing about the answer and is left out) gives up to
``pairs_per_instruction`` pairs. Candidates on each side are ordered by
``sha256(seed, sample id)`` and paired along diagonals (chosen *i* with
rejected *i + shift*, shift 0 first), so every candidate is used once before
any is used twice and no pair repeats; the pairs depend only on the rows and
the seed, never on input order.

Each pair is written in the conversational layout trl's ``DPOTrainer`` reads:
``prompt`` (the user turn), ``chosen`` and ``rejected`` (one assistant turn
each), plus the verdicts and ids that trace it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.execution.samples import FAILED_STATUSES
from pipeline.framework.ids import seeded_order, stable_id
from pipeline.training.conversation import assistant_answer, turn

DEFAULT_REJECTED = FAILED_STATUSES


@dataclass
class Pairing:
    """What one instruction's samples gave: its pairs, and why each sample left out of them was."""

    pairs: list[dict] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    """``{sample id: reason}``: ``no_passing_sample``, ``no_failing_sample``, ``status_<verdict>`` (a verdict that
    is neither passing nor rejected) or ``pair_limit`` (the instruction already has its pairs)."""


def pair_instruction(samples: list[dict], seed: int, pairs_per_instruction: int = 1,
                     rejected_statuses: Iterable[str] = DEFAULT_REJECTED, with_tests: bool = True) -> Pairing:
    """Pair the passing samples of one instruction with its failing ones (see the module docstring)."""
    rejected_ok = set(rejected_statuses)
    samples = seeded_order(samples, seed)
    good = [r for r in samples if r["passed"]]
    bad = [r for r in samples if not r["passed"] and r["status"] in rejected_ok]
    result = Pairing()
    for row in samples:
        if not row["passed"] and row["status"] not in rejected_ok:
            result.left_out[row["id"]] = f"status_{row['status']}"
    if not good or not bad:
        reason = "no_passing_sample" if not good else "no_failing_sample"
        result.left_out.update({r["id"]: reason for r in good + bad})
        return result
    order = [(i, (i + shift) % len(bad)) for shift in range(len(bad)) for i in range(len(good))]
    used: set[str] = set()
    for i, j in order[:pairs_per_instruction]:
        result.pairs.append(pair_row(good[i], bad[j], with_tests))
        used |= {good[i]["id"], bad[j]["id"]}
    result.left_out.update({r["id"]: "pair_limit" for r in good + bad if r["id"] not in used})
    return result


def pair_row(chosen: dict, rejected: dict, with_tests: bool) -> dict:
    """One pair in trl's conversational preference layout, with its verdicts and ids."""
    def answer(row: dict) -> list[dict]:
        return [turn("assistant", assistant_answer(row["response"], row["tests"], with_tests))]

    return {
        "id": stable_id(chosen["id"], rejected["id"]),
        "seed_id": chosen.get("seed_id"),
        "instruction_id": chosen["instruction_id"],
        "prompt": [turn("user", chosen["instruction"])],
        "chosen": answer(chosen),
        "rejected": answer(rejected),
        "chosen_id": chosen["id"],
        "rejected_id": rejected["id"],
        "chosen_status": chosen["status"],
        "rejected_status": rejected["status"],
        "rejected_error": (rejected.get("stderr") or rejected.get("stdout") or "")[-1000:],
    }
