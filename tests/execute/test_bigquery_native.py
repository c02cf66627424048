"""The BigQuery-native path: requests built by SQL, Vertex jobs over bq:// tables, the output a SQL join.

The runner runs in this process (the CLI through CliRunner) against a BigQuery emulator and a separately started
`batchflow emulator` (the Vertex surface, which reads and writes the tables itself). To prove that no record
passes through the runner, every HTTP response the runner's process receives from BigQuery is counted, and
reading rows (`list_rows`) is made to fail: 50,000 records of ~80 bytes are ~4 MB, the runner gets a few KB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.bq import PROJECT, client, count, make_table
from support.helpers import cli, write_spec
from support.servers import batchflow_emulator

pytestmark = pytest.mark.bigquery

RECORDS = 50_000


@pytest.fixture(scope="module")
def vertex_url(bigquery_emulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `batchflow emulator` that reaches the BigQuery emulator (jobs take a moment)."""
    with batchflow_emulator(tmp_path_factory.mktemp("vertex-emulator"), job_seconds=0.2,
                            BIGQUERY_EMULATOR_HOST=bigquery_emulator) as url:
        yield url


@pytest.fixture(scope="module")
def big_table(bigquery_emulator: str) -> str:
    rows = ({"id": i, "title": f"item {i}", "body": f"text of item {i} with a 'quote' and a \"double\" one"}
            for i in range(RECORDS))
    return make_table(f"{PROJECT}.native.items", [("id", "INT64"), ("title", "STRING"), ("body", "STRING")], rows)


class Received:
    """Bytes of every HTTP response the BigQuery client receives in this process, and rows listed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from google.auth.transport.requests import AuthorizedSession
        from google.cloud import bigquery

        self.bytes = 0
        self.calls = 0
        original = AuthorizedSession.request

        def request(session: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            response = original(session, method, url, *args, **kwargs)
            self.bytes += len(response.content)
            self.calls += 1
            return response

        def list_rows(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the native runner listed a table's rows")

        monkeypatch.setattr(AuthorizedSession, "request", request)
        monkeypatch.setattr(bigquery.Client, "list_rows", list_rows)


def native_spec(tmp_path: Path, table: str, vertex_url: str, write: str = "truncate", **extra: Any) -> Path:
    return write_spec(tmp_path, name="native", backend={"type": "vertex", "project": PROJECT, "location":
                                                        "us-central1", "base_url": vertex_url},
                      source={"type": "bigquery", "table": table, "native": True}, key="item-{{ id }}",
                      prompt="Summarise {{ title }}: {{ body }}", system="Be brief.",
                      generation_config={"temperature": 0},
                      output={"type": "bigquery", "table": f"{PROJECT}.native.items_out", "write": write}, **extra)


def test_native_50k_rows_joined_to_their_keys_without_reading_a_record(
        tmp_path: Path, big_table: str, vertex_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = native_spec(tmp_path, big_table, vertex_url)
    received = Received(monkeypatch)
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.output
    assert "50,000 records: 50,000 ok" in result.output
    input_bytes = sum(len(f"item {i}") + 60 for i in range(RECORDS))
    assert received.bytes < 100_000 < input_bytes, (received.bytes, received.calls)
    monkeypatch.undo()
    out = f"{PROJECT}.native.items_out"
    assert count(out) == RECORDS
    joined = next(iter(client().query(
        f"SELECT COUNT(*) AS n, COUNTIF(o.status = 'ok') AS ok, COUNTIF(o.text IS NOT NULL) AS texts, "
        f"COUNTIF(JSON_VALUE(o.record, '$.title') = s.title) AS records "
        f"FROM `{out}` o JOIN `{big_table}` s ON o.key = CONCAT('item-', CAST(s.id AS STRING))").result()))
    assert dict(joined) == {"n": RECORDS, "ok": RECORDS, "texts": RECORDS, "records": RECORDS}
    state = (tmp_path / ".batchflow" / "native" / "state.json").read_text()
    assert '"records": 50000' in state and state.count('"status": "collected"') == 2  # two jobs of <= 30,000
    again = cli("run", str(spec))
    assert again.exit_code == 0 and count(out) == RECORDS


def test_native_templates_may_only_put_columns_into_text(tmp_path: Path) -> None:
    spec = native_spec(tmp_path, f"{PROJECT}.native.items", "http://127.0.0.1:9")
    spec.write_text(spec.read_text().replace("{{ title }}", "{{ title | upper }}"))
    result = cli("validate", str(spec))
    assert result.exit_code == 2
    assert "native.yaml:" in result.output and "only put columns into text" in result.output
    assert "filter" in result.output
