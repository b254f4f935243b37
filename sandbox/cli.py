"""Command line: ``python -m sandbox run|build|clean``.

    python -m sandbox run --input JOBS.jsonl --output RESULTS.jsonl [--workers N] [--timeout S]
    python -m sandbox build [--offline | --dockerfile]
    python -m sandbox clean [--all] [--images]

``run`` reads one job per line (``{"id": ..., "code": ..., "timeout": optional}``) and
writes one result per line, in input order, each with id, status, passed,
exit_code, duration_s, stdout and stderr. Exit codes: 0 all programs ran (whatever
their status), 1 the sandbox failed, 2 bad input or arguments.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from .config import SandboxConfig
from .errors import SandboxError, SandboxUnavailable
from .job import Job
from .verdict import STATUSES

log = logging.getLogger("sandbox")


class InputError(ValueError):
    """A problem with the jobs file, already phrased for the user."""


def read_jobs(path: Path) -> List[Job]:
    """Parse a JSONL jobs file; InputError names the file and line of any bad line."""
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    jobs: List[Job] = []
    seen = set()
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path}:{number}: bad JSON line ({exc})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: expected a JSON object with 'id' and 'code'")
            try:
                job = Job.from_dict(row)
            except (ValueError, TypeError) as exc:
                raise InputError(f"{path}:{number}: {exc}") from None
            if job.id in seen:
                raise InputError(f"{path}:{number}: duplicate id {job.id!r}")
            seen.add(job.id)
            jobs.append(job)
    return jobs


def _positive(kind):
    """argparse type: a number of ``kind`` greater than zero."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="prog", dynamic_ncols=True, disable=quiet, file=sys.stderr,
                desc="sandbox", smoothing=0.1)


def cmd_run(args: argparse.Namespace) -> int:
    """Run every job of the input file and write the results file."""
    from .pool import SandboxPool

    try:
        jobs = read_jobs(Path(args.input))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overrides = {}
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.timeout is not None:
        overrides["timeout_s"] = args.timeout
    if args.memory_mb is not None:
        overrides["memory_mb"] = args.memory_mb
    if args.image is not None:
        overrides["image"] = args.image
    try:
        config = SandboxConfig(**overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc), "loc": ()}
        print(f"error: invalid option {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr)
        return 2
    out_path = Path(args.output)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out = out_path.open("w", encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {out_path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    counts = collections.Counter()
    start = time.monotonic()
    with out, SandboxPool(config) as pool, _progress(len(jobs), args.quiet) as bar:
        for verdict in pool.imap(jobs, ordered=True):
            out.write(json.dumps(verdict.to_dict(), ensure_ascii=False) + "\n")
            out.flush()
            counts[verdict.status] += 1
            bar.update(1)
            bar.set_postfix_str(" ".join(f"{s}={counts[s]}" for s in STATUSES if counts[s]), refresh=False)
    elapsed = time.monotonic() - start
    summary = ", ".join(f"{status} {counts[status]}" for status in STATUSES)
    rate = len(jobs) / elapsed if elapsed > 0 else 0.0
    print(f"{len(jobs)} programs in {elapsed:.1f} s ({rate:.1f}/s): {summary} -> {out_path}", file=sys.stderr)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build the sandbox image (or say it is up to date) and print its tag."""
    from .engine import connect
    from .image import build_image, image_exists, image_tag

    config = SandboxConfig()
    client = connect(config.docker_url)
    tag = image_tag()
    if image_exists(client, tag) and not args.force:
        print(f"{tag} is up to date", file=sys.stderr)
    else:
        method = "offline" if args.offline else "dockerfile" if args.dockerfile else "auto"
        tag = build_image(config, method=method, client=client, force=args.force)
        print(f"built {tag}", file=sys.stderr)
    print(tag)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove leftover sandbox containers (of dead runs; ``--all``: every one)."""
    from .engine import connect
    from .pool import remove_stale_containers

    client = connect(SandboxConfig().docker_url)
    removed = remove_stale_containers(client, everything=args.all)
    print(f"removed {len(removed)} sandbox container(s)", file=sys.stderr)
    if args.images:
        from .image import remove_old_images

        tags = remove_old_images(client)
        print(f"removed {len(tags)} old sandbox image tag(s){': ' + ', '.join(tags) if tags else ''}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m sandbox``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Run Python programs in the Docker sandbox.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run programs from a JSONL file, write verdicts to a JSONL file")
    run.add_argument("--input", required=True, help='JSONL file, one {"id", "code", optional "timeout"} per line')
    run.add_argument("--output", required=True, help="JSONL file to write, one verdict per line, in input order")
    run.add_argument("--workers", type=_positive(int), default=None, help="containers (default: one per CPU core)")
    run.add_argument("--timeout", type=_positive(float), default=None, help="default wall-clock limit per program, seconds")
    run.add_argument("--memory-mb", type=_positive(int), default=None, help="address-space limit per program, MiB")
    run.add_argument("--image", default=None, help="image to use instead of the built-in recipe's")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    build = sub.add_parser("build", help="build the sandbox image")
    how = build.add_mutually_exclusive_group()
    how.add_argument("--offline", action="store_true", help="debootstrap + docker import (no registry needed)")
    how.add_argument("--dockerfile", action="store_true", help="sandbox/Dockerfile (needs a registry)")
    build.add_argument("--force", action="store_true",
                       help="rebuild from scratch even if the tag exists (fresh Debian base / fresh pull, no cache)")
    build.set_defaults(func=cmd_build)

    clean = sub.add_parser("clean", help="remove leftover sandbox containers")
    clean.add_argument("--all", action="store_true", help="also those of runs still alive")
    clean.add_argument("--images", action="store_true", help="also remove image tags of older recipes")
    clean.set_defaults(func=cmd_clean)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="sandbox: %(message)s", stream=sys.stderr)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("docker").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
