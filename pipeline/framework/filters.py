"""Named filters, each declared once: its name, whether it is on by default, its scope and its reason.

A filter is a small function over a list of items (candidate seeds, executed
samples) that says, for each item in order, whether it stays: ``True`` keeps
it, ``False`` drops it with the filter's name as the reason, and a string
drops it with that string as the reason (a filter with several ways to fail,
such as a format check, names each). Its docstring's first line is its
reason in the docs.

A stage keeps its filters in a :class:`FilterRegistry`. The registry is the
one place a filter is declared: the config's list of names (its choices and
its default chain), the check that whole-output filters come last, and the
generated docs (docs/configuration.md, docs/stages.md) all derive from it.
Running a chain counts nothing by hand: the drops come back with their
reasons, and the store counts them when they are written.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

Verdicts = Sequence[bool | str]
"""Per item, in order: a true value keeps it, a false one drops it under the filter's name, a string drops it
under that reason."""


@dataclass(frozen=True)
class Filter:
    """One filter: its name, its function ``(items, context) -> verdicts``, and how it is used."""

    name: str
    keep: Callable[[list, Any], Verdicts]
    default: bool = True
    """Whether the default chain of the stage's config lists it."""
    whole_output: bool = False
    """Whether it compares items across every batch, so it runs once the batches are done (last in a chain)."""

    @property
    def reason(self) -> str:
        """What the filter keeps, in words: its function's docstring."""
        return inspect.cleandoc(self.keep.__doc__ or self.name)


@dataclass
class FilterContext:
    """What a filter may read: its stage's settings, the run seed, the worker count, the model section.

    ``cached`` keeps what a filter builds once per process (an index, a model); it is not pickled, so a
    stage that carries a context to pool workers sends no index along.
    """

    config: Any
    seed: int = 0
    workers: int = 0
    model_config: Any = None
    _cache: dict = field(default_factory=dict, repr=False)

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per key in this process."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def __getstate__(self) -> dict:
        """Everything but the cache."""
        return {**self.__dict__, "_cache": {}}


class FilterRegistry:
    """The filters of one stage, in their default order."""

    def __init__(self, stage: str, switchable: bool = True):
        """The filters of ``stage``; ``switchable``: its config lists a chain, so each filter can be switched off."""
        self.stage = stage
        self.switchable = switchable
        self._filters: dict[str, Filter] = {}

    def register(self, name: str | None = None, *, default: bool = True, whole_output: bool = False):
        """Decorator: declare the decorated function as filter ``name`` (default: the function's name)."""
        def add(function: Callable[[list, Any], Verdicts]) -> Callable[[list, Any], Verdicts]:
            key = name or function.__name__
            if key in self._filters:
                raise ValueError(f"{self.stage}: filter {key} is declared twice")
            self._filters[key] = Filter(key, function, default, whole_output)
            return function
        return add

    def __getitem__(self, name: str) -> Filter:
        return self._filters[name]

    def __iter__(self) -> Iterator[Filter]:
        return iter(self._filters.values())

    def __contains__(self, name: object) -> bool:
        return name in self._filters

    @property
    def names(self) -> tuple[str, ...]:
        """Every filter's name, in declaration order."""
        return tuple(self._filters)

    def name_type(self) -> Any:
        """The type of one name in a config's chain: a ``Literal`` of every name (so the config lists the choices)."""
        return Literal[self.names]  # type: ignore[valid-type]

    def defaults(self) -> list[str]:
        """The default chain: the filters on by default, in declaration order."""
        return [f.name for f in self if f.default]

    def whole_output(self) -> tuple[str, ...]:
        """The names of the whole-output filters."""
        return tuple(f.name for f in self if f.whole_output)

    def describe_chain(self) -> str:
        """A config description of the chain: how it is read, what is off by default, what must come last."""
        off = [f.name for f in self if not f.default]
        last = self.whole_output()
        text = "The filter chain, applied in this order; remove a name to switch that filter off."
        if off:
            text += f" Off by default: {', '.join(off)}."
        if last:
            text += f" Whole-output filters ({', '.join(last)}) run once every batch is done, so they come last."
        return text

    def check_chain(self, names: list[str]) -> list[str]:
        """A chain as a config gives it, checked: no name twice, the whole-output filters last."""
        if len(set(names)) != len(names):
            raise ValueError("a filter is listed twice")
        whole = self.whole_output()
        seen_whole = False
        for name in names:
            if name in whole:
                seen_whole = True
            elif seen_whole:
                raise ValueError(
                    f"{name} comes after a whole-output filter; {' and '.join(whole)} run once every batch is "
                    "done, so they must come last")
        return names

    def apply(self, chain: Sequence[str], items: list, context: Any, *,
              whole_output: bool | None = None, progress: Callable[[str], None] | None = None
              ) -> tuple[list, list[tuple[Any, str]]]:
        """Run the chain's filters (only those of one scope when ``whole_output`` is given) over ``items``.

        Each filter sees the items no earlier filter dropped; a filter is not called once none are left.
        Returns the survivors and ``(item, reason)`` for each drop, filter by filter in item order.
        ``progress(name)`` is called after each filter.
        """
        dropped: list[tuple[Any, str]] = []
        for name in chain:
            flt = self._filters[name]
            if whole_output is not None and flt.whole_output != whole_output:
                continue
            if items:
                survivors = []
                for item, verdict in zip(items, flt.keep(items, context), strict=True):
                    if isinstance(verdict, str):
                        dropped.append((item, verdict))
                    elif verdict:
                        survivors.append(item)
                    else:
                        dropped.append((item, name))
                items = survivors
            if progress is not None:
                progress(name)
        return items, dropped

    def markdown(self) -> list[str]:
        """The docs' list of the filters: name, default, scope, and what each keeps."""
        lines = []
        for f in self:
            scope = "compares rows across the whole output" if f.whole_output else "row by row"
            when = ("on by default; " if f.default else "off by default; ") if self.switchable else ""
            lines.append(f"- `{f.name}` ({when}{scope}): {' '.join(f.reason.split())}")
        return lines
