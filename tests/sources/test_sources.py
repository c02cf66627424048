"""Sources: files (jsonl, json, csv; local and any fsspec URL; .gz) and inline."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchflow.errors import DataError, SpecError
from batchflow.libs.jsonio import ArrayError, iter_array
from batchflow.sources.base import SourceRecord
from batchflow.sources.files import READERS
from batchflow.sources.registry import open_source
from batchflow.spec.spec import SourceSpec

Rejected = list[tuple[str, str, bytes]]


def read(path: Path | str, rejected: Rejected | None = None, **kw: Any) -> list[SourceRecord]:
    on_bad = "skip" if rejected is not None else "fail"
    spec = SourceSpec(type="files", path=str(path), on_bad_record=on_bad, **kw)
    reject = (lambda *args: rejected.append(args)) if rejected is not None else None
    return list(open_source(spec, reject).records())


def wheres(records: list[SourceRecord]) -> list[str]:
    return [r.where for r in records]


def test_glob_reads_matching_files_in_sorted_order_with_ordinals_across_them(tmp_path: Path) -> None:
    for name in ("x-2.jsonl", "x-10.jsonl", "x-1.jsonl", "other.jsonl"):
        (tmp_path / name).write_text(f'{{"f": "{name}"}}\n{{"f": "{name}"}}\n')
    records = read(tmp_path / "x-*.jsonl")
    assert [r.record["f"] for r in records][::2] == ["x-1.jsonl", "x-10.jsonl", "x-2.jsonl"]
    assert [r.ordinal for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[2].where == f"{tmp_path}/x-10.jsonl:1"


def test_a_relative_pattern_gives_relative_wheres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "r-1.jsonl").write_text('{"a": 1}\n')
    monkeypatch.chdir(tmp_path)
    assert wheres(read("data/r-*.jsonl")) == ["data/r-1.jsonl:1"]


def test_gzip_files_are_read_transparently(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "x.jsonl.gz", "wb") as f:
        f.write(b'{"a": 1}\n{"a": 2}\n')
    records = read(tmp_path / "x.jsonl.gz")
    assert [r.record for r in records] == [{"a": 1}, {"a": 2}]
    assert records[1].where.endswith("x.jsonl.gz:2")


def test_a_corrupt_gzip_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(DataError, match=r"x\.jsonl\.gz: cannot read"):
        read(tmp_path / "x.jsonl.gz")


def test_blank_lines_are_skipped_but_counted_in_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(b'{"a": 1}\n\n  \r\n{"a": 2}\r\n\n')
    records = read(tmp_path / "x.jsonl")
    assert [r.where.rsplit(":", 1)[1] for r in records] == ["1", "4"]
    assert [r.ordinal for r in records] == [1, 2]


def test_a_leading_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert [r.record for r in read(tmp_path / "x.jsonl")] == [{"a": 1}]


def test_a_last_line_without_newline_is_read(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(b'{"a": 1}\n{"a": 2}')
    assert len(read(tmp_path / "x.jsonl")) == 2


def test_malformed_line_fails_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(b'{"a": 1}\n\n{"a": \n')
    with pytest.raises(DataError, match=r"^.*x\.jsonl:3: malformed JSON: unexpected end of data"):
        read(tmp_path / "x.jsonl")


def test_skip_reports_bad_lines_to_reject_and_keeps_ordinals_contiguous(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(b'{"a": 1}\nnope\n[1, 2]\n{"a": 2}\n')
    rejected: Rejected = []
    records = read(tmp_path / "x.jsonl", rejected)
    assert [(r.ordinal, r.record) for r in records] == [(1, {"a": 1}), (2, {"a": 2})]
    assert [(w.rsplit("/", 1)[1], raw) for w, _reason, raw in rejected] == [
        ("x.jsonl:2", b"nope"),
        ("x.jsonl:3", b"[1, 2]"),
    ]
    assert rejected[0][1].startswith("malformed JSON:")
    assert rejected[1][1] == "expected an object, got array"


def test_a_line_that_is_not_an_object_fails(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(b'"just a string"\n')
    with pytest.raises(DataError, match=r"x\.jsonl:1: expected an object, got string$"):
        read(tmp_path / "x.jsonl")


def test_non_utf8_bytes_fail_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: not valid UTF-8$"):
        read(tmp_path / "x.jsonl")


def test_no_matching_file_is_a_data_error_naming_the_pattern(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no file matches '.*/x-\*\.jsonl'"):
        read(tmp_path / "x-*.jsonl")


def test_directories_matching_the_glob_are_not_files(tmp_path: Path) -> None:
    (tmp_path / "x-dir.jsonl").mkdir()
    with pytest.raises(DataError, match="no file matches"):
        read(tmp_path / "x-*.jsonl")


def test_csv_rows_become_string_records_named_by_their_first_line(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text('id,text\n1,"two\nlines"\n\n2,plain\n', encoding="utf-8")
    records = read(tmp_path / "x.csv")
    assert [r.record for r in records] == [{"id": "1", "text": "two\nlines"}, {"id": "2", "text": "plain"}]
    assert [w.rsplit(":", 1)[1] for w in wheres(records)] == ["2", "5"]


def test_a_csv_cell_over_pythons_default_field_limit_is_read_whole(tmp_path: Path) -> None:
    import csv

    long = "word " * 60_000  # 300 KB: over the 128 KiB csv refuses by default
    (tmp_path / "x.csv").write_text(f'id,text\n1,"{long}"\n2,short\n', encoding="utf-8")
    csv.field_size_limit(131072)  # Python's default, as a fresh process has it
    records = read(tmp_path / "x.csv")
    assert [r.record for r in records] == [{"id": "1", "text": long}, {"id": "2", "text": "short"}]


def test_csv_row_with_wrong_field_count_is_a_bad_record(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("id,text\n1,a,extra\n2,b\n")
    with pytest.raises(DataError, match=r"x\.csv:2: expected 2 fields, got 3"):
        read(tmp_path / "x.csv")
    rejected: Rejected = []
    assert [r.record["id"] for r in read(tmp_path / "x.csv", rejected)] == ["2"]
    assert rejected[0][2] == b"1,a,extra\r\n"


def test_csv_duplicate_columns_and_bad_bytes_are_data_errors(tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text("id,id\n1,2\n")
    with pytest.raises(DataError, match=r"dup\.csv:1: duplicate column 'id'"):
        read(tmp_path / "dup.csv")
    (tmp_path / "bad.csv").write_bytes(b"id\n1\n\xff\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: not valid UTF-8"):
        read(tmp_path / "bad.csv")


def test_json_array_elements_are_records_named_by_index(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('[{"a": 1}, 7, {"b": {"c": [1, 2]}}]')
    rejected: Rejected = []
    records = read(tmp_path / "x.json", rejected)
    assert [r.record for r in records] == [{"a": 1}, {"b": {"c": [1, 2]}}]
    assert [w.rsplit("/", 1)[1] for w in wheres(records)] == ["x.json[1]", "x.json[3]"]
    assert [(w.rsplit("/", 1)[1], reason, raw) for w, reason, raw in rejected] == [
        ("x.json[2]", "expected an object, got number", b"7")
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}', r"x\.json\[1\]: expected a top-level JSON array"),
        ('[{"a": 1}, {"a": ]', r"x\.json\[2\]: malformed JSON"),
        ('[{"a": 1},]', r"x\.json\[2\]: malformed JSON"),
        ('[{"a": 1}] []', r"x\.json\[2\]: extra data after the top-level array"),
    ],
)
def test_a_broken_json_array_is_a_data_error_even_when_skipping(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(DataError, match=message):
        read(tmp_path / "x.json", [])


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64])
def test_json_array_streams_across_any_chunk_boundary(chunk_size: int) -> None:
    doc = '\ufeff [ {"n": 12345, "s": "caf\u00e9 \\u00e9 ]", "x": [1.5e3, null]} ,\n{"n": -7}, 123456789, {} ]\n'
    got = list(iter_array(io.BytesIO(doc.encode()), chunk_size))
    assert got == json.loads(doc.lstrip("\ufeff"))


def test_empty_json_array_has_no_records(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(" [ ] ")
    assert read(tmp_path / "x.json") == []


def test_json_array_with_bad_utf8_is_an_array_error() -> None:
    with pytest.raises(ArrayError, match="not valid UTF-8"):
        list(iter_array(io.BytesIO(b'[{"a": "\xff"}]')))


def test_format_comes_from_the_extension_or_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text('{"a": 1}\n')
    with pytest.raises(SpecError, match="cannot tell the format"):
        read(tmp_path / "x.txt")
    assert [r.record for r in read(tmp_path / "x.txt", format="jsonl")] == [{"a": 1}]


def test_parquet_without_pyarrow_is_a_spec_error_saying_what_to_install(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    write_parquet_file(tmp_path / "x.parquet", {"a": [1]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an import finds when pyarrow is not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    hint = r"^source\.format 'parquet' needs pyarrow: pip install 'batchflow\[parquet\]'$"
    with pytest.raises(SpecError, match=hint):
        read(tmp_path / "x.parquet")


def write_parquet_file(path: Path, columns: dict[str, Any], **kw: Any) -> Path:
    pq.write_table(pa.table(columns), path, **kw)
    return path


def test_parquet_rows_are_records_named_by_file_and_row_across_row_groups_and_files(tmp_path: Path) -> None:
    write_parquet_file(tmp_path / "x-1.parquet", {"id": ["a", "b", "c"], "n": [1, None, 3]}, row_group_size=2)
    write_parquet_file(tmp_path / "x-2.parquet", {"id": ["d"], "n": [4]})
    records = read(tmp_path / "x-*.parquet")
    assert [(r.ordinal, r.record) for r in records] == [
        (1, {"id": "a", "n": 1}), (2, {"id": "b", "n": None}), (3, {"id": "c", "n": 3}), (4, {"id": "d", "n": 4})]
    assert wheres(records) == [f"{tmp_path}/x-1.parquet:row {n}" for n in (1, 2, 3)] + [f"{tmp_path}/x-2.parquet:row 1"]


def test_parquet_values_become_json_values_as_bigquery_ones_do(tmp_path: Path) -> None:
    stamp = dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.UTC)
    write_parquet_file(tmp_path / "x.parquet", {
        "when": [stamp], "day": [stamp.date()], "price": pa.array([Decimal("12.50")], pa.decimal128(6, 2)),
        "blob": [b"\x00\x01"], "tags": [["p", "q"]], "nested": [{"at": stamp, "k": 1}], "ok": [True], "x": [0.5]})
    [record] = read(tmp_path / "x.parquet")
    assert record.record == {"when": "2024-03-01T12:30:00+00:00", "day": "2024-03-01", "price": "12.50",
                             "blob": "AAE=", "tags": ["p", "q"], "nested": {"at": "2024-03-01T12:30:00+00:00", "k": 1},
                             "ok": True, "x": 0.5}


def test_parquet_content_digest_is_of_the_bytes_and_the_same_on_every_read(tmp_path: Path) -> None:
    path = write_parquet_file(tmp_path / "x.parquet", {"id": [str(i) for i in range(10_000)]}, row_group_size=999)
    source = open_source(SourceSpec(type="files", path=str(path)))
    digests = set()
    for _ in range(2):
        assert sum(1 for _ in source.items()) == 10_000
        digests.add(source.content_digest())
    assert len(digests) == 1


def test_parquet_duplicate_columns_are_a_data_error(tmp_path: Path) -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"x\.parquet: duplicate column 'a'"):
        read(tmp_path / "x.parquet")


def test_a_file_that_is_not_parquet_is_a_data_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b'{"a": 1}\n')
    with pytest.raises(DataError, match=rf"^{tmp_path}/x\.parquet: cannot read as Parquet: "):
        read(tmp_path / "x.parquet")


def test_unsupported_source_type_is_a_spec_error_naming_it() -> None:
    with pytest.raises(SpecError, match=r"source\.type 'spanner' is not supported"):
        open_source(SourceSpec(type="spanner", table="p.d.t"))


def test_unknown_on_bad_record_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="on_bad_record"):
        open_source(SourceSpec(type="inline", records=(), on_bad_record="ignore"))


def test_inline_records_are_named_by_one_based_index() -> None:
    rejected: Rejected = []
    spec = SourceSpec(type="inline", records=({"a": 1}, [2], {"a": 3}), on_bad_record="skip")  # type: ignore[arg-type]
    records = list(open_source(spec, lambda *a: rejected.append(a)).records())
    assert [(r.ordinal, r.where, r.record) for r in records] == [(1, "inline[1]", {"a": 1}), (2, "inline[3]", {"a": 3})]
    assert rejected == [("inline[2]", "expected an object, got array", b"[2]")]
    assert open_source(spec).describe() == "3 inline records"


def test_inline_fingerprint_follows_the_records() -> None:
    def fp(*records: dict[str, Any]) -> str:
        return open_source(SourceSpec(type="inline", records=records)).fingerprint()

    assert fp({"a": 1, "b": 2}) == fp({"b": 2, "a": 1})
    assert fp({"a": 1}) != fp({"a": 2})


def test_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "x-1.jsonl"
    path.write_text('{"a": 1}\n')
    source = open_source(SourceSpec(type="files", path=str(tmp_path / "x-*.jsonl")))
    first = source.fingerprint()
    assert source.fingerprint() == first
    path.write_text('{"a": 2}\n')  # same size: only the mtime tells
    os.utime(path, ns=(1, 1))
    second = source.fingerprint()
    assert second != first
    (tmp_path / "x-2.jsonl").write_text('{"a": 3}\n')
    assert source.fingerprint() != second
    assert source.describe() == f"2 files matching {tmp_path}/x-*.jsonl (jsonl)"


@pytest.fixture
def memory_fs() -> Iterator[fsspec.AbstractFileSystem]:
    fs = fsspec.filesystem("memory")
    yield fs
    fs.rm("/bf-test", recursive=True)


def test_parquet_is_read_from_any_fsspec_url(memory_fs: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    path = write_parquet_file(tmp_path / "x.parquet", {"a": [1, 2]})
    memory_fs.pipe({"/bf-test/x.parquet": path.read_bytes()})
    records = read("memory://bf-test/*.parquet")
    assert [(r.where, r.record) for r in records] == [
        ("memory:///bf-test/x.parquet:row 1", {"a": 1}), ("memory:///bf-test/x.parquet:row 2", {"a": 2})]


def test_any_fsspec_url_is_read_and_named_with_its_protocol(memory_fs: fsspec.AbstractFileSystem) -> None:
    memory_fs.pipe({"/bf-test/x-2.jsonl": b'{"a": 2}\n', "/bf-test/x-1.jsonl": b'{"a": 1}\n'})
    records = read("memory://bf-test/x-*.jsonl")
    assert [(r.where, r.record) for r in records] == [
        ("memory:///bf-test/x-1.jsonl:1", {"a": 1}),
        ("memory:///bf-test/x-2.jsonl:1", {"a": 2}),
    ]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300)
    | st.lists(st.sampled_from([b"{", b"}", b'"a"', b":", b"1", b"\n", b"\xff", b"[]", b" "])).map(b"".join),
    fmt=st.sampled_from(sorted(READERS)),
    skip=st.booleans(),
)
def test_any_bytes_give_records_or_a_data_error_never_another_exception(data: bytes, fmt: str, skip: bool) -> None:
    rejected: Rejected = []

    def bad(where: str, reason: str, raw: bytes) -> None:
        if not skip:
            raise DataError(f"{where}: {reason}")
        rejected.append((where, reason, raw))

    try:
        items = list(READERS[fmt](io.BytesIO(data), "x", bad))
    except DataError as exc:
        assert str(exc).startswith("x")
        assert "\n" not in str(exc)
        return
    assert all(type(record) is dict and place.startswith("x") for record, _raw, place, _line in items)
