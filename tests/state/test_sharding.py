from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchflow.errors import DataError, SpecError, StateError
from batchflow.spec.limits import JobSize, job_size
from batchflow.state.shard_files import ShardWriter, records, request_key


def _line(i: int, pad: int = 0) -> bytes:
    return b'{"key":"k%d","request":"%s"}\n' % (i, b"x" * pad)


def _write(tmp_path: Path, n: int, size: JobSize, pad: int = 0) -> list:
    writer = ShardWriter(tmp_path, size)
    for i in range(n):
        writer.add(_line(i, pad), b'{"n":%d}' % i, f"f:{i + 1}")
    return writer.close()


def test_shards_are_cut_by_request_count(tmp_path: Path) -> None:
    shards = _write(tmp_path, 70_001, JobSize(30_000, 10**9))
    assert [s.count for s in shards] == [30_000, 30_000, 10_001]
    lines = (tmp_path / shards[2].requests).read_bytes().splitlines()
    assert lines[0] == _line(60_000).rstrip() and len(lines) == 10_001
    records = (tmp_path / shards[2].manifest).read_bytes().splitlines()
    assert records[0] == b'{"n":60000}' and len(records) == 10_001, "the manifest: each request's record, in order"


def test_records_are_a_parts_manifest_lines_in_order(tmp_path: Path) -> None:
    shard = _write(tmp_path, 5, JobSize(30_000, 10**9))[0]
    assert list(records(tmp_path / shard.manifest, 3)) == [{"n": i} for i in range(5)]


def test_records_read_a_format_1_manifest_of_keys_and_records(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b'{"key":"a","record":{"x":1}}\n{"key":"b","record":{"x":2}}\n')
    assert list(records(tmp_path / "m", 1)) == [{"x": 1}, {"x": 2}]


def test_a_corrupt_manifest_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b'{"x":1}\nnot json\n')
    with pytest.raises(StateError, match=r"m: the part's records are corrupt"):
        list(records(tmp_path / "m", 3))


_JSON = st.recursive(st.none() | st.text() | st.integers(-(2**63), 2**63 - 1),
                     lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))


@given(key=st.text(), request=_JSON)
def test_request_key_reads_any_key_as_parsing_the_whole_line_would(key: str, request: object) -> None:
    line = orjson.dumps({"key": key, "request": request}, option=orjson.OPT_APPEND_NEWLINE)
    assert request_key(line) == key


def test_request_key_parses_a_line_whose_key_does_not_come_first() -> None:
    assert request_key(b'{"request":{"key":"inner"},"key":"late"}\n') == "late"


def test_shards_are_cut_by_bytes_before_a_line_would_pass_the_limit(tmp_path: Path) -> None:
    size = len(_line(0, 100)) * 3 + 5
    shards = _write(tmp_path, 10, JobSize(1000, size), pad=100)
    assert [s.count for s in shards] == [3, 3, 3, 1]
    assert all(s.bytes <= size for s in shards)
    assert all((tmp_path / s.requests).stat().st_size == s.bytes for s in shards)


def test_the_same_input_gives_the_same_shards_and_digests(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write(tmp_path / "a", 100, JobSize(30, 10**9))
    assert a == _write(tmp_path / "b", 100, JobSize(30, 10**9))
    assert len({s.digest for s in a}) == len(a), "different content, different digests"


def test_a_request_larger_than_a_whole_job_names_its_record(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, JobSize(10, 50))
    with pytest.raises(DataError, match=r"^data.jsonl:7: the request is \d+ bytes"):
        writer.add(_line(7, 100), b"", "data.jsonl:7")


def test_counting_only_writes_nothing(tmp_path: Path) -> None:
    writer = ShardWriter(None, JobSize(2, 10**9))
    for i in range(5):
        writer.add(_line(i), b"", "x")
    assert [s.count for s in writer.close()] == [2, 2, 1]
    assert not list(tmp_path.iterdir())


def test_job_size_defaults_to_30000_and_refuses_more_than_the_backend_allows() -> None:
    assert job_size("local", "generate", None, None).max_requests == 30_000
    assert job_size("vertex", "embed", 30_000, None).max_requests == 30_000
    with pytest.raises(SpecError, match="above the vertex backend's limit of 30,000 requests per embed job"):
        job_size("vertex", "embed", 30_001, None)
    with pytest.raises(SpecError, match=r"jobs\.max_bytes"):
        job_size("vertex", "generate", None, 2_000_000_000)
