"""BigQuery source and output, end to end through the CLI, against a real BigQuery emulator (bqemulator)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.bq import PROJECT, client, count, make_table
from support.helpers import cli, write_spec

pytestmark = pytest.mark.bigquery

@pytest.fixture(scope="module")
def reviews(bigquery_emulator: str) -> str:
    """10,000 rows with an id, a text, and a DATE, TIMESTAMP and NUMERIC to see turned into JSON values."""
    rows = ({"review_id": f"r-{i:05d}", "text": f"review number {i}", "day": "2024-03-01",
             "at": "2024-03-01T12:30:00Z", "price": "12.50", "stars": i % 5 + 1} for i in range(10_000))
    schema = [("review_id", "STRING"), ("text", "STRING"), ("day", "DATE"), ("at", "TIMESTAMP"),
              ("price", "NUMERIC"), ("stars", "INT64")]
    return make_table(f"{PROJECT}.src.reviews", schema, rows)


def bq_spec(tmp_path: Path, source: dict[str, Any], output: dict[str, Any], **extra: Any) -> Path:
    return write_spec(tmp_path, source=source, key="{{ review_id }}", prompt="Rate: {{ text }}",
                      generation_config={"response_mime_type": "application/json",
                                         "response_schema": {"type": "object",
                                                             "properties": {"stars": {"type": "integer"},
                                                                            "label": {"type": "string"}}}},
                      output={"type": "bigquery", "parse": "json", **output}, **extra)


def files_output(spec: Path) -> None:
    spec.write_text(spec.read_text().replace("type: bigquery\n  parse", "type: files\n  parse"))


def test_table_to_table_10k_rows_and_a_second_run_adds_none(tmp_path: Path, reviews: str) -> None:
    out = f"{PROJECT}.results.reviews_out"
    client().create_dataset(f"{PROJECT}.results", exists_ok=True)
    spec = bq_spec(tmp_path, {"type": "bigquery", "table": reviews}, {"table": out, "write": "truncate"})
    first = cli("run", str(spec))
    assert first.exit_code == 0, first.output
    assert count(out) == 10_000
    keys = {r["key"] for r in client().query(f"SELECT key FROM `{out}`").result()}
    assert keys == {f"r-{i:05d}" for i in range(10_000)}
    again = cli("run", str(spec))
    assert again.exit_code == 0, again.output
    assert count(out) == 10_000
    # The same run loaded again under `write: append` (a changed output re-merges): still no row doubled.
    spec = bq_spec(tmp_path, {"type": "bigquery", "table": reviews}, {"table": out, "write": "append"})
    assert cli("run", str(spec)).exit_code == 0
    assert count(out) == 10_000
    row = next(iter(client().query(f"SELECT * FROM `{out}` WHERE key = 'r-00007'").result()))
    assert row["status"] == "ok" and isinstance(row["parsed"]["stars"], int)
    assert row["record"] == {"review_id": "r-00007", "text": "review number 7", "day": "2024-03-01",
                             "at": "2024-03-01T12:30:00+00:00", "price": "12.500000000", "stars": 3}
    assert [f.name for f in client().get_table(out).schema][:3] == ["key", "status", "text"]


def test_query_source_gives_exactly_the_selected_rows(tmp_path: Path, reviews: str) -> None:
    query = f"SELECT review_id, text, stars FROM `{reviews}` WHERE stars = 2 AND review_id < 'r-01000'"
    spec = bq_spec(tmp_path, {"type": "bigquery", "query": query, "project": PROJECT}, {"path": "out/q.jsonl"})
    files_output(spec)
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "out/q.jsonl").read_text().splitlines()]
    expected = [f"r-{i:05d}" for i in range(1000) if i % 5 + 1 == 2]
    assert [r["key"] for r in rows] == expected  # ordered by the key's column, as the spec's key is one column
    assert all(r["record"]["stars"] == 2 for r in rows)


def test_a_query_without_an_order_is_refused(tmp_path: Path, reviews: str) -> None:
    spec = write_spec(tmp_path, source={"type": "bigquery", "query": f"SELECT * FROM `{reviews}`", "project": PROJECT},
                      key="{{ review_id ~ '-x' }}", prompt="{{ text }}")
    result = cli("run", str(spec))
    assert result.exit_code == 2
    assert "order_by" in result.output + (result.stderr if result.stderr_bytes else "")


def test_a_missing_output_dataset_stops_the_run_before_anything_is_spent(tmp_path: Path, reviews: str) -> None:
    spec = bq_spec(tmp_path, {"type": "bigquery", "table": reviews},
                   {"table": f"{PROJECT}.nowhere.t", "write": "truncate"})
    result = cli("run", str(spec))
    assert result.exit_code == 2
    assert not (tmp_path / ".batchflow" / "t" / "state.json").exists()
