"""The shared JSONL reader: every reader of a user's JSONL file reports a broken line the same way."""

from __future__ import annotations

import pytest

from pipeline.benchmarks.judge import read_requests
from pipeline.benchmarks.scoring import read_answers
from pipeline.framework.errors import InputError, PipelineError
from pipeline.framework.jsonl import jsonl_records


def test_records_skip_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('\ufeff{"a": 1}\n\n  \n{"a": 2}\r\n', encoding="utf-8")
    assert list(jsonl_records(path)) == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize(("content", "message"), [
    (b'{"a": 1}\n{"a": \n', r"rows.jsonl: line 2, column 7: not valid JSON: Expecting value$"),
    (b'{"a": 1}\n{"a": "\xff"}\n', r"rows.jsonl: line 2, column 8: not UTF-8 text \(byte 0xff\)"),
    (b'[1, 2]\n', r"rows.jsonl: line 1: expected one JSON object per line, got list$"),
])
def test_a_broken_line_is_one_error_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        list(jsonl_records(path))


def test_judge_and_scoring_readers_share_the_errors_and_keep_their_own_checks(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1, "request": "x", "task_id": "T/1", "completion": "y"}\nnot json\n', encoding="utf-8")
    for read in (read_requests, lambda p: read_answers(p, {"T/1"})):
        with pytest.raises(InputError, match=r"broken.jsonl: line 2, column 1: not valid JSON"):
            read(broken)
    fields = tmp_path / "fields.jsonl"
    fields.write_text('{"id": 1, "request": "x", "task_id": "T/1", "completion": "y"}\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(PipelineError, match=r"fields.jsonl: line 2 needs an id and a request string"):
        read_requests(fields)
    with pytest.raises(PipelineError, match=r"fields.jsonl: line 2 has no task_id"):
        read_answers(fields, {"T/1"})
    fields.write_text('{"id": 1, "request": "x", "task_id": "T/1", "completion": "y"}\n', encoding="utf-8")
    assert read_requests(fields) == [{"id": "1", "request": "x"}]
    assert [(a.task_id, a.text) for a in read_answers(fields, {"T/1"})] == [("T/1", "y")]
