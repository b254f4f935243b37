"""Benchmark decontamination: does a text contain (or sit inside) a benchmark problem?

Definition (whitespace-insensitive exact matching). Every text is normalised
by collapsing each run of whitespace to one space and stripping the ends.
Each benchmark problem contributes

* needles: for HumanEval, the entry point's signature + docstring (the prompt
  from ``def <entry_point>`` on), its docstring alone, any helper function
  given in full in the prompt, and the canonical solution body; for a JSONL
  benchmark, the value of each chosen field (e.g. MBPP ``code`` and ``text``;
  ``pipeline.decontamination.benchmark_data`` knows the fields of MBPP and DS-1000 and loads
  them from the Hub or from a local copy);
* a haystack: the whole problem (HumanEval prompt + canonical solution; for
  JSONL, the chosen fields joined).

A text is contaminated by a problem if a normalised needle of at least
`min_chars` characters (default 50, so ``return x`` never matches) is a
substring of the normalised text, OR the normalised text has at least
`min_chars` characters and is a substring of the problem's haystack.

Speed: substring tests run only on candidates. A needle that is a substring
of a text contributes all of its inner tokens (space-delimited on both sides)
to the text as whole tokens, so each needle is indexed under its rarest inner
token, and a text only tests needles whose anchor is among its own tokens
(one C-level set intersection). Symmetrically, a text inside a haystack has
all its inner tokens in the haystack vocabulary; a subset test rejects almost
every text before any substring search.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.benchmarks.humaneval import load_humaneval

__all__ = [
    "BenchmarkEntry",
    "BenchmarkFile",
    "BenchmarkIndex",
    "humaneval_entries",
    "jsonl_entries",
    "normalize_whitespace",
]

DEFAULT_MIN_CHARS = 50


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to a single space and strip both ends."""
    return " ".join(text.split())


@dataclass(frozen=True)
class BenchmarkEntry:
    """One benchmark problem as seen by the index.

    Fields: task_id (e.g. ``"HumanEval/0"``, ``"mbpp/11"``); needles, raw texts
    whose presence in a text means contamination; haystack, the whole problem,
    whose containing a text means contamination.
    """

    task_id: str
    needles: tuple[str, ...]
    haystack: str


def _humaneval_needles(problem: dict) -> list[str]:
    prompt: str = problem["prompt"]
    solution: str = problem["canonical_solution"]
    entry: str = problem["entry_point"]
    needles = [solution]
    match = re.search(rf"^(?:async\s+)?def\s+{re.escape(entry)}\s*\(", prompt, re.MULTILINE)
    needles.append(prompt[match.start() :] if match else prompt)
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return needles
    lines = prompt.split("\n")
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name == entry:
            doc = ast.get_docstring(node, clean=False)
            if doc:
                needles.append(doc)
        else:  # a helper given in full, e.g. is_palindrome in HumanEval/10
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            needles.append("\n".join(lines[start - 1 : node.end_lineno]))
    return needles


def humaneval_entries(problems: Iterable[dict] | None = None) -> list[BenchmarkEntry]:
    """Build index entries from HumanEval problems (default: `load_humaneval()`)."""
    out = []
    for problem in load_humaneval() if problems is None else problems:
        out.append(
            BenchmarkEntry(
                task_id=str(problem["task_id"]),
                needles=tuple(_humaneval_needles(problem)),
                haystack=problem["prompt"] + "\n" + problem["canonical_solution"],
            )
        )
    return out


def _field_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return None


def jsonl_entries(
    path: str | Path,
    fields: Sequence[str],
    *,
    id_field: str = "task_id",
    name: str | None = None,
) -> list[BenchmarkEntry]:
    """Build index entries from a JSONL benchmark file (optionally ``.gz``).

    Each line's `fields` (strings, or lists of strings joined by newlines;
    missing fields are skipped) are needles, and joined form the haystack.
    The task id is ``"<name>/<line[id_field]>"`` (name defaults to the file
    stem; the line number stands in when `id_field` is absent), e.g. for
    MBPP: ``jsonl_entries("mbpp.jsonl", ["text", "code"], name="mbpp")``.
    """
    path = Path(path)
    prefix = name or path.name.split(".")[0]
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            texts = [t for t in (_field_text(row.get(f)) for f in fields) if t]
            if not texts:
                continue
            ident = row.get(id_field, lineno)
            task_id = ident if isinstance(ident, str) and "/" in ident else f"{prefix}/{ident}"
            out.append(BenchmarkEntry(task_id=task_id, needles=tuple(texts), haystack="\n".join(texts)))
    return out


