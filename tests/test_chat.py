"""Talking to a model: streamed text with stop strings, the technical-assistant preamble, the chat session,
and ``run_pipeline.py --chat`` driven through a pseudo-terminal (pexpect) with the tiny random model, through
the transformers backend and through the openai backend (a local fake OpenAI-compatible server, since no
real one runs here)."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.chat.preamble import load_preamble
from pipeline.chat.session import ChatSession
from pipeline.framework.errors import ConfigError
from pipeline.llm import LLMConfig, SamplingParams, apply_stop, create_backend
from pipeline.llm.streaming import StopScanner, stream_with_stops, turn_end_marker
from tests.conftest import REPO
from tests.llm_fixtures import (  # noqa: F401 - pytest fixtures
    _openai_server_session, openai_server, tiny_backend, tiny_model_dir,
)

GREEDY = SamplingParams(max_tokens=24)


def test_stop_strings_split_over_pieces_are_cut_and_nothing_after_them_shows():
    text = "abc<|en<|end|>zz"
    stop = ["<|end|>", "\nHuman:"]
    expected = apply_stop(text, stop)[0]
    assert expected == "abc<|en"
    for cuts in itertools.combinations(range(1, len(text)), 3):
        bounds = (0, *cuts, len(text))
        pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
        assert "".join(stream_with_stops(pieces, stop)) == expected, pieces
    scanner = StopScanner(["<|end|>"])
    assert scanner.feed("ok <|") == "ok "  # "<|" may start the stop string: held back
    assert scanner.feed("x") == "<|x"  # it did not: released
    assert scanner.finish() == ""


def test_streaming_gives_what_generation_gives(tiny_backend):  # noqa: F811
    prompt = "def parse(text):\n"
    (whole,) = tiny_backend.generate([prompt], GREEDY)[0]
    assert "".join(tiny_backend.stream(prompt, GREEDY)) == whole.text
    stop = whole.text[8:11]  # a stop string the model is known to write
    cut = SamplingParams(max_tokens=24, stop=[stop])
    streamed = "".join(tiny_backend.stream(prompt, cut))
    assert streamed == tiny_backend.generate([prompt], cut)[0][0].text == apply_stop(whole.text, [stop])[0]
    conversation = [{"role": "user", "content": "hello"}]
    assert "".join(tiny_backend.stream_chat(conversation, GREEDY)) == \
        tiny_backend.generate_chat([conversation], GREEDY)[0][0].text


def test_the_openai_backend_streams_from_the_server(openai_server, tiny_backend):  # noqa: F811
    config = LLMConfig(backend="openai", model=openai_server.model_name, base_url=openai_server.base_url,
                       show_progress=False)
    conversation = [{"role": "user", "content": "hello"}]
    with create_backend(config) as client:
        pieces = list(client.stream_chat(conversation, GREEDY))
        text = "".join(client.stream("def parse(text):\n", GREEDY))
    assert len(pieces) > 1 and openai_server.seen[0]["stream"] is True
    assert "".join(pieces) == "".join(tiny_backend.stream_chat(conversation, GREEDY))
    assert text == "".join(tiny_backend.stream("def parse(text):\n", GREEDY))


def test_the_end_of_turn_marker_is_read_from_the_chat_template(tiny_backend):  # noqa: F811
    assert turn_end_marker(tiny_backend.tokenizer) == "<|end|>"


def test_the_preamble_renders_a_transcript_a_base_model_continues():
    preamble = load_preamble()
    history = [{"role": "user", "content": "What does `git stash` do?"}]
    prompt = preamble.prompt(history)
    assert prompt.startswith(preamble.system.strip())
    assert prompt.count("\n-----\n") == len(preamble.dialogues) + 1
    assert prompt.endswith("-----\nHuman: What does `git stash` do?\n\nAssistant:")
    assert preamble.stop == ["\nHuman:", "\n-----"]
    messages = preamble.messages(history)
    assert messages[0]["role"] == "system" and messages[-1] == history[0]
    assert sum(len(d) for d in preamble.dialogues) + 2 == len(messages)


def test_a_bad_preamble_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump({"system": "s", "dialogues": [[{"role": "assistant", "content": "hi"}]]}))
    with pytest.raises(ConfigError, match=r"p\.yaml: dialogues\[0\]: expected alternating"):
        load_preamble(bad)


def test_a_model_without_a_template_is_prompted_with_the_preamble(tiny_backend):  # noqa: F811
    template, tiny_backend.tokenizer.chat_template = tiny_backend.tokenizer.chat_template, None
    try:
        session = ChatSession(tiny_backend, GREEDY)
        answer = "".join(session.reply("What does `git stash` do?"))
        preamble = load_preamble()
        prompt = preamble.prompt([{"role": "user", "content": "What does `git stash` do?"}])
        expected = tiny_backend.generate([prompt], GREEDY.model_copy(update={"stop": preamble.stop}))[0][0].text
    finally:
        tiny_backend.tokenizer.chat_template = template
    assert session.mode == "technical-assistant preamble"
    assert answer == expected and session.history[-1] == {"role": "assistant", "content": expected.strip()}


def test_the_session_keeps_the_history_and_resets(tiny_backend):  # noqa: F811
    session = ChatSession(tiny_backend, GREEDY, system="Be brief.")
    first = "".join(session.reply("hello"))
    second = "".join(session.reply("and then?"))
    assert [m["role"] for m in session.conversation()] == ["system", "user", "assistant", "user", "assistant"]
    expected = tiny_backend.generate_chat([session.conversation()[:4]], GREEDY)[0][0].text
    assert second == expected
    session.reset()
    assert "".join(session.reply("hello")) == first and len(session.history) == 2


def spawn_chat(*args: str, cwd: Path = REPO):
    """``run_pipeline.py ARGS`` in a pseudo-terminal."""
    import pexpect

    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "dumb"}
    return pexpect.spawn(sys.executable, [str(REPO / "run_pipeline.py"), *args], cwd=str(cwd), env=env,
                         encoding="utf-8", timeout=180, dimensions=(50, 400))


def converse(child, lines: list[str]) -> list[str]:
    """Send each line at the prompt and collect the streamed answer printed for it."""
    answers = []
    for line in lines:
        child.expect_exact("you> ")
        child.sendline(line)
        child.expect_exact(line)  # the terminal's echo
        if line.startswith("/"):
            continue
        child.expect_exact("assistant> ")
        child.expect_exact("\r\nyou> ")
        answers.append(child.before)
        child.sendline("")  # an empty line just prompts again
    return answers


def three_turns_and_a_reset(child) -> None:
    """Hold a three-turn conversation, start over, and check the answers depend on the history."""
    import pexpect

    child.expect_exact("/reset starts a new conversation")
    first, second, third = converse(child, ["hello", "tell me more", "hello"])
    assert first and second and third
    assert third != first  # the same words answered with the history in front of them
    (again,) = converse(child, ["/reset", "hello"])
    assert again == first  # after /reset the model sees "hello" alone again
    child.expect_exact("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_holds_a_three_turn_conversation_in_a_terminal(tiny_model_dir):  # noqa: F811
    child = spawn_chat("--model", str(tiny_model_dir), "--temperature", "0", "--max-tokens", "12")
    child.expect_exact("chat with ")
    child.expect_exact("(chat template)")
    three_turns_and_a_reset(child)


def test_chat_through_the_openai_backend_in_a_terminal(tmp_path, openai_server):  # noqa: F811
    recipe = tmp_path / "served.yaml"
    recipe.write_text(yaml.safe_dump({"name": "served", "run": {"work_dir": str(tmp_path / "work")},
                                      "model": {"backend": "openai", "model": "unused",
                                                "base_url": openai_server.base_url}}))
    child = spawn_chat("-c", str(recipe), "--model", openai_server.model_name, "--temperature", "0",
                       "--max-tokens", "12")
    child.expect_exact("via openai")
    three_turns_and_a_reset(child)
    chats = [body for body in openai_server.seen if body.get("stream")]
    assert [len(body["messages"]) for body in chats] == [1, 3, 5, 1]  # the whole history, every turn


def test_chat_without_a_trained_model_says_what_to_do(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "r", "run": {"work_dir": str(tmp_path / "work")}}))
    from tests.conftest import run_cli

    result = run_cli("-c", str(recipe), "--chat", timeout=120)
    assert result.returncode == 2
    assert "no trained model in" in result.stderr and "--model PATH" in result.stderr
