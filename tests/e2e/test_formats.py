"""Every format the spec's schema offers for ``source.format`` and ``output.format`` runs end to end."""

from __future__ import annotations

import csv
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.helpers import cli, write_jsonl, write_spec

from batchflow.spec.spec import spec_schema

RECORDS = [{"id": f"r{n}", "text": f"text {n}"} for n in range(5)]  # strings only: CSV keeps every value a string


def _offered(section: str) -> list[str]:
    return list(spec_schema()["properties"][section]["properties"]["format"]["enum"])


# Formats whose records are not rows of a table, run end to end by a test of their own.
OWN_TEST = {"media": "test_media_run.py"}  # one record per file of a glob


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(records))


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(records), path)


INPUTS: dict[str, Callable[[Path, list[dict[str, Any]]], Any]] = {
    "jsonl": write_jsonl, "json": _write_json, "csv": _write_csv, "parquet": _write_parquet}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return [{"key": row["key"], "status": row["status"], "record": {"id": row["record.id"],
                 "text": row["record.text"]}} for row in csv.DictReader(fh)]


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    return [{**row, "record": orjson.loads(row["record"])} for row in pq.read_table(path).to_pylist()]


OUTPUTS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    "jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}


def test_every_format_the_schema_offers_has_a_case_here() -> None:
    assert set(_offered("source")) == set(INPUTS) | set(OWN_TEST)
    for fmt, test in OWN_TEST.items():
        assert f'"format": "{fmt}"' in (Path(__file__).parent / test).read_text()
    assert set(_offered("output")) == set(OUTPUTS)


@pytest.mark.parametrize("fmt", [f for f in _offered("source") if f not in OWN_TEST])
def test_every_source_format_runs(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "data").mkdir()
    INPUTS[fmt](tmp_path / f"data/in.{fmt}", RECORDS)
    spec = write_spec(tmp_path, source={"type": "files", "path": f"data/in.{fmt}"})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = _read_jsonl(tmp_path / "out/result.jsonl")
    assert [(row["key"], row["status"], row["record"]) for row in rows] == [(r["id"], "ok", r) for r in RECORDS]


@pytest.mark.parametrize("fmt", _offered("output"))
def test_every_output_format_runs_with_the_same_rows(tmp_path: Path, fmt: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", RECORDS)
    spec = write_spec(tmp_path, output={"type": "files", "path": f"out/result.{fmt}"})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = OUTPUTS[fmt](tmp_path / f"out/result.{fmt}")
    assert [(row["key"], row["status"], row["record"]) for row in rows] == [(r["id"], "ok", r) for r in RECORDS]


def test_parquet_in_and_out_runs_and_a_second_run_does_nothing(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _write_parquet(tmp_path / "data/in.parquet", RECORDS)
    spec = write_spec(tmp_path, source={"type": "files", "path": "data/in.parquet"},
                      output={"type": "files", "path": "out/result.parquet"})
    assert cli("run", str(spec)).exit_code == 0
    output = tmp_path / "out/result.parquet"
    seen = output.stat().st_mtime_ns
    again = cli("run", str(spec))
    assert again.exit_code == 0 and "5 records: 5 ok" in again.stdout
    assert output.stat().st_mtime_ns == seen
    assert [row["key"] for row in _read_parquet(output)] == [r["id"] for r in RECORDS]


@pytest.mark.parametrize("side", ["source", "output"])
def test_parquet_without_pyarrow_stops_with_exit_2_and_the_install_hint(tmp_path: Path, side: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    if side == "source":
        _write_parquet(tmp_path / "data/in.parquet", RECORDS)
        spec = write_spec(tmp_path, source={"type": "files", "path": "data/in.parquet"})
    else:
        write_jsonl(tmp_path / "data/in.jsonl", RECORDS)
        spec = write_spec(tmp_path, output={"type": "files", "path": "out/result.parquet"})
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an import finds when pyarrow is not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    for command in ("validate", "run"):
        result = cli(command, str(spec))
        assert result.exit_code == 2, (command, result.stdout)
        [line] = [x for x in result.stderr.splitlines() if not x.startswith("{")]
        assert f"{side}.format 'parquet' needs pyarrow: pip install 'batchflow[parquet]'" in line, (command, line)


@pytest.mark.gcs
def test_parquet_in_and_out_on_gcs(tmp_path: Path, gcs_emulator: str) -> None:
    import gcsfs

    fs = gcsfs.GCSFileSystem(token="anon")
    bucket = f"pq-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    for n, part in enumerate((RECORDS[:3], RECORDS[3:]), start=1):
        _write_parquet(tmp_path / f"in-{n}.parquet", part)
        fs.put(str(tmp_path / f"in-{n}.parquet"), f"{bucket}/in/part-{n}.parquet")
    spec = write_spec(tmp_path, source={"type": "files", "path": f"gs://{bucket}/in/part-*.parquet"},
                      output={"type": "files", "path": f"gs://{bucket}/out/result.parquet"})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    fs.invalidate_cache()
    fs.get(f"{bucket}/out/result.parquet", str(tmp_path / "result.parquet"))
    assert [row["key"] for row in _read_parquet(tmp_path / "result.parquet")] == [r["id"] for r in RECORDS]
