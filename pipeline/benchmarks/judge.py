"""A model as judge (StarChat's evaluation): which of two models answers coding requests better.

Each request (a JSONL file: ``id`` and ``request``; ours ship in
``configs/judge/requests.jsonl``) is answered by both models. The judge (any
backend; in practice a strong model behind an OpenAI-compatible endpoint) gets
a written rubric (``configs/judge/rubric.md``), the request and the two
answers as "Answer 1" and "Answer 2", and ends its reply with a line
``Verdict: 1``, ``Verdict: 2`` or ``Verdict: tie``. Every pair is asked in both
orders, so a judge that favours a position cancels out: the second model wins
a request only when the judge prefers it in both orders, loses only when the
judge prefers the first model in both, and ties otherwise. A reply without a
verdict line makes the request ``invalid`` (counted apart). The judge's reply
(its reasons) is kept for both orders on every row.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.errors import PipelineError
from pipeline.framework.jsonl import jsonl_records

VERDICT = re.compile(r"^\W*verdict\W*[:\-]\s*\W*(1|2|tie)\b", re.IGNORECASE | re.MULTILINE)
OUTCOMES = ("win", "tie", "loss", "invalid")

#: How a base model (completion format) is asked a request; it stops at the next question.
COMPLETION_TEMPLATE = "Question:\n{request}\n\nAnswer:\n"
COMPLETION_STOP = ["\nQuestion:"]


def read_requests(path: str | Path) -> list[dict]:
    """The requests of a JSONL file, each with ``id`` and ``request``."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"judge requests file {path} does not exist")
    requests = []
    for number, record in jsonl_records(path):
        if not isinstance(record.get("request"), str) or "id" not in record:
            raise PipelineError(f"{path}: line {number} needs an id and a request string")
        requests.append({"id": str(record["id"]), "request": record["request"]})
    if not requests:
        raise PipelineError(f"judge requests file {path} holds no requests")
    return requests


def read_rubric(path: str | Path) -> str:
    """The rubric text the judge is given."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"judge rubric {path} does not exist")
    return path.read_text(encoding="utf-8").strip()


def judge_messages(rubric: str, request: str, first: str, second: str) -> list[dict[str, str]]:
    """The judge's conversation: the rubric as system turn, the request and both answers as user turn."""
    user = (f"## Request\n{request.strip()}\n\n## Answer 1\n{first.strip()}\n\n## Answer 2\n{second.strip()}\n\n"
            "Compare the two answers by the rubric. Give your reasons, then end with one line: "
            "`Verdict: 1`, `Verdict: 2` or `Verdict: tie`.")
    return [{"role": "system", "content": rubric}, {"role": "user", "content": user}]


def judge_text(messages: list[dict[str, str]]) -> str:
    """The judge's conversation as one plain-text prompt, for a judge without a chat template."""
    return "\n\n".join(m["content"] for m in messages) + "\n\nReview:\n"


def parse_verdict(reply: str) -> str | None:
    """``"1"``, ``"2"`` or ``"tie"`` from the last verdict line of a judge's reply; None when there is none."""
    found = VERDICT.findall(reply)
    return found[-1].lower() if found else None


def combine(in_order: str | None, swapped: str | None) -> str:
    """The outcome for the second model: ``in_order`` has it as Answer 2, ``swapped`` as Answer 1."""
    if in_order is None or swapped is None:
        return "invalid"
    if in_order == "2" and swapped == "1":
        return "win"
    if in_order == "1" and swapped == "2":
        return "loss"
    return "tie"


@dataclass
class Judgement:
    """One request judged in both orders: the answers, the judge's replies and verdicts, the outcome."""

    id: str
    request: str
    first_model: str
    second_model: str
    first_answer: str
    second_answer: str
    reply_in_order: str
    reply_swapped: str
    verdict_in_order: str | None
    verdict_swapped: str | None
    outcome: str

    def to_dict(self) -> dict:
        """The judgement as a JSON-ready dict."""
        return asdict(self)


def judge_pairs(backend, params, rubric: str, requests: list[dict], first: tuple[str, dict[str, str]],
                second: tuple[str, dict[str, str]], prompt_format: str = "chat") -> list[Judgement]:
    """Ask ``backend`` about every request in both orders; ``first``/``second`` are (label, answers by id).

    ``prompt_format`` ``completion`` sends each conversation as plain text (:func:`judge_text`).
    """
    (a_label, a_answers), (b_label, b_answers) = first, second
    conversations = []
    for r in requests:
        a, b = a_answers[r["id"]], b_answers[r["id"]]
        conversations += [judge_messages(rubric, r["request"], a, b), judge_messages(rubric, r["request"], b, a)]
    if prompt_format == "completion":
        outputs = backend.generate([judge_text(c) for c in conversations], params)
    else:
        outputs = backend.generate_chat(conversations, params)
    replies = [out[0].text for out in outputs]
    judgements = []
    for i, r in enumerate(requests):
        in_order, swapped = replies[2 * i], replies[2 * i + 1]
        v1, v2 = parse_verdict(in_order), parse_verdict(swapped)
        judgements.append(Judgement(r["id"], r["request"], a_label, b_label, a_answers[r["id"]], b_answers[r["id"]],
                                    in_order, swapped, v1, v2, combine(v1, v2)))
    return judgements


def tally(judgements: list[Judgement]) -> dict[str, int]:
    """Wins, ties, losses and invalid judgements of the second model."""
    return {outcome: sum(j.outcome == outcome for j in judgements) for outcome in OUTCOMES}


class JudgeConfig(BaseModel):
    """Settings of the judged comparison (off unless ``enabled``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    enabled: bool = Field(default=False, description="Run the judged comparison after the benchmarks.")
    requests: str = Field(default="configs/judge/requests.jsonl",
                          description="JSONL of coding requests (id, request) both models answer.")
    rubric: str = Field(default="configs/judge/rubric.md", description="The written rubric the judge is given.")
    models: list[str] = Field(default_factory=lambda: ["base", "finetuned"], min_length=2, max_length=2,
                              description="The two model labels compared; wins are counted for the second.")
    prompt_format: Literal["chat", "completion"] = Field(
        default="chat", description="chat: the judge's chat template; completion: rubric, request and answers as "
        "plain text (a judge without a chat template).")
    judge: dict[str, Any] = Field(default_factory=dict,
                                  description="Model-section fields of the judge (backend, model, base_url, ...); "
                                  "empty: the recipe's model section judges.")
    max_tokens: int = Field(default=512, ge=1, description="Most new tokens per answer to a request.")
    judge_max_tokens: int = Field(default=768, ge=1, description="Most new tokens per judge reply.")
