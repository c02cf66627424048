"""Kept answers on the BigQuery-native path: the request digest in SQL, and re-runs that send only what changed.

Against the BigQuery emulator and a separately started `batchflow emulator` (the Vertex surface, reading and
writing the tables itself). The digest test renders the same rows as the runner path does (read from BigQuery by
google-cloud-bigquery, rendered by batchflow's renderer, digested in Python) and compares with the digest BigQuery
computes, row by row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from support.bq import PROJECT, client, count, make_table
from support.helpers import cli, write_spec
from support.servers import batchflow_emulator

from batchflow.answers import request_digest, request_salt
from batchflow.backends.vertex import embed_instance, make_vertex_client
from batchflow.errors import SpecError
from batchflow.execute import native_sql as ns
from batchflow.execute.native_path import NativePath
from batchflow.prepare.prepare import rendered
from batchflow.spec.spec import load_spec

pytestmark = pytest.mark.bigquery

ROWS = 5_000


@pytest.fixture(scope="module")
def vertex_url(bigquery_emulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `batchflow emulator` that reaches the BigQuery emulator (jobs take a moment)."""
    with batchflow_emulator(tmp_path_factory.mktemp("vertex-emulator"), job_seconds=0.2,
                            BIGQUERY_EMULATOR_HOST=bigquery_emulator) as url:
        yield url


def native_spec(tmp_path: Path, table: str, vertex_url: str, name: str, prompt: str, key: str = "k-{{ id }}",
                **extra: Any) -> Path:
    return write_spec(tmp_path, name=name, backend={"type": "vertex", "project": PROJECT, "location": "us-central1",
                                                    "base_url": vertex_url},
                      source={"type": "bigquery", "table": table, "native": True}, key=key, prompt=prompt,
                      system="Sé brief 😀 \"quoted\"", generation_config={"temperature": 1.0, "top_p": 0.95},
                      output={"type": "bigquery", "table": f"{PROJECT}.kept.{name}_out", "write": "truncate",
                              "include_response": True}, **extra)


CORPUS_SCHEMA = [("id", "INT64"), ("name", "STRING"), ("flag", "BOOL"), ("n", "INT64"), ("born", "DATE"),
                 ("price", "FLOAT64"), ("meta", "JSON"), ("tags", "STRING", "REPEATED"),
                 ("item", "RECORD", [("title", "STRING"), ("sub", "RECORD", [("deep", "INT64")])])]
NAMES = ["plain", "ünïcødé 中文 😀", 'quote " and \\ backslash', "tab\tnew\nline\rcr", "ctl \x01\x08\x0c\x1f\x7f",
         "\u2028\u2029 <>&'", None, "", "  spaced  "]


def corpus_rows() -> Iterator[dict[str, Any]]:
    for i in range(60):
        yield {"id": i - 20, "name": NAMES[i % len(NAMES)], "flag": [True, False, None][i % 3],
               "n": None if i % 4 == 0 else (i - 30) * 10**i % (2**63), "born": None if i % 5 == 0 else "2024-02-29",
               "price": [3.0, 0.1, 1e16, -2.5][i % 4], "meta": json.dumps({"z": 1, "a": [1.0, None, "é"]}),
               "tags": ["a", "ü"][: i % 3], "item": {"title": NAMES[(i + 3) % len(NAMES)], "sub": {"deep": i}}}


def load_corpus(table: str) -> str:
    from google.cloud import bigquery

    def field(spec: tuple[Any, ...]) -> Any:
        name, kind, *more = spec
        if more and isinstance(more[0], list):
            return bigquery.SchemaField(name, kind, fields=[field(f) for f in more[0]])
        return bigquery.SchemaField(name, kind, mode=more[0] if more else "NULLABLE")

    c = client()
    c.create_dataset(f"{PROJECT}.kept", exists_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in corpus_rows()).encode()
    config = bigquery.LoadJobConfig(schema=[field(f) for f in CORPUS_SCHEMA], source_format="NEWLINE_DELIMITED_JSON",
                                    write_disposition="WRITE_TRUNCATE")
    import io

    c.load_table_from_file(io.BytesIO(data), table, job_config=config).result()
    return table


@pytest.fixture(scope="module")
def corpus(bigquery_emulator: str) -> str:
    return load_corpus(f"{PROJECT}.kept.corpus")


