"""docs/fidelity.md and the paper recipe agree: every row's config key holds the row's value."""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from tests.conftest import REPO
from tests.test_published_settings import paper_recipe

FIDELITY = REPO / "docs" / "fidelity.md"
COLUMNS = ["#", "Setting", "Published", "Source", "Config key", "Value", "Deviation and reason"]


def table_rows() -> list[dict[str, str]]:
    """The rows of the fidelity table, by column name."""
    lines = [line.strip() for line in FIDELITY.read_text().splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def code(cell: str) -> str:
    """The text inside a cell's backticks."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected one `code` span, got {cell!r}"
    return match.group(1)


def plain(value):
    """A config value as YAML would write it."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def lookup(config, dotted: str):
    """The value at a dotted key of the validated config."""
    node = config
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def test_the_table_lists_at_least_18_published_settings_with_sources():
    rows = table_rows()
    assert len(rows) >= 18
    assert [int(r["#"]) for r in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        assert row["Source"].startswith(("repo ", "card", "paper")), row
        assert row["Published"] and row["Deviation and reason"], row
    keys = [code(r["Config key"]) for r in rows]
    assert len(set(keys)) == len(keys), "a key is listed twice"


def test_every_row_matches_the_paper_recipe():
    recipe = paper_recipe()
    for row in table_rows():
        key, expected = code(row["Config key"]), yaml.safe_load(code(row["Value"]))
        actual = plain(lookup(recipe, key))
        if isinstance(expected, float) or isinstance(actual, float):
            assert math.isclose(float(actual), float(expected)), f"row {row['#']} {key}: recipe {actual}, table {expected}"
        else:
            assert actual == expected, f"row {row['#']} {key}: recipe {actual!r}, table {expected!r}"


def test_a_drift_is_caught():
    recipe = paper_recipe("stages.responses.fewshot_k=8")
    row = next(r for r in table_rows() if code(r["Config key"]) == "stages.responses.fewshot_k")
    assert lookup(recipe, "stages.responses.fewshot_k") != yaml.safe_load(code(row["Value"]))
