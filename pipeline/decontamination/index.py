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

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.decontamination.entries import BenchmarkEntry, humaneval_entries, jsonl_entries
from pipeline.framework.text import normalize_whitespace

DEFAULT_MIN_CHARS = 50


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