@pytest.mark.parametrize("key", ["k-{{ name }}-{{ id }}", "{{ name }}{{ id }}"])  # the second stripped, as keys are
def test_the_sql_digest_is_the_runner_paths_digest_of_the_same_row(tmp_path: Path, corpus: str, key: str) -> None:
    prompt = "{{ name }} | {{ flag }} | {{ n }} | {{ born }} | {{ item.title }} | {{ id }}"
    spec = load_spec(native_spec(tmp_path, corpus, "http://127.0.0.1:9", "corpus", prompt, key=key))
    salt = request_salt(spec)
    runner = list(rendered(spec))  # read by google-cloud-bigquery and rendered as the runner path does
    python = {r.key: request_digest(salt, orjson.dumps({"key": r.key, "request": r.request}) + b"\n").decode()
              for r in runner}
    sql = NativePath(spec).sql
    found = client().query(f"SELECT {ns.KEY}, {sql.digest} AS digest, request FROM (SELECT {sql.key} AS {ns.KEY}, "
                           f"{sql.request} AS request FROM {sql.source} AS src)").result()
    rows = {r[ns.KEY]: r for r in found}
    assert {k: r["request"] for k, r in rows.items()} == {r.key: orjson.dumps(r.request).decode() for r in runner}
    assert {k: r["digest"] for k, r in rows.items()} == python  # byte for byte, so the digests agree
    assert len(python) == 60 and any("None" in k for k in python)
    assert key.startswith("k-") or ("spaced  -12" in python and "\u2028\u2029 <>&'-15" not in python)  # stripped


def test_an_embed_requests_sql_digest_and_instance_columns_are_the_runner_paths(tmp_path: Path, corpus: str) -> None:
    """An embed request is another tree than generate's (content, task type, title, size): its SQL text and digest
    agree with the runner path's byte for byte, and the job table's columns hold what the runner path's
    text-embedding instance holds for the same row."""
    spec = load_spec(write_spec(
        tmp_path, name="corpusembed", model="text-embedding-005", task="embed", prompt=None,
        backend={"type": "vertex", "project": PROJECT, "location": "us-central1", "base_url": "http://127.0.0.1:9"},
        source={"type": "bigquery", "table": corpus, "native": True}, key="k-{{ id }}",
        content="{{ name }} | {{ flag }} | {{ n }} | {{ born }}",
        embed_config={"task_type": "RETRIEVAL_DOCUMENT", "title": "{{ item.title }} ({{ id }})",
                      "output_dimensionality": 256},
        output={"type": "bigquery", "table": f"{PROJECT}.kept.corpusembed_out", "write": "truncate"}))
    salt = request_salt(spec)
    runner = list(rendered(spec))
    sql = NativePath(spec).sql
    columns = ", ".join(f"{value} AS {name}" for name, value in sql.job)
    found = client().query(f"SELECT {ns.KEY}, digest, text, {columns} FROM (SELECT {ns.KEY}, {sql.digest} AS digest, "
                           f"request AS text, PARSE_JSON(request) AS request FROM (SELECT {sql.key} AS {ns.KEY}, "
                           f"{sql.request} AS request FROM {sql.source} AS src))").result()
    rows = {r[ns.KEY]: r for r in found}
    assert {k: r["text"] for k, r in rows.items()} == {r.key: orjson.dumps(r.request).decode() for r in runner}
    lines = {r.key: orjson.dumps({"key": r.key, "request": r.request}) + b"\n" for r in runner}
    assert {k: r["digest"] for k, r in rows.items()} == {k: request_digest(salt, line).decode() for k, line in
                                                          lines.items()}
    instances = {r.key: embed_instance(r.request) for r in runner}
    assert {k: {name: r[name] for name, _ in sql.job} for k, r in rows.items()} == instances
    assert len(instances) == 60 and {tuple(i) for i in instances.values()} == {("content", "task_type", "title")}
    assert runner[0].request["outputDimensionality"] == 256  # in the digest: a new size is a new request


@pytest.mark.parametrize(("template", "why"), [("{{ price }}", "FLOAT64"), ("{{ meta }}", "JSON"),
                                              ("{{ tags }}", "ARRAY"), ("{{ item }}", "STRUCT")])
