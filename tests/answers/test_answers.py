"""Kept answers: what is kept, how a generation's answers are written, and the partitioned comparison."""

from __future__ import annotations

from pathlib import Path

import orjson

from batchflow.answers import OK, PERMANENT, RETRY, flag_of
from batchflow.answers.diff import SEND, Pointers, Spill, diff, read_pointers
from batchflow.answers.keep import _fresh_answers
from batchflow.answers.partitions import PartitionWriter, partition_lines, partitions_for
from batchflow.state.state import COLLECTED, SUCCEEDED, Job, Shard, State

ANSWER = {"candidates": [{"content": {"parts": [{"text": "yes"}]}, "finishReason": "STOP"}]}
BLOCKED = {"promptFeedback": {"blockReason": "SAFETY"}}


def test_what_is_kept_and_what_is_sent_again() -> None:
    assert flag_of({"response": ANSWER}) == OK
    assert flag_of({"response": BLOCKED}) == PERMANENT, "a safety block would come back the same"
    assert flag_of({"error": {"code": 400, "message": "invalid"}}) == PERMANENT
    for code in (408, 429, 500, 503, None):
        assert flag_of({"error": {"code": code, "message": "x"}}) == RETRY, code
    gone = {"code": 403, "message": "You do not have permission to access the File f1 or it may not exist."}
    assert flag_of({"error": gone}) == PERMANENT
    assert flag_of({"error": {**gone, "restage": True}}) == RETRY, "its media staged again, it may pass"


def test_a_succeeded_jobs_lines_are_spliced_with_their_attempts_and_flags(tmp_path: Path) -> None:
    lines = [{"key": "a", "response": ANSWER}, {"key": "b", "response": BLOCKED},
             {"key": "c", "error": {"code": 400, "message": "bad"}}, {"key": "d", "error": {"code": 503}}]
    (tmp_path / "r.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    job = Job(n=1, input="i", count=4, digest="d", display_name="n", status=COLLECTED, ended=SUCCEEDED,
              results="r.jsonl")
    state = State("t", "f", records=4, shards=[Shard(0, 4, 0, "d", "i", "", jobs=[job])])
    found = _fresh_answers(tmp_path, state, [0])
    assert {k: v[1] for k, v in found.items()} == {b'"a"': OK, b'"b"': PERMANENT, b'"c"': PERMANENT, b'"d"': RETRY}
    assert orjson.loads(found[b'"a"'][0]) == {"key": "a", "response": ANSWER, "attempts": 1}


def test_partitions_grow_with_the_input_and_keep_a_partition_small() -> None:
    assert partitions_for(1_000) == 16
    assert partitions_for(1_000_000) * 8192 >= 1_000_000 > partitions_for(1_000_000) * 4096
    assert partitions_for(5_000_000) * 8192 >= 5_000_000


def test_the_diff_sorts_records_into_new_changed_unchanged_retried_and_removed(tmp_path: Path) -> None:
    index = PartitionWriter(tmp_path / "index", 16)
    kept = {b'"same"': b"a" * 32 + b"o", b'"edited"': b"b" * 32 + b"o", b'"flaky"': b"c" * 32 + b"r",
            b'"blocked"': b"d" * 32 + b"p", b'"gone"': b"e" * 32 + b"o"}
    for row, (key, rest) in enumerate(kept.items()):
        index.add(key, b"%s %s0:%d\n" % (key, rest, row))
    index.flush()
    spill = Spill(tmp_path / "spill", 16)
    current = {b'"same"': b"a", b'"edited"': b"x", b'"flaky"': b"c", b'"blocked"': b"d", b'"fresh"': b"f"}
    for ordinal, (key, digest) in enumerate(current.items(), start=1):
        spill.add(key, b"%s %s%d\n" % (key, digest * 32, ordinal))
    spill.close()
    send = bytearray(SEND * 6)
    pointers = Pointers(tmp_path / "carried", [1])
    result = diff(tmp_path / "index", spill, send, pointers, retry_errors=False)
    assert (result.new, result.changed, result.unchanged, result.retried, result.removed) == (1, 1, 2, 1, 1)
    assert result.examples["removed"] == ["gone"] and result.examples["new"] == ["fresh"]
    assert list(send[1:]) == [0, 1, 1, 0, 1], "the unchanged and the kept block are carried; the rest are sent"
    assert read_pointers(tmp_path / "carried" / pointers.close()[0]) == {1: (0, 0, OK[0]), 4: (0, 3, PERMANENT[0])}
    again = diff(tmp_path / "index", spill, bytearray(SEND * 6), Pointers(tmp_path / "c2", [1]), retry_errors=True)
    assert (again.unchanged, again.retried) == (1, 2), "--retry-errors sends the kept failure too"
    assert sum(1 for p in range(16) for _ in partition_lines(tmp_path / "index", p)) == 5


def test_a_key_ending_in_a_comma_keeps_its_answer(tmp_path: Path) -> None:
    lines = [{"key": "a,", "response": ANSWER}, {"key": 'b,"', "error": {"code": 400, "message": "bad"}}]
    (tmp_path / "r.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    job = Job(n=1, input="i", count=2, digest="d", display_name="n", status=COLLECTED, ended=SUCCEEDED,
              results="r.jsonl")
    state = State("t", "f", records=2, shards=[Shard(0, 2, 0, "d", "i", "", jobs=[job])])
    found = _fresh_answers(tmp_path, state, [0])
    assert set(found) == {orjson.dumps("a,"), orjson.dumps('b,"')}
    assert orjson.loads(found[orjson.dumps("a,")][0])["response"] == ANSWER
