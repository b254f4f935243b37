"""Seeds extraction speed on this machine's standard library, against a bare ``ast.parse``.

Runs, on the same files held in memory:
  1. baseline: ``ast.parse`` of every file, one process;
  2. the seeds stage's batch function over the same files, one process, type checking off;
  3. the whole stage through the runner (Parquet parts, manifest, all cores), type checking off;
  4. type checking alone (basedpyright, one batch) on a sample of files, reported as files per second.
Target: the stage's cost beyond parsing (2 minus 1) stays under 50% of the parse time.

    python benchmarks/seeds.py [--typecheck-files 200]
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.analysis.code_files import LocalCodeFiles, stdlib_dir  # noqa: E402
from pipeline.analysis.typecheck import typecheck_sources  # noqa: E402
from pipeline.framework.config import build_config_model  # noqa: E402
from pipeline.framework.runner import Runner  # noqa: E402
from stages.seeds import DEFAULT_FILTERS, SeedsConfig, SeedsStage  # noqa: E402

NO_TYPECHECK = [f for f in DEFAULT_FILTERS if f != "typechecks"]


def bare_parse(files: list[dict]) -> float:
    """Seconds to ast.parse every file (files that fail to parse included)."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            try:
                ast.parse(f["content"])
            except (SyntaxError, ValueError):
                pass
    return time.perf_counter() - start


def stage_batches(files: list[dict], config) -> tuple[float, int]:
    """Seconds for the seeds batch function over all files in one process, and the seeds kept."""
    stage = SeedsStage(config.stages.seeds, config)
    stage.setup()  # builds the HumanEval index once, as each worker does
    start = time.perf_counter()
    kept = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(0, len(files), 256):
            kept += len(stage.process_batch(files[i : i + 256]).rows)
    return time.perf_counter() - start, kept


def main() -> None:
    """Run the four measurements and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--typecheck-files", type=int, default=200, help="files in the type-checking sample")
    args = parser.parse_args()

    source = LocalCodeFiles([stdlib_dir()], SeedsConfig().source.exclude)
    files = list(source.iter_rows())
    size_mb = sum(len(f["content"]) for f in files) / 1e6
    print(f"corpus: {len(files)} files, {size_mb:.1f} MB from {stdlib_dir()}")

    model = build_config_model({"seeds": SeedsConfig})
    with tempfile.TemporaryDirectory() as work:
        config = model.model_validate(
            {"run": {"work_dir": work}, "stages": {"seeds": {"filters": NO_TYPECHECK, "source": {"kind": "stdlib"}}}}
        )
        parse_s = bare_parse(files)
        stage_s, kept = stage_batches(files, config)
        start = time.perf_counter()
        manifest = Runner(config, [SeedsStage]).run_stage("seeds")
        runner_s = time.perf_counter() - start

    sample = {f"f{i:05d}.py": f["content"] for i, f in enumerate(files[: args.typecheck_files])}
    start = time.perf_counter()
    typecheck_sources(sample)
    typecheck_s = time.perf_counter() - start

    extra = (stage_s - parse_s) / parse_s
    print()
    print(f"{'measurement':<52} {'seconds':>8} {'rate':>18}")
    print(f"{'bare ast.parse, 1 process':<52} {parse_s:8.2f} {len(files) / parse_s:12.0f} files/s")
    print(f"{'seeds batch function, 1 process, no typecheck':<52} {stage_s:8.2f} {kept / stage_s:12.0f} seeds/s")
    print(f"{'seeds stage via runner, all cores, no typecheck':<52} {runner_s:8.2f} "
          f"{manifest['rows_out'] / runner_s:12.0f} seeds/s")
    print(f"{'type checking alone (basedpyright, 1 batch)':<52} {typecheck_s:8.2f} "
          f"{len(sample) / typecheck_s:12.1f} files/s")
    print()
    print(f"functions found: {manifest['stats'].get('functions_found')}, seeds kept: {manifest['rows_out']}")
    print(f"cost beyond parsing: {extra:+.1%} of the parse time (target: under 50%) "
          f"-> {'met' if extra < 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
