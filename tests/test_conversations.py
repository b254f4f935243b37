"""Conversation sources: OpenAssistant message trees and instruction tables, checked against conversations
worked out by hand from small trees written for this test (branches, ranks, deleted and unreviewed messages,
two languages, a malformed row)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.conversations import ConversationsConfig, ConversationSource
from pipeline.conversations.instructions import instruction_conversations
from pipeline.conversations.oasst import oasst_conversations
from pipeline.framework.errors import InputError
from pipeline.framework.inputs import open_input
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture


def msg(message_id, parent_id, role, text, *, lang="en", rank=None, deleted=False, review=True):
    """One row of an OpenAssistant message table."""
    return {"message_id": message_id, "parent_id": parent_id, "role": role, "text": text, "lang": lang,
            "rank": rank, "deleted": deleted, "review_result": review, "message_tree_id": "t"}


TREES = [
    # tree a: two ranked answers, a follow-up with a deleted answer, an unreviewed branch with a reply below it
    msg("a1", None, "prompter", "How do I reverse a list in Python?"),
    msg("a2", "a1", "assistant", "Wrap it in reversed() and build a list.", rank=1),
    msg("a3", "a1", "assistant", "Slice it: xs[::-1] is a reversed copy.", rank=0),
    msg("a4", "a3", "prompter", "And in place?", rank=0),
    msg("a5", "a4", "assistant", "Call xs.reverse(); it returns None.", rank=0),
    msg("a6", "a4", "assistant", "(removed by a moderator)", rank=1, deleted=True),
    msg("a7", "a3", "prompter", "Thanks!", rank=1),
    msg("a8", "a1", "assistant", "Lists cannot be reversed.", rank=2, review=False),
    msg("a9", "a8", "prompter", "Are you sure?"),
    # tree b: Spanish, one ranked and one unranked answer
    msg("b1", None, "prompter", "¿Cómo ordeno un diccionario por sus valores?", lang="es"),
    msg("b2", "b1", "assistant", "sorted(d.items(), key=lambda kv: kv[1])", lang="es", rank=0),
    msg("b3", "b1", "assistant", "Con un bucle.", lang="es"),
    # tree c: a prompt whose only answer was never reviewed
    msg("c1", None, "prompter", "What is a monad?"),
    msg("c2", "c1", "assistant", "A monoid in the category of endofunctors.", review=None),
    # tree d: a deleted prompt with an answer
    msg("d1", None, "prompter", "spam spam spam", deleted=True),
    msg("d2", "d1", "assistant", "I cannot help with that."),
    # tree e: one answer followed by two unanswered follow-ups
    msg("e1", None, "prompter", "Name a sorting algorithm."),
    msg("e2", "e1", "assistant", "Merge sort.", rank=0),
    msg("e3", "e2", "prompter", "Another one?", rank=0),
    msg("e4", "e2", "prompter", "Which is fastest?", rank=1),
    # malformed rows: an unknown role, and a tree opened by an assistant
    msg("x1", None, "moderator", "locked"),
    msg("f1", None, "assistant", "Hello, how can I help?"),
]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


TEXT = {m["message_id"]: m["text"] for m in TREES}
A_BEST = [user(TEXT["a1"]), assistant(TEXT["a3"]), user(TEXT["a4"]), assistant(TEXT["a5"])]
B_BEST = [user(TEXT["b1"]), assistant(TEXT["b2"])]
E_BEST = [user(TEXT["e1"]), assistant(TEXT["e2"])]


def drops(conversion):
    """{message id: reason} of the dropped messages."""
    return {r["message_id"]: r["drop_reason"] for r in conversion.dropped}


def test_best_path_in_two_languages_matches_the_hand_worked_conversations():
    out = oasst_conversations(TREES, languages=["en", "es"], paths="best")
    assert out.conversations == [{"id": "a1", "messages": A_BEST}, {"id": "b1", "messages": B_BEST},
                                 {"id": "e1", "messages": E_BEST}]
    assert drops(out) == {
        "a2": "lower_ranked_branch", "a7": "lower_ranked_branch", "b3": "lower_ranked_branch",
        "e4": "lower_ranked_branch", "a6": "deleted", "d1": "deleted", "a8": "not_reviewed", "c2": "not_reviewed",
        "a9": "parent_dropped", "d2": "parent_dropped", "c1": "no_reply", "e3": "trailing_user_turn",
        "x1": "invalid_message", "f1": "root_not_prompter",
    }
    assert out.dropped_by_reason() == {"deleted": 2, "invalid_message": 1, "lower_ranked_branch": 4, "no_reply": 1,
                                       "not_reviewed": 2, "parent_dropped": 2, "root_not_prompter": 1,
                                       "trailing_user_turn": 1}
    # every message is either in a conversation or dropped with a reason
    used = 4 + 2 + 2
    assert out.stats["messages_in"] == len(TREES) == used + len(out.dropped)
    assert out.stats["turns"] == used


def test_one_language_drops_the_other_languages_tree():
    out = oasst_conversations(TREES, languages=["en"], paths="best")
    assert [c["id"] for c in out.conversations] == ["a1", "e1"]
    assert out.conversations[0]["messages"] == A_BEST
    assert {k: v for k, v in drops(out).items() if k.startswith("b")} == {"b1": "language", "b2": "language",
                                                                          "b3": "language"}
    assert out.dropped_by_reason()["lower_ranked_branch"] == 3


def test_every_root_to_leaf_path_with_trailing_prompts_cut_and_duplicates_kept_once():
    out = oasst_conversations(TREES, languages=None, paths="all")
    assert out.conversations == [
        {"id": "a5", "messages": A_BEST},
        {"id": "a3", "messages": [user(TEXT["a1"]), assistant(TEXT["a3"])]},  # a1 -> a3 -> a7, "Thanks!" cut
        {"id": "a2", "messages": [user(TEXT["a1"]), assistant(TEXT["a2"])]},
        {"id": "b2", "messages": B_BEST},
        {"id": "b3", "messages": [user(TEXT["b1"]), assistant(TEXT["b3"])]},
        {"id": "e2", "messages": E_BEST},  # e1 -> e2 -> e3 and e1 -> e2 -> e4 end the same once cut
    ]
    assert out.stats["duplicate_paths"] == 1
    assert drops(out) == {
        "a6": "deleted", "d1": "deleted", "a8": "not_reviewed", "c2": "not_reviewed", "a9": "parent_dropped",
        "d2": "parent_dropped", "c1": "no_reply", "a7": "trailing_user_turn", "e3": "trailing_user_turn",
        "e4": "trailing_user_turn", "x1": "invalid_message", "f1": "root_not_prompter",
    }


def test_a_reply_with_its_parents_role_is_malformed_and_its_subtree_dropped():
    rows = [msg("r1", None, "prompter", "Hi"), msg("r2", "r1", "prompter", "Hi again"),
            msg("r3", "r2", "assistant", "Hello"), msg("r4", "r1", "assistant", "Hello there")]
    out = oasst_conversations(rows)
    assert out.conversations == [{"id": "r1", "messages": [user("Hi"), assistant("Hello there")]}]
    assert drops(out) == {"r2": "role_not_alternating", "r3": "parent_dropped"}


def test_instruction_rows_become_one_turn_conversations_with_the_context_folded_in():
    rows = [
        {"id": "i1", "instruction": "Summarise the passage.", "context": "Python was first released in 1991.",
         "response": "Python dates from 1991.", "category": "summarization"},
        {"id": "i2", "instruction": "Name a prime number.", "context": "", "response": "Seven.",
         "category": "open_qa"},
        {"id": "i3", "instruction": "Say nothing.", "context": "", "response": "  ", "category": "open_qa"},
        {"id": "i4", "instruction": "", "context": "x", "response": "y", "category": "open_qa"},
    ]
    out = instruction_conversations(rows)
    assert out.conversations == [
        {"id": "i1", "messages": [user("Summarise the passage.\n\nPython was first released in 1991."),
                                  assistant("Python dates from 1991.")]},
        {"id": "i2", "messages": [user("Name a prime number."), assistant("Seven.")]},
    ]
    assert out.dropped_by_reason() == {"empty_instruction": 1, "empty_response": 1}
    assert out.stats["with_context"] == 1


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_source_recognises_the_layout_of_parquet_and_jsonl_files_and_saves_its_drops(tmp_path):
    parquet = tmp_path / "oasst.parquet"
    pq.write_table(pa.Table.from_pylist(TREES), parquet)
    source = ConversationSource(open_input(parquet), ConversationsConfig(languages=["en", "es"]))
    assert source.layout == "oasst" and source.columns() == ["id", "messages"]
    assert [r["messages"] for r in source.iter_rows()] == [A_BEST, B_BEST, E_BEST]
    report = source.report()
    assert (report["format"], report["rows_in"], report["conversations"]) == ("oasst", len(TREES), 3)
    assert report["dropped"]["lower_ranked_branch"] == 4
    saved = pq.read_table(source.save_dropped(tmp_path / "dropped")).to_pylist()
    assert {r["message_id"]: r["drop_reason"] for r in saved} == drops(oasst_conversations(TREES, ["en", "es"]))

    dolly = write_jsonl(tmp_path / "dolly.jsonl", [{"instruction": "Add 2 and 2.", "context": "",
                                                    "response": "4", "category": "open_qa"}])
    rows = list(ConversationSource(open_input(dolly), ConversationsConfig()).iter_rows())
    assert rows[0]["messages"] == [user("Add 2 and 2."), assistant("4")] and rows[0]["id"]

    chats = write_jsonl(tmp_path / "chats.jsonl", [{"id": "c", "messages": [user("q"), assistant("a")]}])
    plain = ConversationSource(open_input(chats), ConversationsConfig())
    assert plain.layout == "messages"
    assert list(plain.iter_rows()) == [{"id": "c", "messages": [user("q"), assistant("a")]}]
    assert plain.report() == {"format": "messages"}


def test_a_table_of_another_layout_is_a_one_line_error_naming_the_file(tmp_path):
    other = write_jsonl(tmp_path / "other.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(InputError, match=r"other\.jsonl: not a conversation table.*has: answer, question"):
        ConversationSource(open_input(other), ConversationsConfig()).columns()
    with pytest.raises(InputError, match=r"missing column\(s\) message_id, parent_id, role, text"):
        ConversationSource(open_input(other), ConversationsConfig(format="oasst")).columns()


def test_finetune_reads_the_dataset_its_config_names_and_reports_the_conversion(tmp_path, tiny_model_dir):  # noqa: F811
    from pipeline.cli import _model_config_class
    from pipeline.framework.config import build_config_model, validate_config
    from pipeline.framework.runner import Runner
    from stages import PIPELINE
    from tests.test_finetune_stage import recipe

    data = tmp_path / "oasst.jsonl"
    write_jsonl(data, TREES)
    config = recipe(tmp_path, tiny_model_dir, max_steps=1, chat_format="chatml",
                    conversations={"dataset": str(data), "languages": ["en"]})
    model = build_config_model({e.name: e.Config for e in PIPELINE}, _model_config_class())
    runner = Runner(validate_config(config, model, "test"), PIPELINE)
    assert runner.state("finetune").state == "missing"  # no upstream needed: the config names the data
    manifest = runner.run(["finetune"])[0]
    assert manifest["input"]["spec"] == str(data) and manifest["rows_in"] == 2 == manifest["rows_out"]
    assert manifest["input"]["description"] == f"{data} (stages.finetune.conversations.dataset)"
    assert manifest["conversations"]["conversations"] == 2
    assert manifest["conversations"]["dropped"]["language"] == 3
    saved = pq.read_table(tmp_path / "work" / "finetune" / "source_dropped" / "part-00000.parquet")
    assert saved.num_rows == len(TREES) - 6
    assert runner.state("finetune").state == "done"


def test_a_hub_dataset_id_is_read_through_datasets(monkeypatch):
    """The Hub cannot be reached here: ``datasets.load_dataset`` is replaced by a recorder serving our trees."""
    import datasets

    calls = []

    def load_dataset(name, **kwargs):
        calls.append((name, kwargs))
        return [dict(row) for row in TREES]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    source = ConversationSource(open_input("OpenAssistant/oasst2:validation"), ConversationsConfig(languages=["es"]))
    assert [r["messages"] for r in source.iter_rows()] == [B_BEST]
    assert calls[0][0] == "OpenAssistant/oasst2" and calls[0][1]["split"] == "validation"
