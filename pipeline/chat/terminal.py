"""The terminal chat: read a line, stream the answer, repeat; ``/reset`` and ``/exit``.

End of input (Ctrl-D) leaves too; Ctrl-C while an answer streams stops that
answer (what was shown is kept in the history) and Ctrl-C at the prompt leaves.
"""

from __future__ import annotations

import sys
from typing import TextIO

from pipeline.chat.session import ChatSession

PROMPT = "you> "
ANSWER = "assistant> "
HELP = "commands: /reset starts a new conversation, /exit leaves (so does Ctrl-D)"


def chat_loop(session: ChatSession, title: str, out: TextIO | None = None) -> int:
    """Hold a conversation on the terminal until ``/exit`` or end of input; return the exit code."""
    out = out or sys.stdout
    print(f"chat with {title} ({session.mode})", file=out)
    print(HELP, file=out, flush=True)
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            print(file=out)
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            session.reset()
            print("(new conversation)", file=out, flush=True)
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}; {HELP}", file=out, flush=True)
            continue
        print(ANSWER, end="", file=out, flush=True)
        stream = session.reply(text)
        try:
            for piece in stream:
                print(piece, end="", file=out, flush=True)
        except KeyboardInterrupt:
            stream.close()
            print(" [stopped]", end="", file=out)
        print(file=out, flush=True)
