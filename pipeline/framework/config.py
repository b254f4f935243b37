"""Typed configuration: one YAML file per recipe plus ``-o key.path=value`` overrides.

The top level has four sections:

* ``run``: where the work directory is, the run seed, the executor, worker counts;
* ``model``: the generation backend shared by the generation stages (optional);
* ``hub``: publishing settings;
* ``stages``: one section per stage, whose schema each stage declares itself
  (``Stage.Config``), so the framework knows no stage by name.

Validation happens before any work starts. Every problem is reported with the
key's full dotted path and what was expected, e.g.
``configs/demo.yaml: stages.seeds.max_lins: unknown key (expected one of: ...)``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from pipeline.framework.errors import ConfigError


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def not_fingerprinted(description: str, **kwargs: Any) -> Any:
    """A ``Field`` for a setting that changes how a stage runs but not what it outputs.

    Such fields (worker counts, batch sizes) are left out of the stage's
    fingerprint, so changing them does not make a finished stage stale.
    """
    return Field(description=description, json_schema_extra={"fingerprint": False}, **kwargs)


def _existing_file(path: Path) -> Path:
    """Accept a path only when a file is there (checked when the config loads, before any work)."""
    if not path.is_file():
        raise ValueError(f"no such file: {path}" if not path.exists() else f"{path} is not a file")
    return path


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
"""A config value naming a file that must exist (prompt banks, for example)."""


class StageConfig(StrictModel):
    """Settings every stage accepts; a stage's own ``Config`` subclasses this."""

    batch_size: int | None = not_fingerprinted(
        "Rows per batch (one Parquet part per batch); default: run.batch_size.", default=None, gt=0
    )

    def problems(self, pipeline_config: Any) -> list[str]:
        """Problems only the whole config shows (a setting that needs another section), as ``key: what`` lines."""
        return []


class RunConfig(StrictModel):
    """Where and how the pipeline runs."""

    work_dir: Path = Field(description="Directory holding every stage's output, logs and manifests.")
    seed: int = Field(default=42, description="Run seed: every sampled choice derives from it and row ids.")
    executor: Literal["local", "ray"] = not_fingerprinted(
        "Where per-batch stages run: local (this machine, a process pool) or ray (a Ray cluster).", default="local"
    )
    ray_address: str | None = not_fingerprinted(
        "Ray cluster to join (e.g. auto, ray://head:10001); None starts a local cluster.", default=None
    )
    workers: int = not_fingerprinted("Worker processes for CPU-bound stages; 0 means one per core.", default=0, ge=0)
    batch_size: int = not_fingerprinted("Default rows per batch for every stage.", default=256, gt=0)
    keep_dropped: bool = not_fingerprinted(
        "Keep dropped rows with their reason under <stage>/dropped/ for auditing.", default=True
    )
    preflight: bool = not_fingerprinted(
        "Run the --preflight checks before a multi-stage run (--stage all, --from/--to) and stop when one fails; "
        "--no-preflight skips them for one command.", default=True
    )
    allow_empty_input: bool = not_fingerprinted(
        "Let a stage whose input holds no rows finish with none, with a warning; by default that is an error.",
        default=False,
    )


class HubConfig(StrictModel):
    """Publishing each stage's output as a Hugging Face Hub dataset."""

    namespace: str | None = Field(
        default=None, description="Hub user or organisation; publishing is on when this is set."
    )
    prefix: str = Field(default="selfcodealign", description="Dataset names are <prefix>-<stage>.")
    private: bool = Field(default=True, description="Create the datasets as private repositories.")
    token_env: str = Field(default="HF_TOKEN", description="Environment variable holding the Hub token.")
    stages: list[str] | None = Field(default=None, description="Stages to publish; default: every stage run.")


def build_config_model(
    stage_configs: dict[str, type[StageConfig] | None], model_config: type[BaseModel] | None = None
):
    """Assemble the pipeline's config class from each stage's own ``Config`` class.

    ``stage_configs`` maps stage names (in pipeline order) to their config
    classes; ``model_config`` is the generation backend's config class, if any.
    A stage mapped to None is not built yet: its section is kept as written
    (so a recipe can already carry its settings) and is typed once it lands.
    """
    stage_fields: dict[str, Any] = {
        name: (dict[str, Any], Field(default_factory=dict)) if cls is None else (cls, Field(default_factory=cls))
        for name, cls in stage_configs.items()
    }
    stages_model = create_model("StagesConfig", __base__=StrictModel, **stage_fields)
    fields: dict[str, Any] = {
        "name": (str, Field(default="pipeline", description="Recipe name, shown in logs and dataset cards.")),
        "run": (RunConfig, ...),
        "hub": (HubConfig, Field(default_factory=HubConfig)),
        "stages": (stages_model, Field(default_factory=stages_model)),
    }
    if model_config is not None:
        fields["model"] = (model_config | None, Field(default=None, description="Generation backend."))
    return create_model("PipelineConfig", __base__=StrictModel, **fields)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value (``100`` -> int, ``[x]`` -> list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY.PATH=VALUE, e.g. stages.seeds.max_seeds=100")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"override {text!r}: the key path is empty or has an empty part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return parts, value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of ``data`` with each ``key.path=value`` override set (creating sections as needed)."""
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                path = ".".join(parts[: i + 1])
                raise ConfigError(f"override {text!r}: {path} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def first_problem(exc: ValidationError) -> str:
    """``key.path: message`` of a validation error's first problem (for sections validated on their own)."""
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


def _describe_error(err: dict, model: type[BaseModel]) -> str:
    """One readable line for one pydantic error: what was wrong at which key and what was expected."""
    path = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, err["loc"][:-1])
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        return f"{path}: missing required value"
    if kind == "value_error":
        return f"{path}: {err['ctx']['error']}"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a section"
    return f"{path}: {err['msg']} (got {shown})"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names accepted at ``loc`` inside ``model`` (empty when it cannot be resolved)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = model_of(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as ``X`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def validate_config(data: Any, model: type[BaseModel], source: str):
    """Validate a raw mapping into ``model``; raise :class:`ConfigError` listing every problem by key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (run, stages, ...)")
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe_error(e, model) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    stages = getattr(config, "stages", None)
    sections = {name: getattr(stages, name) for name in type(stages).model_fields} if stages is not None else {}
    lines = [f"stages.{name}.{problem}" for name, section in sections.items() if isinstance(section, StageConfig)
             for problem in section.problems(config)]
    if lines:
        raise ConfigError(f"{source}: " + "; ".join(lines))
    return config


def load_config(path: str | Path, model: type[BaseModel], overrides: Iterable[str] = ()):
    """Read a YAML recipe, apply overrides, and validate it into ``model``.

    Relative ``run.work_dir`` values are kept relative to the current directory,
    as a user typing the command would expect.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (run, stages, ...)")
    data = apply_overrides(data, overrides)
    return validate_config(data, model, str(path))


def fingerprint_view(section: BaseModel) -> Any:
    """The parts of a config section that change a stage's output (fields marked not_fingerprinted left out)."""
    out: dict[str, Any] = {}
    for name, field in type(section).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("fingerprint") is False:
            continue
        value = getattr(section, name)
        out[name] = fingerprint_view(value) if isinstance(value, BaseModel) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a config value."""
    if isinstance(value, BaseModel):
        return fingerprint_view(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