def test_a_column_whose_text_cannot_agree_is_refused(tmp_path: Path, corpus: str, template: str, why: str) -> None:
    spec = load_spec(native_spec(tmp_path, corpus, "http://127.0.0.1:9", "refused", f"Price: {template}"))
    with pytest.raises(SpecError) as refused:
        ns.compile_spec(spec, ns.columns_of(client().get_table(corpus).schema))
    assert "refused.yaml:" in str(refused.value) and why in str(refused.value) and "source.query" in str(refused.value)


def test_a_refused_column_stops_the_run_before_any_table_or_job(tmp_path: Path, corpus: str) -> None:
    spec = native_spec(tmp_path, corpus, "http://127.0.0.1:9", "refused", "Price: {{ price }}")
    result = cli("run", str(spec))
    assert result.exit_code == 2, result.output
    assert "FLOAT64" in result.output + (result.stderr if result.stderr_bytes else "")
    assert not any(t.table_id.startswith("_bf_refused_") for t in client().list_tables(f"{PROJECT}.kept"))


def items(rows: range, edited: range = range(0)) -> Iterator[dict[str, Any]]:
    for i in rows:
        yield {"id": i, "title": f"item {i}", "body": f"text of item {i}" + (" (edited)" if i in edited else "")}


def output(table: str) -> dict[str, tuple[Any, ...]]:
    found = client().query(f"SELECT key, status, text, TO_JSON_STRING(response) AS response, attempts "
                           f"FROM `{table}`").result()
    return {r["key"]: (r["status"], r["text"], r["response"], r["attempts"]) for r in found}


def sent(vertex_url: str, generation: int, name: str = "grow") -> int:
    """Requests in the jobs of one generation, as the Vertex emulator counted them."""
    vertex = make_vertex_client(PROJECT, "us-central1", vertex_url)
    mine = [j for j in vertex.batches.list() if (j.display_name or "").startswith(f"batchflow-{name}-g{generation}-")]
    return sum(int(j.completion_stats.successful_count or 0) + int(j.completion_stats.failed_count or 0)
               for j in mine if j.completion_stats)


def test_a_grown_and_edited_table_sends_only_its_new_and_changed_rows(
        tmp_path: Path, bigquery_emulator: str, vertex_url: str) -> None:
    schema = [("id", "INT64"), ("title", "STRING"), ("body", "STRING")]
    table = make_table(f"{PROJECT}.kept.grow", schema, items(range(ROWS)))
    spec = native_spec(tmp_path, table, vertex_url, "grow", "Summarise {{ title }}: {{ body }}")
    out = f"{PROJECT}.kept.grow_out"
    first = cli("run", str(spec))
    assert first.exit_code == 0, first.output
    before = output(out)
    assert len(before) == ROWS and {v[0] for v in before.values()} == {"ok"} and sent(vertex_url, 1) == ROWS

    edited = range(0, 50)
    make_table(table, schema, items(range(ROWS + 100), edited))  # 100 new rows, 50 edited
    planned = cli("plan", str(spec))
    assert planned.exit_code == 0, planned.output
    assert f"records: {ROWS + 100:,}: 100 new, 50 changed, {ROWS - 50:,} unchanged" in planned.output
    assert "jobs to submit: 1 (150 requests" in planned.output and "BigQuery dry run" in planned.output
    assert not any("_g2_" in t.table_id for t in client().list_tables(f"{PROJECT}.kept"))  # plan made no table
    second = cli("run", str(spec))
    assert second.exit_code == 0, second.output
    assert sent(vertex_url, 2) == 150
    after = output(out)
    assert len(after) == ROWS + 100 and {v[0] for v in after.values()} == {"ok"}
    unchanged = [f"k-{i}" for i in range(50, ROWS)]
    assert [after[k] for k in unchanged] == [before[k] for k in unchanged]  # byte for byte, attempts too
    assert all(after[f"k-{i}"][1] != before[f"k-{i}"][1] and after[f"k-{i}"][3] == 1 for i in edited)
    state = json.loads((tmp_path / ".batchflow" / "grow" / "state.json").read_text())
    usage = state["shards"][0]["jobs"][0]["usage"]  # the job's actual tokens, summed in BigQuery
    assert usage["input"] > 0 and usage["output"] > 0
    assert state["diff"] == {"new": 100, "changed": 50, "unchanged": ROWS - 50, "retried": 0, "removed": 0}
    leftovers = [t.table_id for t in client().list_tables(f"{PROJECT}.kept") if "_g2_" in t.table_id]
    assert leftovers == []  # the generation's work tables are dropped once merged

    make_table(table, schema, items(range(10, ROWS + 100), edited))  # 10 rows deleted
    assert ", 10 removed" in cli("plan", str(spec)).output
    third = cli("run", str(spec))
    assert third.exit_code == 0, third.output
    assert sent(vertex_url, 3) == 0 and count(out) == ROWS + 90
    assert f"k-{ROWS + 99}" in output(out) and "k-5" not in output(out)
    again = cli("run", str(spec))
    assert again.exit_code == 0 and sent(vertex_url, 4) == 0 and count(out) == ROWS + 90


