"""Sandbox throughput, side by side: bare host subprocesses vs `docker run --rm` per program vs our pool.

The same batch of trivial passing programs runs three ways with the same
parallelism (default 2):

1. host        - ``python -c CODE`` per program on the host, no isolation at all;
2. docker run  - ``docker run --rm`` per program, same image and limits as the pool;
3. pool        - ``SandboxPool`` (long-lived containers, a warm worker forks per program).

Prints programs/second for each and the ratios. Pool start-up is timed separately
(it is paid once per run, not per program).

    python benchmarks/sandbox.py [--programs 200] [--parallel 2] [--docker-run-programs N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import Job, SandboxConfig, SandboxPool, ensure_image  # noqa: E402
from sandbox.container import create_kwargs  # noqa: E402


def make_programs(n: int) -> list[str]:
    """``n`` small distinct programs that pass: a function and a few asserts."""
    return [
        f"def f(x):\n    return x * {i} + 1\n\nassert f(0) == 1\nassert f(2) == {2 * i + 1}\nprint('ok {i}')\n"
        for i in range(n)
    ]


def timed_parallel(fn, items, parallel: int) -> tuple[float, list[bool]]:
    """Run ``fn`` over ``items`` with ``parallel`` threads; (seconds, results)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as ex:
        results = list(ex.map(fn, items))
    return time.perf_counter() - start, results


def run_host(code: str) -> bool:
    """One fresh host interpreter per program."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


def docker_run_argv(config: SandboxConfig, image: str) -> list[str]:
    """The ``docker run --rm`` command line with the pool's isolation and limits."""
    kw = create_kwargs(config, image, {}, "unused")
    argv = ["docker", "run", "--rm", "-i", "--network", "none", "--read-only", "--user", kw["user"],
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--pids-limit", str(kw["pids_limit"]),
            "--memory", str(kw["mem_limit"]), "--memory-swap", str(kw["memswap_limit"]),
            "--cpus", str(config.cpus), "--shm-size", kw["shm_size"], "--log-driver", "none",
            "--workdir", "/tmp", "--entrypoint", "python3"]
    for path, opts in kw["tmpfs"].items():
        argv += ["--tmpfs", f"{path}:{opts}"]
    return argv + [image, "-I", "-c"]


def main() -> int:
    """Run the three ways and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", type=int, default=200, help="programs in the batch")
    parser.add_argument("--parallel", type=int, default=2, help="programs at once, every way")
    parser.add_argument("--docker-run-programs", type=int, default=None,
                        help="time `docker run` on only the first N programs (it is slow); default: all")
    args = parser.parse_args()
    if shutil.which("docker") is None:
        print("error: the docker CLI is needed for the `docker run` baseline", file=sys.stderr)
        return 1

    config = SandboxConfig(workers=args.parallel)
    image = ensure_image(config)
    programs = make_programs(args.programs)
    print(f"{len(programs)} trivial passing programs, parallelism {args.parallel}, image {image}")

    rows = []
    host_s, ok = timed_parallel(run_host, programs, args.parallel)
    assert all(ok), "a program failed on the host"
    rows.append(("host subprocess (python -c)", len(programs), host_s))

    argv = docker_run_argv(config, image)
    sample = programs[: args.docker_run_programs or len(programs)]
    dr_s, ok = timed_parallel(
        lambda code: subprocess.run(argv + [code], capture_output=True, timeout=120).returncode == 0,
        sample, args.parallel)
    assert all(ok), "a program failed under docker run"
    rows.append(("docker run --rm per program", len(sample), dr_s))

    start = time.perf_counter()
    with SandboxPool(config) as pool:
        startup_s = time.perf_counter() - start
        pool.run([Job(id=f"warm{i}", code="pass") for i in range(args.parallel)])
        start = time.perf_counter()
        verdicts = pool.run([Job(id=str(i), code=code) for i, code in enumerate(programs)])
        pool_s = time.perf_counter() - start
    assert all(v.passed for v in verdicts), [v for v in verdicts if not v.passed][:3]
    rows.append(("SandboxPool (warm containers)", len(programs), pool_s))

    pool_rate = len(programs) / pool_s
    print(f"\n{'way':32s} {'programs':>8s} {'seconds':>8s} {'prog/s':>9s} {'pool is':>9s}")
    for name, n, seconds in rows:
        rate = n / seconds
        print(f"{name:32s} {n:8d} {seconds:8.2f} {rate:9.1f} {pool_rate / rate:8.1f}x")
    print(f"\npool start-up ({args.parallel} containers): {startup_s:.2f} s, paid once per run")
    host_rate = rows[0][1] / rows[0][2]
    docker_rate = rows[1][1] / rows[1][2]
    print(f"targets: pool >= host rate: {'met' if pool_rate >= host_rate else 'MISSED'}; "
          f"pool >= 15x docker run: {'met' if pool_rate >= 15 * docker_rate else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
