from __future__ import annotations

from pathlib import Path

import pytest

from batchflow.errors import DataError, SpecError
from batchflow.limits import JobSize, job_size
from batchflow.sharding import ShardWriter


def _line(i: int, pad: int = 0) -> bytes:
    return b'{"key":"k%d","request":"%s"}\n' % (i, b"x" * pad)


def _write(tmp_path: Path, n: int, size: JobSize, pad: int = 0) -> list:
    writer = ShardWriter(tmp_path, size)
    for i in range(n):
        writer.add(_line(i, pad), b"m%d\n" % i, f"f:{i + 1}")
    return writer.close()


def test_shards_are_cut_by_request_count(tmp_path: Path) -> None:
    shards = _write(tmp_path, 70_001, JobSize(30_000, 10**9))
    assert [s.count for s in shards] == [30_000, 30_000, 10_001]
    lines = (tmp_path / shards[2].requests).read_bytes().splitlines()
    assert lines[0] == _line(60_000).rstrip() and len(lines) == 10_001
    assert len((tmp_path / shards[2].manifest).read_bytes().splitlines()) == 10_001


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
