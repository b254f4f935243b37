"""How a model is asked a benchmark problem, and how its answer becomes a solution.

Completion format (a base model continues the text)
    The prompt is the problem's ``prompt`` exactly as given. For a HumanEval
    style problem (imports, signature and docstring, ending inside the
    function) the model writes the body, and generation stops at the first
    of :data:`COMPLETION_STOP`, the start of the next top-level statement
    (``"\\ndef "``, ``"\\nclass "``, ``"\\nif __name__"``, ``"\\nprint("``,
    ``"\\n#"``, ``"\\n@"``, ``"\\nassert "``, ``"\\n```"``). For a
    whole-program problem (MBPP: the prompt is a docstring with the task and
    one assert) the model writes whole functions, so only
    :data:`PROGRAM_STOP` ends it (``"\\nif __name__"``, ``"\\nprint("``,
    ``"\\nassert "``, ``"\\n```"``, ``'\\n\"\"\"'``). The text is cut there again
    here, so a backend that ignores stop strings scores the same. The
    solution is ``prompt + completion``.

Chat format (an instruction-tuned model answers a user turn)
    One user turn, no system turn: :data:`CHAT_INSTRUCTION` (or
    :data:`TASK_INSTRUCTION` for a whole-program problem), a blank line, and
    the prompt (trailing whitespace removed) in a fenced ``python`` block.
    From the reply, the first fenced Python block (tagged ``python``/``py``/
    ``python3`` or untagged) that defines the entry point is taken, else the
    first Python block, else the whole reply (a model that answers with bare
    code). A block that defines ``def <entry_point>(`` is a whole solution:
    the prompt's imports, and the prompt's helper functions or classes the
    block does not define itself, are put before it. Any other block is taken
    as the function's body and appended to the prompt (indented by four
    spaces first when its first line is not indented).

Answers made elsewhere (``--score``)
    ``completion``: appended to the prompt as it is (not cut);
    ``solution``: the whole program as it is.
"""

from __future__ import annotations

import ast
import re
from typing import Literal

from pipeline.benchmarks.problems import Problem, defines
from pipeline.generation.prompting import python_blocks

#: How an answer is read: a model's completion or chat reply, or a file's completion / whole solution.
AnswerForm = Literal["completion", "chat", "append", "solution"]

#: Where a completion of a function body ends: the start of the next top-level statement.
COMPLETION_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n@", "\nassert ", "\n```"]
#: Where a completion of a whole program (MBPP) ends: a script part, a test, or the end of a block.
PROGRAM_STOP = ["\nif __name__", "\nprint(", "\nassert ", "\n```", '\n"""']

#: The instruction of the chat format for a function to complete; the prompt follows in a fenced block.
CHAT_INSTRUCTION = (
    "Complete the Python function below so that it does what its docstring says. "
    "Reply with the complete function, including the imports and helper functions it needs, "
    "in one ```python code block."
)
#: The instruction of the chat format for a task to solve from its description (MBPP).
TASK_INSTRUCTION = (
    "Write a Python function for the task described below; it must pass the example assert shown there. "
    "Reply with the complete function, including the imports it needs, in one ```python code block."
)


def stop_strings(problem: Problem) -> list[str]:
    """The completion stop strings that suit the problem (a body, or a whole program)."""
    return PROGRAM_STOP if problem.whole_program else COMPLETION_STOP


def completion_prompt(problem: Problem) -> str:
    """The completion-format prompt: the problem's prompt as it is."""
    return problem.prompt


def chat_messages(problem: Problem) -> list[dict[str, str]]:
    """The chat-format conversation: one user turn with the instruction and the prompt in a fenced block."""
    instruction = TASK_INSTRUCTION if problem.whole_program else CHAT_INSTRUCTION
    return [{"role": "user", "content": f"{instruction}\n\n```python\n{problem.prompt.rstrip()}\n```"}]


def truncate_completion(text: str, stops: list[str] = COMPLETION_STOP) -> str:
    """A completion cut before the first of ``stops`` (default: the next top-level statement)."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


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


def chat_solution(problem: Problem, reply: str) -> str:
    """The solution a chat reply gives: a whole function with the prompt's context, or a body appended to the prompt."""
    code = reply_code(reply, problem.entry_point)
    if defines(code, problem.entry_point):
        context = prompt_context(problem.prompt, problem.entry_point, code)
        return f"{context}\n{code}" if context else code
    lines = code.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first and not first[0].isspace():
        code = "\n".join("    " + line if line.strip() else line for line in lines)
    return problem.prompt + code


def solution(problem: Problem, output: str, form: AnswerForm) -> str:
    """The solution code for an answer read in ``form`` (before a test suite is added)."""
    if form == "chat":
        return chat_solution(problem, output)
    if form == "solution":
        return output
    if form == "append":
        return problem.prompt + output
    return problem.prompt + truncate_completion(output, stop_strings(problem))


def assemble_program(code: str, suite: str) -> str:
    """The program checking a solution: ``code``, then one of the problem's test suites."""
    return f"{code}\n{suite}"
