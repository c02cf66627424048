"""Embed requests per model: task type and title in the config (gemini-embedding-001) or in the text
(gemini-embedding-2), so that one spec switches models by `model:` alone; sizes checked per model."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.helpers import cli, write_jsonl, write_spec

from batchflow.request.render import Renderer
from batchflow.request.wire import RequestBuilder, RequestProblems, task_prefix
from batchflow.spec import models
from batchflow.spec.spec import InvalidSpec, load_spec

RECORDS = [{"id": "a", "text": "tea", "title": "Drinks"}, {"id": "b", "text": "coffee", "title": "Beans"}]


def _requests(tmp_path: Path, model: str, **embed_config: object) -> list[dict[str, object]]:
    write_jsonl(tmp_path / "data/in.jsonl", RECORDS)
    spec = load_spec(write_spec(tmp_path, model=model, task="embed", prompt=None, content="{{ text }}",
                                embed_config=embed_config))
    renderer = Renderer(spec)
    return [renderer.render(r, i, "in.jsonl")[1] for i, r in enumerate(RECORDS, 1)]


def test_one_spec_puts_the_task_in_the_config_for_001_and_in_the_text_for_2(tmp_path: Path) -> None:
    config = {"task_type": "RETRIEVAL_DOCUMENT", "title": "{{ title }}", "output_dimensionality": 768}
    assert _requests(tmp_path, "gemini-embedding-001", **config)[0] == {
        "content": {"parts": [{"text": "tea"}]}, "taskType": "RETRIEVAL_DOCUMENT", "title": "Drinks",
        "outputDimensionality": 768}
    assert _requests(tmp_path, "gemini-embedding-2", **config) == [
        {"content": {"parts": [{"text": "title: Drinks | text: tea"}]}, "outputDimensionality": 768},
        {"content": {"parts": [{"text": "title: Beans | text: coffee"}]}, "outputDimensionality": 768}]


def test_a_static_query_task_is_prefixed_on_every_text_on_the_compiled_path_too(tmp_path: Path) -> None:
    requests = _requests(tmp_path, "gemini-embedding-2", task_type="RETRIEVAL_QUERY", output_dimensionality=256)
    assert requests == [{"content": {"parts": [{"text": f"task: search result | query: {t}"}]},
                         "outputDimensionality": 256} for t in ("tea", "coffee")]
    spec = load_spec(tmp_path / "t.yaml")
    fast = Renderer(spec).fast
    assert fast is not None, "a static task type keeps the compiled path"
    assert [fast(r, i)[1] for i, r in enumerate(RECORDS, 1)] == requests
    slow = Renderer(spec, fast=False)
    assert [slow.render(r, i, "in.jsonl")[1] for i, r in enumerate(RECORDS, 1)] == requests


def test_prefixes_follow_the_task_type() -> None:
    assert task_prefix("QUESTION_ANSWERING", None) == "task: question answering | query: "
    assert task_prefix("RETRIEVAL_DOCUMENT", None) == "title: none | text: "
    assert task_prefix(None, "A title") == "title: A title | text: "


@pytest.mark.parametrize(("model", "dims", "ok"), [("gemini-embedding-001", 127, False),
                                                   ("gemini-embedding-001", 128, True),
                                                   ("gemini-embedding-2", 3072, True),
                                                   ("gemini-embedding-2", 3073, False),
                                                   ("text-embedding-005", 16, True)])
def test_output_dimensionality_is_checked_against_the_models_range(model: str, dims: int, ok: bool) -> None:
    build = RequestBuilder("vertex", "embed", model).build
    request = {"content": {"parts": [{"text": "x"}]}, "output_dimensionality": dims}
    if ok:
        assert build(request)["outputDimensionality"] == dims
    else:
        with pytest.raises(RequestProblems, match="expected 128 to 3072"):
            build(request)


def test_auto_truncate_is_a_vertex_option_only() -> None:
    request = {"content": {"parts": [{"text": "x"}]}, "auto_truncate": False}
    assert RequestBuilder("vertex", "embed", "gemini-embedding-001").build(request)["autoTruncate"] is False
    with pytest.raises(RequestProblems, match="auto_truncate is a Vertex AI option"):
        RequestBuilder("gemini", "embed", "gemini-embedding-001").build(request)


def test_an_unknown_embedding_model_takes_its_familys_format_with_a_warning() -> None:
    with capture_logs() as logs:
        newer = models.embedding_of("gemini-embedding-7-preview")
        legacy = models.embedding_of("text-embedding-009")
    assert (newer.format, legacy.format) == ("request", "instance")
    assert newer.vertex_rows == 1_000_000 and legacy.vertex_rows == 30_000
    assert [e["model"] for e in logs if "family" in e["event"]] == ["gemini-embedding-7-preview", "text-embedding-009"]


def test_a_vertex_location_the_model_is_not_served_in_is_a_located_spec_error(tmp_path: Path) -> None:
    backend = {"type": "vertex", "project": "p", "location": "europe-west4", "staging": "gs://b/s"}
    path = write_spec(tmp_path, backend=backend, model="gemini-embedding-2", task="embed", prompt=None,
                      content="{{ text }}")
    with pytest.raises(InvalidSpec) as error:
        load_spec(path)
    assert "backend.location: gemini-embedding-2 runs Vertex batch jobs in global, us, eu only, not 'europe-west4'" \
        in str(error.value)
    load_spec(write_spec(tmp_path, backend=backend, model="gemini-embedding-001", task="embed", prompt=None,
                         content="{{ text }}"))


def _vertex_spec(tmp_path: Path, model: str, location: str = "us-central1", **overrides: object) -> Path:
    backend = {"type": "vertex", "project": "p", "location": location, "staging": "gs://b/s"}
    return write_spec(tmp_path, backend=backend, model=model, task="embed", prompt=None,
                      **{"content": "{{ text }}", **overrides})


@pytest.mark.parametrize(("model", "location", "rows"), [("gemini-embedding-001", "us-central1", 1_000_000),
                                                         ("gemini-embedding-2", "global", 1_000_000),
                                                         ("text-embedding-005", "us-central1", 30_000)])
def test_vertex_embedding_jobs_default_to_their_models_rows(tmp_path: Path, model: str, location: str,
                                                            rows: int) -> None:
    from batchflow.spec.limits import spec_job_size

    size = spec_job_size(load_spec(_vertex_spec(tmp_path, model, location)))
    assert (size.max_requests, size.max_bytes) == (rows, 1_000_000_000)


def test_more_rows_a_job_than_the_model_takes_is_a_located_error(tmp_path: Path) -> None:
    from batchflow.errors import SpecError
    from batchflow.spec.limits import spec_job_size

    spec = load_spec(_vertex_spec(tmp_path, "gemini-embedding-001", jobs={"max_requests": 1_000_001}))
    with pytest.raises(SpecError, match="above gemini-embedding-001 on the vertex backend's limit of 1,000,000"):
        spec_job_size(spec)


def test_a_healthy_72_hour_queue_is_not_taken_for_a_stuck_job(tmp_path: Path) -> None:
    assert load_spec(_vertex_spec(tmp_path, "gemini-embedding-001")).jobs.stuck_after == 73 * 3600
    assert load_spec(_vertex_spec(tmp_path, "text-embedding-005")).jobs.stuck_after == 24 * 3600
    given = _vertex_spec(tmp_path, "gemini-embedding-2", "eu", jobs={"stuck_after": "80h"})
    assert load_spec(given).jobs.stuck_after == 80 * 3600


def test_the_bigquery_native_path_says_it_cannot_run_gemini_embeddings(tmp_path: Path) -> None:
    spec = _vertex_spec(tmp_path, "gemini-embedding-001", source={"type": "bigquery", "table": "p.d.t",
                                                                  "native": True},
                        output={"type": "bigquery", "table": "p.d.out", "write": "truncate"})
    with pytest.raises(InvalidSpec, match=r"source\.native: gemini-embedding-001 reads no BigQuery table on Vertex"):
        load_spec(spec)


def test_a_text_over_the_input_limit_is_a_located_error_row_on_the_gemini_api(tmp_path: Path) -> None:
    from support.helpers import cli, read_rows

    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "short", "text": "tea"}, {"id": "long", "text": "word " * 3000}])
    spec = write_spec(tmp_path, model="gemini-embedding-001", task="embed", prompt=None, content="{{ text }}",
                      output={"type": "files", "path": "out/result.jsonl", "max_failed": 1})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = {r["key"]: r for r in read_rows(tmp_path / "out/result.jsonl")}
    assert rows["short"]["status"] == "ok" and len(rows["short"]["embedding"]) == 3072
    assert rows["long"]["status"] == "error"
    assert "in.jsonl:2" in rows["long"]["error"]["message"]
    assert "over gemini-embedding-001's input limit of 2,048; not sent" in rows["long"]["error"]["message"]


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_model_the_service_does_not_know_stops_before_anything_is_staged_naming_the_nearest(
        tmp_path: Path, emulator_url: str, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from support.helpers import cli

    monkeypatch.setenv("BF_TEST_KEY", "test")
    write_jsonl(tmp_path / "data/in.jsonl", RECORDS)
    path = write_spec(tmp_path, model="gemini-embedding-large-exp", task="embed", prompt=None, content="{{ text }}",
                      backend={"type": "gemini", "base_url": emulator_url, "api_key_env": "BF_TEST_KEY"})
    result = cli(command, str(path))
    assert result.exit_code == 2, result.stderr
    assert "the service does not know model 'gemini-embedding-large-exp' (models.get: 404 NOT_FOUND)" in result.stderr
    nearest = result.stderr.split("the nearest known embed models on gemini: ", 1)[1].split()
    assert {n.strip(",") for n in nearest} == {"gemini-embedding-001", "gemini-embedding-2"}
    state = tmp_path / ".batchflow"
    assert not any(state.rglob("*.jsonl")) if state.exists() else True, "nothing prepared or staged"


@pytest.mark.parametrize(("change", "where", "said"), [
    ({}, None, ""),
    ({"embed_config": {"task_type": "{{ kind }}"}}, "embed_config.task_type", "one value for every row"),
    ({"output": {"type": "bigquery", "table": "p.d.out", "write": "truncate", "normalize": True}}, "output.normalize",
     "no FLOAT32"),
    ({"content": ["{{ text }}", "{{ more }}"]}, "content", "one text template"),
    ({"embed_config": {"title": "{{ title | upper }}"}}, "embed_config.title", "only put columns into text")])
def test_the_bigquery_native_path_takes_a_legacy_embedding_model_and_refuses_what_sql_cannot_do_saying_why(
        tmp_path: Path, change: dict[str, object], where: str | None, said: str) -> None:
    """text-embedding-005 reads a BigQuery table on Vertex: a native spec validates (its request built by SQL);
    a per-row task type, float32 normalisation or a list of parts is a located spec error (exit 2) saying why."""
    given: dict[str, object] = {"source": {"type": "bigquery", "table": "p.d.t", "native": True},
                                "output": {"type": "bigquery", "table": "p.d.out", "write": "truncate"},
                                "embed_config": {"task_type": "RETRIEVAL_DOCUMENT", "title": "{{ title }}"}}
    spec = _vertex_spec(tmp_path, "text-embedding-005", **{**given, **change})
    result = cli("validate", str(spec))
    output = result.output + (result.stderr if result.stderr_bytes else "")
    if where is None:
        assert result.exit_code == 0, output
        return
    assert result.exit_code == 2, output
    line = next(line for line in output.splitlines() if f"{spec.name}:" in line)
    assert f": {where}: " in line and said in line and "source.native" in line
    lines = spec.read_text().splitlines()
    named = next(n for n, text in enumerate(lines, 1) if text.lstrip().startswith(where.split(".")[-1] + ":"))
    assert named <= int(line.split(":")[2]) <= named + 1  # the line of the place refused (or its first item)
