"""An OpenAI-compatible HTTP server over :class:`LlamaCppEngine` (continuous batching on the CPU).

    python -m pipeline.llm.llamacpp_server --model M.gguf --port 8080 --threads 2 --slots 16

Serves ``GET /health``, ``GET /v1/models``, ``POST /v1/completions`` (one
prompt per request) and ``POST /v1/chat/completions`` (rendered with the chat
template stored in the GGUF file, as transformers renders it). Request
fields read: ``model`` (any name is accepted; ``/v1/models`` lists the
``--alias``), ``prompt`` or ``messages``, ``n``, ``temperature``, ``top_p``,
``max_tokens``, ``stop``, ``seed`` and ``repetition_penalty``; the answer has
one choice per completion with its ``finish_reason`` (``stop`` or
``length``) and a ``usage`` block with token counts.

Why not ``python -m llama_cpp.server``: it serves one request at a time
behind a global lock, so it cannot decode sequences together, which is most
of the speed on a CPU (see ``benchmarks/generation.py``).

The pipeline starts this server itself (``model.backend: llamacpp``, see
:mod:`pipeline.llm.llamacpp_backend`); it can also be started by hand and
used through the ``openai`` backend.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.llm.llamacpp_engine import LlamaCppEngine, SequenceJob

log = logging.getLogger("llamacpp_server")


class BadRequest(ValueError):
    """A request the server refuses with HTTP 400."""


class CompletionService:
    """Turns OpenAI request bodies into engine jobs and the results into OpenAI answers."""

    def __init__(self, engine: LlamaCppEngine, alias: str) -> None:
        self.engine = engine
        self.alias = alias
        self._formatter = None
        template = engine.chat_template()
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template, eos_token=engine.special_text("eos"), bos_token=engine.special_text("bos")
            )

    def complete(self, body: dict) -> dict:
        """Answer a ``/v1/completions`` body."""
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be one string")
        jobs, usage = self._run(self.engine.tokenize(prompt), body)
        choices = [{"index": i, "text": j.text, "finish_reason": j.finish_reason, "logprobs": None}
                   for i, j in enumerate(jobs)]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.alias, "choices": choices, "usage": usage}

    def chat(self, body: dict) -> dict:
        """Answer a ``/v1/chat/completions`` body."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        if self._formatter is None:
            raise BadRequest("the model's GGUF file has no chat template")
        prompt = self._formatter(messages=messages).prompt
        jobs, usage = self._run(self.engine.tokenize(prompt, add_special=False), body)
        choices = [{"index": i, "message": {"role": "assistant", "content": j.text},
                    "finish_reason": j.finish_reason, "logprobs": None} for i, j in enumerate(jobs)]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.alias, "choices": choices, "usage": usage}

    def _run(self, tokens: list[int], body: dict) -> tuple[list[SequenceJob], dict]:
        """Queue ``n`` sequences for the prompt, wait for them, and return them with the token usage."""
        n = _number(body, "n", int, 1, minimum=1)
        seed = body.get("seed")
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        group = object()
        jobs = [
            SequenceJob(
                tokens=tokens,
                max_tokens=_number(body, "max_tokens", int, 256, minimum=1),
                temperature=_number(body, "temperature", float, 1.0, minimum=0.0),
                top_p=_number(body, "top_p", float, 1.0, minimum=0.0),
                seed=None if seed is None else int(seed) + i,
                repetition_penalty=_number(body, "repetition_penalty", float, 1.0, minimum=0.0),
                stop=[s for s in stop if s],
                group=group,
            )
            for i in range(n)
        ]
        self.engine.submit(jobs)
        for job in jobs:
            job.done.wait()
            if job.error:
                raise BadRequest(job.error)
        usage = {"prompt_tokens": len(tokens), "completion_tokens": sum(j.completion_tokens for j in jobs)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return jobs, usage


def _number(body: dict, key: str, kind: type, default: Any, minimum: float) -> Any:
    value = body.get(key)
    if value is None:
        return default
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{key!r} must be a number") from None
    if value < minimum:
        raise BadRequest(f"{key!r} must be at least {minimum}")
    return value


def make_handler(service: CompletionService) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``service``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug(format, *args)

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.rstrip("/")
            if path == "/health":
                return self._send(200, {"status": "ok", "slots": service.engine.slots,
                                        "busy": len(service.engine.busy), **service.engine.stats})
            if path == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": service.alias, "object": "model",
                                                                    "owned_by": "llama.cpp"}]})
            self._send(404, _error(f"unknown path {self.path}"))

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                return self._send(400, _error("the body is not JSON"))
            path = self.path.rstrip("/")
            try:
                if path == "/v1/completions":
                    return self._send(200, service.complete(body))
                if path == "/v1/chat/completions":
                    return self._send(200, service.chat(body))
            except BadRequest as e:
                return self._send(400, _error(str(e)))
            self._send(404, _error(f"unknown path {self.path}"))

    return Handler


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


def main(argv: list[str] | None = None) -> int:
    """Load the model, start the engine and serve until SIGTERM or Ctrl-C."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="path to a .gguf file")
    ap.add_argument("--alias", default=None, help="the model name /v1/models lists (default: the file name)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (at most the free cores)")
    ap.add_argument("--slots", type=int, default=8, help="sequences decoded together")
    ap.add_argument("--ctx-per-slot", type=int, default=4096, help="context length of each sequence")
    ap.add_argument("--repack", choices=["auto", "on", "off"], default="auto",
                    help="weight repacking into llama.cpp's extra buffers (auto: off on AMX CPUs, where it crashes)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    repack = {"auto": None, "on": True, "off": False}[args.repack]
    engine = LlamaCppEngine(args.model, threads=args.threads, slots=args.slots, ctx_per_slot=args.ctx_per_slot,
                            repack=repack)
    service = CompletionService(engine, args.alias or args.model.rsplit("/", 1)[-1])
    httpd = ThreadingHTTPServer((args.host, args.port), make_handler(service))
    httpd.daemon_threads = True
    engine.start()

    def shut_down(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    log.info("serving %s on http://%s:%d/v1 (%d threads, %d slots of %d tokens, repacking %s)", args.model,
             args.host, args.port, args.threads, args.slots, engine.ctx_per_slot, "on" if engine.repack else "off")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