class BenchmarkIndex:
    """Fast whitespace-insensitive contamination check against benchmark problems.

    See the module docstring for the exact rule. Build once, then call
    `contains_benchmark` on as many texts as needed.
    """

    def __init__(self, entries: Iterable[BenchmarkEntry], *, min_chars: int = DEFAULT_MIN_CHARS) -> None:
        """Index `entries`; needles and texts shorter than `min_chars` never match."""
        self.min_chars = min_chars
        needle_ids: dict[str, str] = {}
        self._hay: list[tuple[str, str]] = []
        for entry in entries:
            for raw in entry.needles:
                norm = normalize_whitespace(raw)
                if len(norm) >= min_chars:
                    needle_ids.setdefault(norm, entry.task_id)
            self._hay.append((normalize_whitespace(entry.haystack), entry.task_id))
        self._needles: list[tuple[str, str]] = list(needle_ids.items())

        # Needles: anchor each one on its rarest inner token.
        df: Counter[str] = Counter()
        for norm, _ in self._needles:
            df.update(set(norm.split(" ")[1:-1]))
        self._anchors: dict[str, list[int]] = {}
        self._unanchored: list[int] = []
        for i, (norm, _) in enumerate(self._needles):
            inner = norm.split(" ")[1:-1]
            if inner:
                anchor = min(inner, key=lambda t: (df[t], -len(t), t))
                self._anchors.setdefault(anchor, []).append(i)
            else:
                self._unanchored.append(i)
        self._anchor_keys = frozenset(self._anchors)

        # Haystacks: token -> haystack indices.
        self._postings: dict[str, list[int]] = {}
        for j, (hay, _) in enumerate(self._hay):
            for tok in set(hay.split(" ")):
                self._postings.setdefault(tok, []).append(j)
        self._vocab = frozenset(self._postings)

    @classmethod
    def build(
        cls,
        extra_jsonl: Iterable[tuple[str | Path, Sequence[str]]] = (),
        *,
        include_humaneval: bool = True,
        min_chars: int = DEFAULT_MIN_CHARS,
    ) -> BenchmarkIndex:
        """HumanEval (unless disabled) plus each ``(path, fields)`` JSONL benchmark."""
        entries: list[BenchmarkEntry] = humaneval_entries() if include_humaneval else []
        for path, fields in extra_jsonl:
            entries.extend(jsonl_entries(path, fields))
        return cls(entries, min_chars=min_chars)

    def __len__(self) -> int:
        """Number of benchmark problems indexed."""
        return len(self._hay)

    def contains_benchmark(self, text: str) -> str | None:
        """Return the task id of a benchmark problem contaminating `text`, else None.

        Needle matches are tried first (lowest needle index wins), then the
        text-inside-haystack rule (first problem wins).
        """
        norm = normalize_whitespace(text)
        if not norm:
            return None
        tokens = norm.split(" ")
        hits = self._anchor_keys.intersection(tokens)
        if hits or self._unanchored:
            candidates = sorted({i for a in hits for i in self._anchors[a]}.union(self._unanchored))
            for i in candidates:
                needle, task_id = self._needles[i]
                if needle in norm:
                    return task_id
        if len(norm) < self.min_chars:
            return None
        inner = set(tokens[1:-1])
        if inner:
            if not inner <= self._vocab:
                return None
            rarest = min(inner, key=lambda t: len(self._postings[t]))
            hay_ids: Iterable[int] = self._postings[rarest]
        else:
            hay_ids = range(len(self._hay))
        for j in hay_ids:
            hay, task_id = self._hay[j]
            if norm in hay:
                return task_id
        return None


class BenchmarkFile(BaseModel):
    """A benchmark to decontaminate against (config): a local file, in a known benchmark's format or by fields."""

    model_config = ConfigDict(extra="forbid")
    path: Path = Field(description="JSONL (optionally .gz), JSON or Parquet file of benchmark problems.")
    format: Literal["fields", "mbpp", "ds1000", "humaneval"] = Field(
        default="fields",
        description="fields: the listed fields hold prompts/solutions (JSONL); mbpp, ds1000, humaneval: a copy of "
        "that benchmark in its Hub layout (fields ignored).",
    )
    fields: list[str] = Field(
        default_factory=lambda: ["prompt", "text", "code"], description="Fields holding prompts or solutions."
    )


def benchmark_index(files: Sequence[BenchmarkFile] = (), builtin: Sequence[str] = ()) -> BenchmarkIndex:
    """HumanEval (built in), the ``builtin`` benchmarks from the Hub (e.g. mbpp, ds1000) and the listed files."""
    from pipeline.decontamination.benchmark_data import load_benchmark
    from pipeline.framework.errors import ConfigError

    entries = humaneval_entries()
    for name in builtin:
        entries.extend(load_benchmark(name))
    for file in files:
        if not Path(file.path).is_file():
            raise ConfigError(f"benchmark file {file.path} does not exist")
        if file.format == "fields":
            entries.extend(jsonl_entries(file.path, file.fields))
        else:
            entries.extend(load_benchmark(file.format, file.path))
    return BenchmarkIndex(entries)