def test_a_stuck_job_and_failed_requests_then_only_the_failures_sent_again_then_restart_sends_all(
        tmp_path: Path, bigquery_emulator: str) -> None:
    plan = tmp_path / "faults.yaml"  # the first job created never moves; a quarter of the requests fail
    plan.write_text(yaml.safe_dump({"seed": 7, "jobs": {"stuck": 1}, "requests": {"fail": 0.25, "codes": [500]}}))
    table = make_table(f"{PROJECT}.kept.flaky", [("id", "INT64"), ("title", "STRING"), ("body", "STRING")],
                       items(range(200)))
    state_file = tmp_path / ".batchflow" / "flaky" / "state.json"
    with batchflow_emulator(tmp_path / "vertex", job_seconds=0.2, faults=plan,
                            BIGQUERY_EMULATOR_HOST=bigquery_emulator) as url:
        spec = native_spec(tmp_path, table, url, "flaky", "Summarise {{ title }}: {{ body }}",
                           jobs={"poll_interval": "0.2s", "stuck_after": "2s"},
                           retry={"request_attempts": 1, "backoff": {"initial": "0.1s", "max": "1s"}})
        allowed = "include_response: true\n  max_failed: '90%'"
        spec.write_text(spec.read_text().replace("include_response: true", allowed))
        out = f"{PROJECT}.kept.flaky_out"
        run = cli("run", str(spec))
        assert run.exit_code == 0, run.output + (run.stderr if run.stderr_bytes else "")
        jobs = json.loads(state_file.read_text())["shards"][0]["jobs"]
        assert [j.get("stuck", False) for j in jobs] == [True, False] and jobs[1]["count"] == 200
        first = output(out)
        failed = sorted(k for k, v in first.items() if v[0] == "error")
        assert 20 < len(failed) < 80 and all(first[k][1] is None for k in failed)

        again = cli("run", str(spec))
        assert again.exit_code == 0, again.output
        state = json.loads(state_file.read_text())
        assert state["diff"] == {"new": 0, "changed": 0, "unchanged": 200 - len(failed), "retried": len(failed),
                                 "removed": 0}
        assert sum(j["count"] for s in state["shards"] for j in s["jobs"]) == len(failed)
        second = output(out)
        assert {k: second[k] for k in first if k not in failed} == {k: first[k] for k in first if k not in failed}
        assert sum(second[k][0] == "ok" for k in failed) > len(failed) // 2  # each drawn afresh in the new job

        restarted = cli("run", "--restart", str(spec))
        assert restarted.exit_code == 0, restarted.output
        state = json.loads(state_file.read_text())
        assert state["diff"]["new"] == 200 and sum(j["count"] for s in state["shards"] for j in s["jobs"]) == 200


