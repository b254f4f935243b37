"""Test fixtures for the generation backends (not a product feature).

* :func:`build_tiny_model` / fixture ``tiny_model_dir``: a tiny random causal LM
  made offline: a byte-level BPE tokenizer trained in a second on a few stdlib
  modules' source, wrapped as a ``PreTrainedTokenizerFast`` with ``<eos>``,
  ``<pad>`` and a small chat template, and a 2-layer Llama (hidden 64) with
  seeded random weights, saved with ``save_pretrained``. Its output is
  gibberish but deterministic, and it never downloads anything.
* :class:`ReplayBackend` / fixture ``replay_server``: model output fixtures for the
  pipeline's own prompts (what a good model would answer, with no model at all):
  well-formed concepts, instructions, responses with tests (sample k passes its
  tests when k is even and fails them when odd) and docstring verdicts (yes when
  the function's name has an even length, see :func:`judge_says_yes`) and HumanEval
  answers (canonical for even problem numbers, wrong for odd ones), served by
  a :class:`FakeOpenAIServer` so the real ``openai`` backend and command line run.
* :class:`FakeOpenAIServer` / fixture ``openai_server``: a local
  OpenAI-compatible HTTP server (stdlib ``http.server`` in a thread on
  127.0.0.1, ephemeral port) serving ``/v1/completions``,
  ``/v1/chat/completions`` (streamed too, ``stream: true``) and ``/v1/models`` from any backend, with
  switchable failure modes (``fail_first``, ``hang_s``, ``api_key``) and one
  known model name (others get an OpenAI-style 404).

Use from a test module with ``from tests.llm_fixtures import *`` (the fixtures
are ordinary pytest fixtures) or call the builders directly.
"""

from __future__ import annotations

import inspect
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "CHAT_TEMPLATE",
    "FakeOpenAIServer",
    "ReplayBackend",
    "judge_says_yes",
    "replay_model_section",
    "replay_server",
    "build_tiny_model",
    "closed_port",
    "openai_server",
    "tiny_backend",
    "tiny_model_dir",
]

#: A minimal chat template for the tiny model (ChatML-like special tokens).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_SPECIAL_TOKENS = ["<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def _training_text() -> list[str]:
    """Source text of a few stdlib modules: enough for a small BPE vocabulary."""
    import argparse
    import dataclasses
    import textwrap

    return [inspect.getsource(mod) for mod in (textwrap, dataclasses, argparse)]


