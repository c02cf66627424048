"""Destinations: files (jsonl, csv; local and any fsspec URL; .gz), written atomically."""

from __future__ import annotations

import csv
import gzip
import io
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchflow.destinations import parquet as parquet_output
from batchflow.destinations.base import Rows
from batchflow.destinations.files import csv_columns, flatten
from batchflow.destinations.registry import open_destination
from batchflow.errors import BatchflowError, SpecError
from batchflow.spec.spec import OutputSpec

OK = {
    "key": "r-17",
    "status": "ok",
    "text": '{"sentiment":"positive","score":0.9}',
    "parsed": {"sentiment": "positive", "score": 0.9},
    "finish_reason": "STOP",
    "usage": {"prompt_tokens": 41, "output_tokens": 7, "total_tokens": 48},
    "attempts": 1,
    "record": {"review_id": "r-17", "text": 'Great, "really"\ngreat', "tags": ["a", "b"], "stars": 5},
}
ERROR = {
    "key": "r-18",
    "status": "error",
    "error": {"code": 400, "message": "bad request"},
    "attempts": 3,
    "record": {"review_id": "r-18", "text": "meh", "flag": True},
}
EMBED = {"key": "e-1", "status": "ok", "embedding": [0.5, -0.25], "attempts": 1, "record": {"t": "x"}}


def rows_of(*rows: dict[str, Any]) -> Rows:
    return lambda: iter(rows)