def plan_json(spec: Path) -> dict[str, Any]:
    result = cli("plan", "--json", str(spec))
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_identical_requests_are_asked_once_priced_as_the_runner_paths_plan_and_a_budget_stops_a_run_before_a_job(
        tmp_path: Path, bigquery_emulator: str, vertex_url: str) -> None:
    """The same rows, read through the runner (vertex, a bigquery source) and left in BigQuery: the same requests,
    the same distinct ones (Vertex answers and bills identical requests once: the runner path stages them once, the
    native path puts them in its job's table once), the same input tokens (the lines' bytes, four a token, cut in
    proportion to the distinct requests), output and thinking assumption, price: the same cost, exactly (one job
    each; with several, each job's tokens are rounded down apart, so they could differ by under one a job). Then a
    run asks each distinct request once and every key gets its answer."""
    names = ["plain", "ünïcødé 中文 😀", 'quote " and \\ backslash', "tab\tnew\nline", None]
    rows = [{"id": i, "title": names[i % 6 % 5], "body": f"text {i % 6} " * (1 + i % 6)} for i in range(16)]
    table = make_table(f"{PROJECT}.kept.priced", [("id", "INT64"), ("title", "STRING"), ("body", "STRING")], rows)
    prompt = "Summarise {{ title }}: {{ body }}"
    native = native_spec(tmp_path, table, vertex_url, "priced", prompt)
    runner = native_spec(tmp_path, table, vertex_url, "pricedrunner", prompt)  # staged on GCS: plan uploads nothing
    runner.write_text(runner.read_text().replace("native: true", "native: false")
                      .replace("type: vertex", "type: vertex\n  staging: gs://unused/batchflow"))
    by_sql, by_runner = plan_json(native), plan_json(runner)
    assert by_sql["requests"] == by_runner["requests"] == 16
    assert by_sql["billed_requests"] == by_runner["billed_requests"] == 6
    assert by_sql["bytes"] == by_runner["bytes"] and by_sql["cost"] == by_runner["cost"]
    assert by_sql["cost"]["planned_tokens"]["input"] == by_runner["bytes"] // 4 * 6 // 16 > 0
    assert by_sql["cost"]["basis"]["thinking"].startswith("assumed 1,024: gemini-2.5-flash thinks dynamically")

    plain = native.read_text()
    native.write_text(plain + f"budget: {{max_input_tokens: {by_sql['cost']['planned_tokens']['input'] - 1}}}\n")
    refused = cli("plan", str(native))
    assert refused.exit_code == 2 and "over budget.max_input_tokens" in refused.output + refused.stderr
    run = cli("run", str(native))
    assert run.exit_code == 2 and "nothing was created" in run.output + run.stderr
    vertex = make_vertex_client(PROJECT, "us-central1", vertex_url)
    assert not [j for j in vertex.batches.list() if (j.display_name or "").startswith("batchflow-priced-")]
    assert not [t.table_id for t in client().list_tables(f"{PROJECT}.kept") if t.table_id.startswith("_bf_priced_g")]

    native.write_text(plain)
    run = cli("run", str(native))
    assert run.exit_code == 0, run.output
    [job] = [j for j in vertex.batches.list() if (j.display_name or "").startswith("batchflow-priced-g1-")]
    assert job.completion_stats is not None and job.completion_stats.successful_count == 6  # its table: 6 rows
    [shard] = json.loads((tmp_path / ".batchflow" / "priced" / "state.json").read_text())["shards"]
    assert shard["count"] == 16 and shard["jobs"][0]["count"] == 6
    out = output(f"{PROJECT}.kept.priced_out")
    assert len(out) == 16 and {v[0] for v in out.values()} == {"ok"} and {v[3] for v in out.values()} == {1}
    assert len({v[1] for v in out.values()}) == 6
    assert all(out[f"k-{i}"][1] == out[f"k-{i % 6}"][1] for i in range(16))  # one answer, every key that asked


def vectors(table: str, response: str = "TO_JSON_STRING(response)") -> dict[str, tuple[Any, ...]]:
    found = client().query(f"SELECT key, status, embedding, dimensions, model, attempts, error.message AS message, "
                           f"{response} AS response FROM `{table}`").result()
    return {r["key"]: (r["status"], list(r["embedding"]), r["dimensions"], r["model"], r["attempts"], r["message"],
                       r["response"]) for r in found}


