"""CI cannot pass by skipping: a missing installed component fails under CI, and no test can hang it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

from tests.conftest import REPO

# Skips that are not about a component CI installs (so they stay ordinary skips).
ALLOWED_SKIPS = {
    ("test_llm.py", "CUDA is available here"),  # a test of the CPU-only error, on a machine with a GPU
}


def _run_pytest(test_file, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci:
        env["CI"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
                          cwd=test_file.parent, env=env, capture_output=True, text=True, timeout=300)


def test_a_missing_component_skips_locally_and_fails_under_ci(tmp_path):
    test_file = tmp_path / "test_needs_it.py"
    test_file.write_text(
        "from tests.conftest import require_installed\n\n"
        "def test_it():\n    require_installed('the frobnicator', 'not on PATH')\n\n"
        "def test_present():\n    require_installed('the frobnicator', None)\n"
    )
    local = _run_pytest(test_file, ci=False)
    assert local.returncode == 0 and "1 passed, 1 skipped" in local.stdout, local.stdout
    ci = _run_pytest(test_file, ci=True)
    assert ci.returncode == 1 and "1 failed, 1 passed" in ci.stdout, ci.stdout
    assert "the frobnicator is missing, and CI installs it: not on PATH" in ci.stdout


def test_every_skip_of_an_installed_component_goes_through_the_helper():
    offenders = []
    for path in sorted((REPO / "tests").glob("*.py")):
        if path.name in ("conftest.py", "test_ci_rules.py"):
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"importorskip\(|pytest\.skip\(|mark\.skipif\(", line):
                if not any(path.name == name and reason in line for name, reason in ALLOWED_SKIPS):
                    if not re.search(r'skipif\(.*"vllm"', line):  # vllm cannot be installed here or in CI
                        offenders.append(f"{path.name}:{lineno}: {line.strip()}")
    assert offenders == [], "use tests.conftest.require_installed, which fails under CI:\n" + "\n".join(offenders)


def test_ci_sets_ci_and_pytest_has_a_timeout():
    assert re.search(r"^export CI=", (REPO / ".ci/run").read_text(), re.M), ".ci/run must set CI"
    test_sh = (REPO / "scripts/test.sh").read_text()
    assert "env -i" not in test_sh and "unset CI" not in test_sh, "scripts/test.sh must pass CI through"
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert int(options["timeout"]) > 0
    import pytest_timeout  # noqa: F401 - the plugin that reads it (the dev extra)


def test_setup_stops_at_once_when_the_disk_is_too_full_for_a_fresh_install(tmp_path):
    venv = tmp_path / "no-venv-yet"
    env = {**os.environ, "VENV": str(venv), "SETUP_NEED_MB": str(10**12)}  # more than any disk has free
    done = subprocess.run(["bash", str(REPO / "scripts/setup.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {REPO} has ")
    assert "a fresh set-up needs about 1000000000000 MB (SETUP_NEED_MB overrides)" in done.stderr
    assert "==>" not in done.stdout and not venv.exists()  # nothing installed, nothing created