def write(path: Path | str, rows: Rows, **kw: Any) -> int:
    return open_destination(OutputSpec(type="files", path=str(path), **kw)).write(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_jsonl_round_trips_every_row_in_order(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    assert write(path, rows_of(OK, ERROR)) == 2
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == [OK, ERROR]


def test_jsonl_output_is_written_in_one_pass(tmp_path: Path) -> None:
    calls = []

    def rows() -> Iterator[dict[str, Any]]:
        calls.append(1)
        yield OK

    write(tmp_path / "out.jsonl", rows)
    assert calls == [1]


def test_gz_output_is_compressed_and_reproducible(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl.gz"
    write(path, rows_of(OK, ERROR))
    first = path.read_bytes()
    assert gzip.decompress(first).splitlines() == [orjson.dumps(OK), orjson.dumps(ERROR)]
    write(path, rows_of(OK, ERROR))
    assert path.read_bytes() == first


def test_parent_directories_are_created_and_the_file_is_ordinary(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.jsonl"
    write(path, rows_of(OK))
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_csv_flattens_fixed_then_parsed_then_record_columns(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    assert write(path, rows_of(OK, ERROR)) == 2
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header == [
        "key", "status", "text", "finish_reason",
        "usage.prompt_tokens", "usage.output_tokens", "usage.total_tokens",
        "attempts", "error.code", "error.message",
        "parsed.sentiment", "parsed.score",
        "record.review_id", "record.text", "record.tags", "record.stars", "record.flag",
    ]  # fmt: skip
    ok, error = read_csv(path)
    assert ok["text"] == OK["text"]
    assert ok["parsed.score"] == "0.9"
    assert ok["usage.total_tokens"] == "48"
    assert ok["record.text"] == 'Great, "really"\ngreat'
    assert ok["record.tags"] == '["a","b"]'
    assert ok["error.code"] == "" and ok["record.flag"] == ""
    assert (error["status"], error["error.code"], error["error.message"]) == ("error", "400", "bad request")
    assert error["record.flag"] == "true" and error["text"] == ""


def test_csv_puts_embedding_in_place_of_text_as_json(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write(path, rows_of(EMBED))
    (row,) = read_csv(path)
    assert list(row)[:4] == ["key", "status", "embedding", "finish_reason"]
    assert orjson.loads(row["embedding"]) == [0.5, -0.25]


def test_csv_columns_keep_other_fields_and_non_object_parsed_values() -> None:
    names = [*flatten({**OK, "parsed": [1, 2], "response": {"x": 1}}), *flatten(OK)]
    columns = csv_columns(names)
    assert columns.index("response") < columns.index("parsed") < columns.index("parsed.sentiment")
    assert columns.index("parsed.score") < columns.index("record.review_id")


def test_csv_of_no_rows_is_just_the_header(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    assert write(path, rows_of()) == 0
    assert path.read_text().startswith("key,status,text,")
    assert read_csv(path) == []


def test_csv_gz_output(tmp_path: Path) -> None:
    path = tmp_path / "out.csv.gz"
    write(path, rows_of(OK))
    with gzip.open(path, "rt", newline="") as f:
        assert next(csv.DictReader(f))["key"] == "r-17"


def broken_rows(after: int) -> Rows:
    def rows() -> Iterator[dict[str, Any]]:
        for n in range(after):
            yield {**OK, "key": f"r-{n}"}
        raise RuntimeError("merge broke")

    return rows


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv", "out.jsonl.gz", "out.parquet"])
def test_a_failure_midway_leaves_no_file_and_no_temp_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(RuntimeError, match="merge broke"):
        write(tmp_path / "sub" / name, broken_rows(5000))
    assert os.listdir(tmp_path / "sub") == []


def test_a_failure_midway_keeps_the_previous_output_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write(path, rows_of(OK))
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        write(path, broken_rows(100_000))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_an_unwritable_location_is_one_line_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory")
    path = tmp_path / "blocker" / "out.jsonl"
    with pytest.raises(BatchflowError, match=rf"^{path}: cannot write: \w[^\n]*$"):
        write(path, rows_of(OK))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_directory_is_permission_denied(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(BatchflowError, match=r"ro/out\.jsonl: cannot write: Permission denied$"):
            write(directory / "out.jsonl", rows_of(OK))
    finally:
        directory.chmod(0o700)


def test_format_comes_from_the_extension_or_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot tell the format"):
        write(tmp_path / "out.txt", rows_of(OK))
    assert write(tmp_path / "out.txt", rows_of(OK), format="csv") == 1
    assert read_csv(tmp_path / "out.txt")[0]["key"] == "r-17"
    with pytest.raises(SpecError, match=r"output\.format 'json' is not supported"):
        write(tmp_path / "out.json", rows_of(OK), format="json")


SCHEMA = {"type": "object", "properties": {"sentiment": {"type": "string"}, "score": {"type": "number"}}}


def test_parquet_has_the_bigquery_columns_typed_with_varying_shapes_as_json_text(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    assert write(path, rows_of(OK, ERROR), parse="json") == 2
    table = pq.read_table(path)
    assert table.schema.names == ["key", "status", "text", "parsed", "finish_reason", "usage", "attempts", "error",
                                  "record"]
    assert str(table.schema.field("usage").type) == \
        "struct<prompt_tokens: int64, output_tokens: int64, total_tokens: int64>"
    ok, error = table.to_pylist()
    assert orjson.loads(ok["parsed"]) == OK["parsed"] and orjson.loads(ok["record"]) == OK["record"]
    assert {k: ok[k] for k in ("key", "status", "text", "finish_reason", "usage", "attempts", "error")} == {
        **{k: OK[k] for k in ("key", "status", "text", "finish_reason", "usage", "attempts")}, "error": None}
    assert (error["status"], error["error"], error["text"], error["usage"]) == ("error", ERROR["error"], None, None)


def test_parquet_parsed_is_typed_when_the_response_schema_is_an_object(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    odd = {**OK, "key": "r-19", "parsed": {"sentiment": 3, "score": 0.5, "extra": 1}}
    write(path, rows_of(OK, odd, ERROR), parse="json", response_schema=SCHEMA)
    assert [row["parsed"] for row in pq.read_table(path, columns=["parsed"]).to_pylist()] == [
        {"sentiment": "positive", "score": 0.9}, {"sentiment": "3", "score": 0.5}, None]


def test_parquet_embeddings_are_a_list_of_float32_fixed_in_size_when_the_spec_fixes_it(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    write(path, rows_of(EMBED), task="embed", include_record=False)
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.to_pylist()[0]["embedding"] == [0.5, -0.25]
    write(path, rows_of(EMBED), task="embed", include_record=False, dimensions=2)
    assert pq.read_table(path).schema.field("embedding").type == pa.list_(pa.float32(), 2)


def test_parquet_is_written_in_bounded_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_output, "ROW_GROUP_ROWS", 1000)
    path = tmp_path / "out.parquet"
    assert write(path, lambda: ({**OK, "key": f"r-{n}"} for n in range(2500))) == 2500
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]
    assert pq.read_table(path, columns=["key"])["key"].to_pylist() == [f"r-{n}" for n in range(2500)]


def test_parquet_of_no_rows_is_a_valid_file_with_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    assert write(path, rows_of()) == 0
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema.names[:2] == ["key", "status"]


def test_parquet_without_pyarrow_is_a_spec_error_saying_what_to_install(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    hint = r"^output\.format 'parquet' needs pyarrow: pip install 'batchflow\[parquet\]'$"
    with pytest.raises(SpecError, match=hint):
        write(tmp_path / "out.parquet", rows_of(OK))


def test_unsupported_destination_type_is_a_spec_error_naming_it() -> None:
    with pytest.raises(SpecError, match=r"output\.type 'spanner' is not supported"):
        open_destination(OutputSpec(type="spanner", table="p.d.t"))


def test_any_fsspec_url_is_written_without_new_code() -> None:
    fs = fsspec.filesystem("memory")
    try:
        write("memory://bf-out/run/out.jsonl.gz", rows_of(OK, ERROR))
        with gzip.open(io.BytesIO(fs.cat("/bf-out/run/out.jsonl.gz"))) as f:
            assert [orjson.loads(line) for line in f] == [OK, ERROR]
    finally:
        fs.rm("/bf-out", recursive=True)
