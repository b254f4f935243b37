"""Render docs/configuration.md (every option) and docs/stages.md (what each stage does, reads and
writes) from the config classes and stage classes themselves, so the docs cannot drift from the code.

    python -m pipeline.reference_docs
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.framework.config import model_of
from pydantic_core import PydanticUndefined


def _type_name(annotation: Any) -> str:
    """A short readable name for a field's type."""
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    for noise in ("typing.", "pathlib.", "NoneType"):
        text = text.replace(noise, "None" if noise == "NoneType" else "")
    text = re.sub(r"\bpipeline(?:\.\w+)*\.(?=[A-Z])", "", text)  # a class's name, not the module it lives in
    return text.replace("<class '", "").replace("'>", "")


REPO = Path(__file__).resolve().parent.parent


def _shown(value: Any) -> str:
    """A default as the docs show it: paths inside the project relative to its root, so docs match any checkout."""
    if isinstance(value, Path):
        try:
            return repr(str(value.resolve().relative_to(REPO)))
        except ValueError:
            return repr(str(value))
    return repr(value)


def _default(field: Any) -> str:
    """The field's default as YAML-ish text."""
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        return _shown(value)
    if field.default is PydanticUndefined:
        return "**required**"
    return _shown(field.default)


def reference_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every leaf option below ``model``."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = model_of(field.annotation)
        if nested is not None and not (getattr(field.annotation, "__origin__", None) is list):
            rows.extend(reference_rows(nested, path + "."))
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        note = " (not part of the fingerprint)" if extra.get("fingerprint") is False else ""
        rows.append((path, _type_name(field.annotation), _default(field), (field.description or "") + note))
    return rows


def render_reference(model: type[BaseModel], planned: dict[str, int]) -> str:
    """The whole configuration reference as Markdown."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config classes by `python -m pipeline.reference_docs`; do not edit by hand.",
        "Any key can be set on the command line with `-o key.path=value` (values parse as YAML).",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for path, type_name, default, description in reference_rows(model):
        if path.split(".")[:2][-1] in planned and path.startswith("stages."):
            continue
        cell, type_cell = description.replace("|", "\\|"), type_name.replace("|", "\\|")
        lines.append(f"| `{path}` | `{type_cell}` | `{default}` | {cell} |")
    if planned:
        lines += ["", "Stages not built yet accept their section as written (typed once they land): "
                  + ", ".join(f"`stages.{name}` (issue #{issue})" for name, issue in planned.items()) + "."]
    return "\n".join(lines) + "\n"


def render_stages(registry: list) -> str:
    """Each stage in order: its module's description, the columns it reads and the columns it writes."""
    from pipeline.framework.stage import PlannedStage

    lines = ["# Stages", "", "Generated from the stage classes by `python -m pipeline.reference_docs`.", ""]
    for entry in registry:
        lines.append(f"## {entry.name}")
        lines.append("")
        if isinstance(entry, PlannedStage):
            lines += [f"{entry.title}. Not built yet (issue #{entry.issue}); reads `{entry.upstream}`.", ""]
            continue
        lines += [entry.description(), ""]
        lines.append(f"Reads: {'the output of `' + entry.upstream + '`' if entry.upstream else 'its configured source'}"
                     " (or `--input`), columns:")
        lines.append("")
        for column, meaning in entry.input_columns.items():
            lines.append(f"- `{column}`: {meaning}")
        lines += ["", "Writes, columns:", ""]
        for column, (dtype, meaning) in entry.output_columns.items():
            lines.append(f"- `{column}` ({dtype}): {meaning}")
        lines.append("")
    return "\n".join(lines)


def generated_docs() -> dict[str, str]:
    """File name under docs/ -> its generated text."""
    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model
    from pipeline.framework.stage import PlannedStage
    from stages import PIPELINE

    model = build_config_model(
        {e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE}, _model_config_class()
    )
    planned = {e.name: e.issue for e in PIPELINE if isinstance(e, PlannedStage)}
    return {"configuration.md": render_reference(model, planned), "stages.md": render_stages(PIPELINE)}


def main() -> None:
    """Write the generated reference pages into docs/."""
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    for name, text in generated_docs().items():
        (docs / name).write_text(text)
        print(f"wrote {docs / name}")


if __name__ == "__main__":
    main()