def test_a_text_embedding_model_embeds_natively_keeps_its_vectors_and_reembeds_only_what_changed(
        tmp_path: Path, bigquery_emulator: str, vertex_url: str) -> None:
    """text-embedding-005 over a table: the job's table holds `content`, `task_type` and `title` (one row a
    distinct request), its vectors of the size asked are joined back as ARRAY<FLOAT64> with `dimensions` and
    `model`; an empty text is an error row, sent again alone; an edited text or a new size re-embeds."""
    schema = [("id", "INT64"), ("title", "STRING"), ("body", "STRING")]

    def texts(edited: range = range(0), last: str = "") -> Iterator[dict[str, Any]]:
        for i in range(10):  # row 8 asks what row 7 does; row 9's empty text is refused by the model
            body = "" if i == 9 else f"text of item {min(i, 7)}" + (" (edited)" if i in edited else "")
            yield {"id": i, "title": f"item {min(i, 7)}", "body": last if i == 9 and last else body}

    table = make_table(f"{PROJECT}.kept.texts", schema, texts())
    out = f"{PROJECT}.kept.vectors"
    spec = write_spec(tmp_path, name="vectors", model="text-embedding-005", task="embed", prompt=None,
                      backend={"type": "vertex", "project": PROJECT, "location": "us-central1", "base_url": vertex_url},
                      source={"type": "bigquery", "table": table, "native": True}, key="k-{{ id }}",
                      content="{{ body }}", embed_config={"task_type": "RETRIEVAL_DOCUMENT", "title": "{{ title }}",
                                                          "output_dimensionality": 64},
                      retry={"request_attempts": 2, "backoff": {"initial": "0.1s", "max": "1s"}},
                      output={"type": "bigquery", "table": out, "write": "truncate", "include_response": True,
                              "max_failed": 1})
    state_file = tmp_path / ".batchflow" / "vectors" / "state.json"
    planned = cli("plan", str(spec))
    assert planned.exit_code == 0, planned.output
    assert "records: 10: 10 new" in planned.output and "jobs to submit: 1 (10 requests, 9 distinct" in planned.output
    assert "no price for text-embedding-005 on vertex" in planned.output  # the table has none: as the runner says
    first = cli("run", str(spec))
    assert first.exit_code == 0, first.output + (first.stderr if first.stderr_bytes else "")
    [shard] = json.loads(state_file.read_text())["shards"]
    assert [j["count"] for j in shard["jobs"]] == [9, 1]  # the distinct requests, then the failure alone
    before = vectors(out)
    ok = [k for k, v in before.items() if v[0] == "ok"]
    assert len(before) == 10 and len(ok) == 9
    assert {(len(before[k][1]), before[k][2], before[k][3]) for k in ok} == {(64, 64, "text-embedding-005")}
    assert before["k-7"][1] == before["k-8"][1] != before["k-6"][1]
    assert json.loads(before["k-0"][6]) == {"embedding": {"values": before["k-0"][1]}}
    assert before["k-9"][:3] == ("error", [], None) and "content" in before["k-9"][5] and before["k-9"][4] == 2

    make_table(table, schema, texts(edited=range(2)))
    second = cli("run", str(spec))
    assert second.exit_code == 0, second.output
    assert json.loads(state_file.read_text())["diff"] == {"new": 0, "changed": 2, "unchanged": 7, "retried": 1,
                                                          "removed": 0}
    assert sent(vertex_url, 2, "vectors") == 3 + 1  # the two edited and the failure, which is retried once more
    after = vectors(out)
    assert all(after[f"k-{i}"] == before[f"k-{i}"] for i in range(2, 9))  # byte for byte
    assert all(after[f"k-{i}"][1] != before[f"k-{i}"][1] for i in range(2))

    make_table(table, schema, texts(edited=range(2), last="now a text"))
    spec.write_text(spec.read_text().replace("output_dimensionality: 64", "output_dimensionality: 32"))
    third = cli("run", str(spec))
    assert third.exit_code == 0, third.output
    assert sent(vertex_url, 3, "vectors") == 9  # a new size is a new request for every row: 9 distinct
    resized = vectors(out)
    assert {(v[0], len(v[1]), v[2]) for v in resized.values()} == {("ok", 32, 32)}
    spec.write_text(spec.read_text().replace("include_response: true", "include_response: false"))
    again = cli("run", str(spec))  # the output changed, not a request: merged again, nothing embedded
    assert again.exit_code == 0 and sent(vertex_url, 4, "vectors") == 0
    assert vectors(out, response="NULL") == {k: (*v[:6], None) for k, v in resized.items()}
    assert [f.name for f in client().get_table(out).schema] == ["key", "status", "embedding", "dimensions", "model",
                                                                 "attempts", "error", "record"]  # the runner path's