def build_tiny_model(out_dir: str | Path, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """Build and save a tiny random Llama-style causal LM plus its tokenizer in ``out_dir``.

    The tokenizer is byte-level BPE (every string round-trips) trained on stdlib
    source; the model has hidden size 64, 2 layers, random weights from
    ``seed``, and the ``<eos>`` row of the output layer zeroed so greedy decoding
    does not stop on its own at once. Returns ``out_dir``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_text(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<eos>",
        pad_token="<pad>",
        additional_special_tokens=_SPECIAL_TOKENS[2:],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Random weights give small logits; scale the output layer so sampling
        # at temperature ~1 is still varied but not uniform, and keep <eos>
        # and <pad> from being chosen greedily.
        model.lm_head.weight.mul_(20.0)
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
        model.lm_head.weight[tokenizer.pad_token_id].zero_()
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-scoped directory holding the tiny random model and its tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path):
    """Session-scoped transformers backend on the tiny model (CPU, float32, batch 8)."""
    from pipeline.llm import LLMConfig, create_backend

    backend = create_backend(
        LLMConfig(backend="transformers", model=str(tiny_model_dir), device="cpu", dtype="float32", show_progress=False)
    )
    yield backend
    backend.close()


def judge_says_yes(function_name: str) -> bool:
    """The replayed docstring verdict for a function: yes exactly when its name has an even length."""
    return len(function_name) % 2 == 0


def _query_match(pattern: str, prompt: str) -> str:
    """The first match of ``pattern`` in the prompt's query (after its last example header), or ``unknown``."""
    import re

    found = re.search(pattern, prompt.rsplit("\n## Example", 1)[-1])
    return found.group(1) if found else "unknown"


class ReplayBackend:
    """Answers the pipeline's few-shot prompts as a well-behaved model would (a model output fixture).

    The answer depends on the header the prompt ends with: ``### Concepts`` gets a list naming the
    function, ``### Instruction`` an instruction naming that function again, ``### Response`` a solution
    (``double_<that name>``) and a ``### Tests`` block
    (sample k: tests pass for even k, fail for odd k), the docstring judge's headers a yes/no verdict
    by :func:`judge_says_yes`; anything else (a HumanEval prompt) a one-line body. Every completion
    stops normally. ``prompts`` records what was asked.
    """

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def answer(self, prompt: str, index: int) -> str:
        """The replayed completion ``index`` for ``prompt``."""
        name = _query_match(r"def (\w+)\(", prompt)
        if prompt.endswith("### Concepts\n"):
            return f"- the function {name}\n- early return\n"
        if prompt.endswith("### Instruction\n"):
            seed = _query_match(r"the function (\w+)", prompt)
            return f"Write a Python function that doubles a number, in the spirit of {seed}.\n"
        if prompt.endswith("### Response\n"):
            func = "double_" + _query_match(r"in the spirit of (\w+)", prompt)
            expected = 4 if index % 2 == 0 else 5
            return (f"Multiply by two.\n\n```python\ndef {func}(x):\n    return x * 2\n```\n\n"
                    f"### Tests\n```python\nassert {func}(2) == {expected}\nassert {func}(0) == 0\n```\n")
        if prompt.endswith(("### Enough to re-implement\n", "### Docstring describes the code\n")):
            return "yes" if judge_says_yes(name) else "no"
        return self.humaneval_answer(prompt)

    @staticmethod
    def humaneval_answer(prompt: str) -> str:
        """A HumanEval prompt: the canonical solution for even problem numbers, a wrong body for odd ones."""
        from pipeline.benchmarks.answers import completion_prompt
        from pipeline.benchmarks.catalog import load_benchmark

        problem = next((p for p in load_benchmark("humaneval").problems if completion_prompt(p) == prompt), None)
        if problem is not None and int(problem.task_id.split("/")[1]) % 2 == 0:
            return problem.reference[len(problem.prompt):]  # the canonical solution's body
        return "    return None\n"

    def generate(self, prompts: list[str], params: Any) -> list[list[Any]]:
        """``params.n`` replayed completions per prompt, each with finish reason ``stop``."""
        from pipeline.llm import Completion

        self.prompts.extend(prompts)
        return [[Completion(text=self.answer(p, i), finish_reason="stop") for i in range(params.n)] for p in prompts]

    def generate_chat(self, conversations: list, params: Any) -> list[list[Any]]:
        """Chat turns are answered like the text of their last user turn."""
        from pipeline.llm import Completion

        return [[Completion(text=self.answer(c[-1]["content"], i), finish_reason="stop") for i in range(params.n)]
                for c in conversations]


@pytest.fixture(scope="session")
def replay_server() -> FakeOpenAIServer:
    """An OpenAI-compatible server answering from a :class:`ReplayBackend` (model name ``replay``)."""
    server = FakeOpenAIServer(ReplayBackend(), model_name="replay").start()
    yield server
    server.stop()


def replay_model_section(server: FakeOpenAIServer) -> dict:
    """The recipe's ``model`` section that points the ``openai`` backend at ``server``."""
    return {"backend": "openai", "model": server.model_name, "base_url": server.base_url, "max_retries": 0,
            "show_progress": False}


def closed_port() -> int:
    """A local TCP port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeOpenAIServer:
    """A local OpenAI-compatible server answering from a backend, with failure modes.

    Attributes to switch at run time (thread-safe enough for tests):

    * ``fail_first``: answer HTTP 500 to the next K generation requests, then succeed;
    * ``hang_s``: sleep this long before answering (to exceed a client timeout);
    * ``api_key``: when set, requests without ``Authorization: Bearer <key>`` get 401;
    * ``retry_after_ms``: sent with 500s so client retries wait little;
    * ``model_name``: the only model known; others get an OpenAI-style 404.

    ``requests`` counts generation requests received (failed ones included);
    ``max_n`` when set rejects ``n`` above it with a 400, like some servers.
    """

    def __init__(self, backend: Any, model_name: str = "tiny-test-model") -> None:
        self.backend = backend
        self.model_name = model_name
        self.fail_first = 0
        self.hang_s = 0.0
        self.api_key: str | None = None
        self.retry_after_ms = 10
        self.max_n: int | None = None
        self.requests = 0
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="fake-openai")

    @property
    def base_url(self) -> str:
        """The ``.../v1`` URL clients should use."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reset(self) -> None:
        """Back to normal behaviour: no failures, no hang, no auth, counters zeroed."""
        with self._lock:
            self.fail_first = 0
            self.hang_s = 0.0
            self.api_key = None
            self.max_n = None
            self.requests = 0
            self.seen = []

    def start(self) -> "FakeOpenAIServer":
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging handlers are woken up."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- request handling -------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send_events(self, chunks: list[dict]) -> None:
                """A server-sent event stream: one ``data:`` line per chunk, then ``data: [DONE]``."""
                data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _authorized(self) -> bool:
                if server.api_key is None:
                    return True
                return self.headers.get("Authorization") == f"Bearer {server.api_key}"

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if not self._authorized():
                    return self._send(401, _error("Incorrect API key provided.", "invalid_api_key"))
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(
                        200,
                        {"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "test"}]},
                    )
                self._send(404, _error(f"Unknown path {self.path}", "not_found"))

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._send(400, _error("Body is not JSON.", "invalid_json"))
                path = self.path.rstrip("/")
                if path not in ("/v1/completions", "/v1/chat/completions"):
                    return self._send(404, _error(f"Unknown path {self.path}", "not_found"))
                with server._lock:
                    server.requests += 1
                    server.seen.append(body)
                    failing = server.fail_first > 0
                    if failing:
                        server.fail_first -= 1
                    hang = server.hang_s
                if hang:
                    server._stopping.wait(hang)
                if not self._authorized():
                    return self._send(401, _error("Incorrect API key provided.", "invalid_api_key"))
                if failing:
                    return self._send(
                        500,
                        _error("Injected failure.", "internal_error", "server_error"),
                        {"retry-after-ms": str(server.retry_after_ms)},
                    )
                if body.get("model") != server.model_name:
                    return self._send(
                        404,
                        _error(f"The model `{body.get('model')}` does not exist.", "model_not_found", param="model"),
                    )
                n = int(body.get("n") or 1)
                if server.max_n is not None and n > server.max_n:
                    return self._send(400, _error(f"n must be at most {server.max_n}.", "invalid_n", param="n"))
                try:
                    if body.get("stream"):
                        return self._send_events(server._stream(path, body))
                    if path == "/v1/completions":
                        return self._send(200, server._complete(body))
                    return self._send(200, server._chat(body))
                except Exception as e:  # report, don't kill the server thread
                    return self._send(500, _error(f"{type(e).__name__}: {e}", "internal_error", "server_error"))

        return Handler

    def _params(self, body: dict):
        from pipeline.llm import SamplingParams

        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        return SamplingParams(
            n=int(body.get("n") or 1),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            max_tokens=int(body.get("max_tokens") or 16),
            stop=list(stop),
            seed=body.get("seed"),
        )

    def _complete(self, body: dict) -> dict:
        prompts = body.get("prompt")
        if isinstance(prompts, str):
            prompts = [prompts]
        params = self._params(body)
        with self._gen_lock:
            results = self.backend.generate(list(prompts), params)
        choices = []
        for outs in results:
            for c in outs:
                choices.append(
                    {"index": len(choices), "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                )
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def _stream(self, path: str, body: dict) -> list[dict]:
        """The chunks of a streamed answer (``stream: true``), from the backend's own streaming."""
        params = self._params(body)
        chat = path == "/v1/chat/completions"
        with self._gen_lock:
            if chat:
                pieces = list(self.backend.stream_chat(body["messages"], params))
            else:
                pieces = list(self.backend.stream(body["prompt"], params))
        kind = "chat.completion.chunk" if chat else "text_completion"
        stamp = {"id": f"stream-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
                 "model": self.model_name}

        def choice(text: str, finish: str | None) -> dict:
            if chat:
                return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        return [{**stamp, "choices": [choice(p, None)]} for p in pieces] + [{**stamp, "choices": [choice("", "stop")]}]

    def _chat(self, body: dict) -> dict:
        params = self._params(body)
        with self._gen_lock:
            (outs,) = self.backend.generate_chat([body["messages"]], params)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
            for i, c in enumerate(outs)
        ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


def _error(message: str, code: str, type_: str = "invalid_request_error", param: str | None = None) -> dict:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@pytest.fixture(scope="session")
def _openai_server_session(tiny_backend) -> FakeOpenAIServer:
    server = FakeOpenAIServer(tiny_backend).start()
    yield server
    server.stop()


@pytest.fixture
def openai_server(_openai_server_session: FakeOpenAIServer) -> FakeOpenAIServer:
    """The session's fake OpenAI server, reset to normal behaviour for this test."""
    _openai_server_session.reset()
    yield _openai_server_session
    _openai_server_session.reset()
