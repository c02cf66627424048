"""Reading a Gemini output file: each line's key, response or error; the usual line passed through as it came."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batchflow.backends.gemini import read_result_lines
from batchflow.errors import BackendError

_USUAL = b'{"key":"a\\"1","response":{"candidates":[],"usageMetadata":{"promptTokenCount":3}}}\n'


def test_usual_lines_pass_through_blank_lines_are_skipped_and_others_are_read(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(_USUAL + b"\n   \n"
                    + b'{"key": "b", "response": {"candidates": []}}\n'  # not as orjson writes it: parsed
                    + b'{"key":"c","error":{"code":3,"message":"bad"}}\n'
                    + b'{"metadata":{"key":"d"},"status":"quota"}')
    results = list(read_result_lines(out))
    assert [r.key for r in results] == ['a"1', "b", "c", "d"]
    assert results[0].line == _USUAL and results[0].key_json == orjson.dumps('a"1')
    assert results[1].line is None and results[1].response == {"candidates": []}
    assert results[2].error == {"code": 3, "message": "bad"} and results[2].response is None
    assert results[3].error is not None and "quota" in str(results[3].error)


def test_a_malformed_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(_USUAL + b"\n" + b'{"key":"b","response":\n')
    with pytest.raises(BackendError, match=r"out\.jsonl:3: the backend wrote a malformed result line"):
        list(read_result_lines(out))
