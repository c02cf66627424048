"""The emulator's Vertex AI batchPredictionJobs surface, driven by the real google-genai SDK (vertex mode) and
gcsfs against a real GCS emulator."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import errors, types
from support.emulator_helpers import http_json, wait_done

from batchflow.emulator import RunningEmulator, start_in_thread
from batchflow.emulator.faults.plan import load_faults
from batchflow.emulator.vertex.execute import InputError, answer_lines, check_size, part_count

pytestmark = pytest.mark.gcs

MODEL = "gemini-2.5-flash"
PARENT = "projects/proj/locations/us-central1"
SHARED = Path(__file__).resolve().parents[3] / "shared"


@pytest.fixture
def emulator(tmp_path: Path, gcs_emulator: str) -> Iterator[RunningEmulator]:
    with start_in_thread(tmp_path / "emu") as running:
        yield running


@pytest.fixture
def client(emulator: RunningEmulator) -> Iterator[genai.Client]:
    with _client(emulator) as c:
        yield c


def _client(emulator: RunningEmulator) -> genai.Client:
    return genai.Client(vertexai=True, project="proj", location="us-central1",
                        credentials=google.oauth2.credentials.Credentials(token="fake"),
                        http_options=types.HttpOptions(base_url=emulator.base_url))


def _line(i: int) -> dict[str, Any]:
    return {"request": {"contents": [{"role": "user", "parts": [{"text": f"item {i}"}]}], "labels": {"k": f"v{i:04d}"}}}


def _put(fs: Any, path: str, lines: list[Any]) -> str:
    fs.pipe(path, "".join(json.dumps(x) + "\n" for x in lines).encode())
    return f"gs://{path}"


def _create(client: genai.Client, src: str, dest: str, name: str = "vx", model: str = MODEL,
            parameters: dict[str, Any] | None = None) -> str:
    extra = types.HttpOptions(extra_body={"modelParameters": parameters}) if parameters else None
    job = client.batches.create(model=model, src=src, config=types.CreateBatchJobConfig(dest=dest, display_name=name,
                                                                                        http_options=extra))
    assert job.name
    return job.name


def _outputs(fs: Any, job: types.BatchJob) -> dict[str, list[dict[str, Any]]]:
    assert job.output_info and job.output_info.gcs_output_directory
    files = sorted(fs.glob(job.output_info.gcs_output_directory.removeprefix("gs://") + "/predictions*.jsonl"))
    return {f: [json.loads(x) for x in fs.cat(f).decode().splitlines()] for f in files}


def _raw(emulator: RunningEmulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    return http_json(method, f"{emulator.base_url}/v1beta1/{path}", data)


def test_job_reads_gcs_and_writes_every_line_shuffled_and_split(client: genai.Client, fs: Any, bucket: str) -> None:
    n = 150
    lines = [_line(i) for i in range(n)]
    lines[5] = {"request": {"contents": []}, "labels": {"k": "bad"}}  # labels outside the request are not echoed
    src = _put(fs, f"{bucket}/in.jsonl", lines)
    job = wait_done(client, _create(client, src, f"gs://{bucket}/out", "vx-round-trip"))
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED  # a failed line does not fail the job
    assert job.name and job.name.startswith(f"{PARENT}/batchPredictionJobs/") and job.name.rsplit("/")[-1].isdigit()
    assert job.model == f"publishers/google/models/{MODEL}" and job.display_name == "vx-round-trip"
    assert job.create_time and job.start_time and job.end_time
    assert job.completion_stats and (job.completion_stats.successful_count, job.completion_stats.failed_count,
                                     job.completion_stats.incomplete_count) == (n - 1, 1, 0)
    assert job.output_info and str(job.output_info.gcs_output_directory).startswith(
        f"gs://{bucket}/out/prediction-model-")
    files = _outputs(fs, job)
    assert len(files) >= 2 and all(name.endswith(".jsonl") for name in files)
    out = [x for part in files.values() for x in part]
    assert len(out) == n
    good = [x for x in out if x["status"] == ""]
    assert sorted(x["request"]["labels"]["k"] for x in good) == [f"v{i:04d}" for i in range(n) if i != 5]
    assert [x["request"]["labels"]["k"] for x in good] != sorted(x["request"]["labels"]["k"] for x in good)
    assert all(x["response"]["candidates"][0]["content"]["parts"][0]["text"] and x["processed_time"] for x in good)
    (bad,) = [x for x in out if x["status"]]
    assert bad["request"] == {"contents": []} and "response" not in bad and "contents" in bad["status"]


def test_raw_resource_echoes_configs_and_labels_with_int64_counts_as_strings(
        emulator: RunningEmulator, fs: Any, bucket: str) -> None:
    src = _put(fs, f"{bucket}/in.jsonl", [_line(1), _line(2)])
    body = {"displayName": "raw", "model": f"publishers/google/models/{MODEL}", "labels": {"team": "a"},
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [src]}},
            "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": f"gs://{bucket}/o"}}}
    status, created = _raw(emulator, "POST", f"{PARENT}/batchPredictionJobs", body)
    assert status == 200 and created["state"] == "JOB_STATE_PENDING" and "completionStats" not in created
    _, job = _raw(emulator, "GET", created["name"])
    assert job["state"] == "JOB_STATE_SUCCEEDED" and job["labels"] == {"team": "a"}
    assert job["inputConfig"] == body["inputConfig"] and job["outputConfig"] == body["outputConfig"]
    assert job["completionStats"] == {"successfulCount": "2", "failedCount": "0", "incompleteCount": "0"}
    assert job["outputInfo"]["gcsOutputDirectory"] == f"gs://{bucket}/o/prediction-model-{job['createTime']}"


def test_globbed_inputs_are_all_read(client: genai.Client, fs: Any, bucket: str) -> None:
    _put(fs, f"{bucket}/in/a.jsonl", [_line(0), _line(1)])
    crlf_without_final_newline = f"{json.dumps(_line(2))}\r\n\r\n{json.dumps(_line(3))}"
    fs.pipe(f"{bucket}/in/b.jsonl", crlf_without_final_newline.encode())
    job = wait_done(client, _create(client, f"gs://{bucket}/in/*.jsonl", f"gs://{bucket}/out"))
    assert job.completion_stats and job.completion_stats.successful_count == 4


def test_missing_input_ends_failed_with_an_error(client: genai.Client, bucket: str) -> None:
    job = wait_done(client, _create(client, f"gs://{bucket}/nothing-here.jsonl", f"gs://{bucket}/out"))
    assert job.state == types.JobState.JOB_STATE_FAILED
    assert job.error and job.error.code and "nothing-here.jsonl" in str(job.error.message)


def test_embeddings_use_the_seed_format_with_unit_vectors(client: genai.Client, fs: Any, bucket: str) -> None:
    lines = [{"content": "a default sized vector", "task_type": "RETRIEVAL_DOCUMENT", "title": "t"},
             {"content": ""}, {"content": "sized in the line", "output_dimensionality": 16}]
    src = _put(fs, f"{bucket}/emb.jsonl", lines)
    job = wait_done(client, _create(client, src, f"gs://{bucket}/emb-out", model="text-embedding-005"))
    assert job.completion_stats and (job.completion_stats.successful_count, job.completion_stats.failed_count) == (1, 2)
    out = {x["instance"]["content"]: x for part in _outputs(fs, job).values() for x in part}
    assert "output_dimensionality" in out["sized in the line"]["status"]  # a job parameter, not an instance field
    small = wait_done(client, _create(client, _put(fs, f"{bucket}/emb-small.jsonl", [{"content": "small"}]),
                                      f"gs://{bucket}/emb-small-out", model="text-embedding-005",
                                      parameters={"outputDimensionality": 16}))
    out.update({x["instance"]["content"]: x for part in _outputs(fs, small).values() for x in part})
    for text, dims in (("a default sized vector", 768), ("small", 16)):
        (prediction,) = out[text]["predictions"]
        values = prediction["embeddings"]["values"]
        assert out[text]["status"] == "" and len(values) == dims
        assert math.isclose(math.hypot(*values), 1.0, abs_tol=1e-5)
        assert prediction["embeddings"]["statistics"] == {"token_count": max(1, (len(text) + 3) // 4),
                                                          "truncated": False}
    assert out[""]["status"] and "predictions" not in out[""]
    assert out["a default sized vector"]["instance"] == lines[0]


def _gemini_line(key: str, text: str, **config: Any) -> dict[str, Any]:
    return {"key": key, "request": {"content": {"parts": [{"text": text}]}, "embed_content_config": config}}


def test_gemini_embeddings_answer_their_documented_line_and_refuse_the_legacy_one(
        client: genai.Client, fs: Any, bucket: str) -> None:
    lines = [_gemini_line("a", "a document", output_dimensionality=768, task_type="RETRIEVAL_DOCUMENT", title="t"),
             _gemini_line("b", "full size"), {"content": "the legacy instance"},
             _gemini_line("c", "too narrow", output_dimensionality=64)]
    src = _put(fs, f"{bucket}/gemb.jsonl", lines)
    job = wait_done(client, _create(client, src, f"gs://{bucket}/gemb-out", model="gemini-embedding-001"))
    assert job.completion_stats and (job.completion_stats.successful_count, job.completion_stats.failed_count) == (2, 2)
    out = {x.get("key", "legacy"): x for part in _outputs(fs, job).values() for x in part}
    assert out["a"]["request"] == lines[0]["request"] and out["a"]["status"] == ""
    full = out["b"]["response"]["embedding"]["values"]
    assert len(out["a"]["response"]["embedding"]["values"]) == 768 and len(full) == 3072
    assert math.isclose(math.hypot(*full), 1.0, abs_tol=1e-5), "the full-size vector is a unit vector"
    assert out["b"]["response"]["usageMetadata"] == {"promptTokenCount": 3}
    assert "Invalid input line for gemini-embedding-001" in out["legacy"]["status"]
    assert "128..3072" in out["c"]["status"]


def test_gemini_embedding_2_refuses_a_task_type_in_the_config(client: genai.Client, fs: Any, bucket: str) -> None:
    with _vertex_client(client, "us") as us:
        src = _put(fs, f"{bucket}/g2.jsonl", [_gemini_line("a", "q", task_type="RETRIEVAL_QUERY"),
                                              _gemini_line("b", "task: search result | query: q")])
        job = wait_done(us, _create(us, src, f"gs://{bucket}/g2-out", model="gemini-embedding-2"))
    out = {x["key"]: x for part in _outputs(fs, job).values() for x in part}
    assert "taskType is not supported by gemini-embedding-2" in out["a"]["status"]
    assert out["b"]["status"] == ""


def _vertex_client(client: genai.Client, location: str) -> genai.Client:
    base_url = client._api_client._http_options.base_url
    return genai.Client(vertexai=True, project="proj", location=location,
                        credentials=google.oauth2.credentials.Credentials(token="fake"),
                        http_options=types.HttpOptions(base_url=base_url))


def test_gemini_embedding_jobs_are_refused_outside_their_locations_and_over_bigquery(
        client: genai.Client, fs: Any, bucket: str) -> None:
    src = _put(fs, f"{bucket}/g.jsonl", [_gemini_line("a", "x")])
    with pytest.raises(errors.ClientError) as where:
        _create(client, src, f"gs://{bucket}/g-out", model="gemini-embedding-2")  # us-central1: not served there
    assert where.value.code == 404
    with pytest.raises(errors.ClientError) as table:
        client.batches.create(model="gemini-embedding-001", src="bq://proj.ds.requests",
                              config=types.CreateBatchJobConfig(dest="bq://proj.ds.out", display_name="bq"))
    assert table.value.code == 400 and "Cloud Storage only" in str(table.value)


def test_an_embedding_job_over_its_models_rows_or_bytes_fails_whole() -> None:
    check_size("gemini-embedding-001", 1_000_000, 10)
    with pytest.raises(InputError, match="1,000,001 rows"):
        check_size("gemini-embedding-001", 1_000_001, 10)
    with pytest.raises(InputError, match="at most 1,000,000,000"):
        check_size("gemini-embedding-2", 10, 1_000_000_001)
    with pytest.raises(InputError, match="at most 30,000"):
        check_size("text-embedding-005", 30_001, 10)  # the legacy models keep their 30,000 prompts a job


def test_list_filters_by_state_and_display_name_and_pages(
        client: genai.Client, emulator: RunningEmulator, fs: Any, bucket: str) -> None:
    src = _put(fs, f"{bucket}/in.jsonl", [_line(0)])
    names = [wait_done(client, _create(client, src, f"gs://{bucket}/o{i}", f"list-{i % 2}")).name for i in range(4)]
    listed = client.batches.list(config=types.ListBatchJobsConfig(filter='display_name="list-0"'))
    assert [j.name for j in listed] == [names[2], names[0]]
    both = 'state="JOB_STATE_SUCCEEDED" AND display_name="list-1"'
    assert [j.name for j in client.batches.list(config=types.ListBatchJobsConfig(filter=both))] == [names[3], names[1]]
    assert not list(client.batches.list(config=types.ListBatchJobsConfig(filter="state=JOB_STATE_RUNNING")))
    _, first = _raw(emulator, "GET", f"{PARENT}/batchPredictionJobs?pageSize=3")
    assert [j["name"] for j in first["batchPredictionJobs"]] == names[::-1][:3] and first["nextPageToken"]
    _, rest = _raw(emulator, "GET", f"{PARENT}/batchPredictionJobs?pageSize=3&pageToken={first['nextPageToken']}")
    assert [j["name"] for j in rest["batchPredictionJobs"]] == names[:1] and "nextPageToken" not in rest
    status, reply = _raw(emulator, "GET", f"{PARENT}/batchPredictionJobs?filter=create_time%3E%222020%22")
    assert status == 400 and reply["error"]["status"] == "INVALID_ARGUMENT"
    assert _raw(emulator, "GET", "projects/proj/locations/elsewhere/batchPredictionJobs") == (200, {})


def test_list_takes_aip160_filters_through_the_sdk(client: genai.Client, fs: Any, bucket: str) -> None:
    src = _put(fs, f"{bucket}/in.jsonl", [_line(0)])
    extra = types.HttpOptions(extra_body={"labels": {"team": "a"}})
    labelled = client.batches.create(model=MODEL, src=src, config=types.CreateBatchJobConfig(
        dest=f"gs://{bucket}/l", display_name="dc-labelled", http_options=extra)).name
    assert labelled
    plain = _create(client, src, f"gs://{bucket}/p", "dc-plain")
    other = _create(client, src, f"gs://{bucket}/o", "other", model="gemini-2.5-pro")
    jobs = [wait_done(client, name) for name in (labelled, plain, other)]
    since = jobs[1].create_time
    assert since

    def listed(text: str) -> list[str | None]:
        return [j.name for j in client.batches.list(config=types.ListBatchJobsConfig(filter=text))]

    assert listed('display_name:"dc-*"') == [plain, labelled]
    assert listed('NOT display_name:"dc-*" OR labels.team:*') == [other, labelled]
    assert listed('state!="JOB_STATE_SUCCEEDED" OR display_name="dc-plain"') == [plain]
    assert listed('display_name="other" OR display_name="dc-plain" AND model_display_name="gemini-2.5-pro"') \
        == [other]  # OR before AND
    assert listed(f'create_time>="{since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}" AND -labels.team=a') == [other, plain]
    with pytest.raises(errors.ClientError) as info:
        listed('displayName="other"')
    assert info.value.code == 400 and "displayName" in str(info.value.message)


def test_job_times_never_lie_ahead_of_the_answer_and_error_only_on_failed_or_cancelled(
        tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _put(fs, f"{bucket}/in.jsonl", [_line(0)])
    with start_in_thread(tmp_path / "emu", job_seconds=60) as emu:
        status, created = _raw(emu, "POST", f"{PARENT}/batchPredictionJobs", _body(src, f"gs://{bucket}/out"))
        assert status == 200
        _raw(emu, "POST", f"{created['name']}:cancel", {})
        _, job = _raw(emu, "GET", created["name"])
        assert job["state"] == "JOB_STATE_CANCELLING"  # for a moment, as the service shows
        while job["state"] == "JOB_STATE_CANCELLING":
            time.sleep(0.05)
            _, job = _raw(emu, "GET", created["name"])
        asked = time.time()
    assert job["state"] == "JOB_STATE_CANCELLED" and "startTime" not in job
    times = [_epoch(job[key]) for key in ("createTime", "updateTime", "endTime")]
    assert times == sorted(times) and times[-1] <= asked


def test_an_expired_job_carries_no_error(tmp_path: Path, fs: Any, bucket: str) -> None:
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"seed": 1, "jobs": {"expire": 1}}))
    src = _put(fs, f"{bucket}/in.jsonl", [_line(0)])
    with start_in_thread(tmp_path / "emu", faults=load_faults(plan)) as emu, _client(emu) as client:
        job = wait_done(client, _create(client, src, f"gs://{bucket}/out"))
        assert job.state == types.JobState.JOB_STATE_EXPIRED and job.error is None


def test_numeric_enums_when_asked_as_google_clients_ask(emulator: RunningEmulator, fs: Any, bucket: str) -> None:
    src = _put(fs, f"{bucket}/in.jsonl", [_line(0)])
    numbers = "%24alt=json%3Benum-encoding%3Dint"
    status, created = _raw(emulator, "POST", f"{PARENT}/batchPredictionJobs?{numbers}", _body(src, f"gs://{bucket}/o"))
    assert status == 200 and created["state"] == 2  # JOB_STATE_PENDING
    _, job = _raw(emulator, "GET", f"{created['name']}?{numbers}")
    assert job["state"] == 4  # JOB_STATE_SUCCEEDED
    _, page = _raw(emulator, "GET", f"{PARENT}/batchPredictionJobs?{numbers}")
    assert [j["state"] for j in page["batchPredictionJobs"]] == [4]
    assert _raw(emulator, "GET", created["name"])[1]["state"] == "JOB_STATE_SUCCEEDED"


def test_create_refuses_an_unknown_field_as_googles_parser_does(emulator: RunningEmulator) -> None:
    status, reply = _raw(emulator, "POST", f"{PARENT}/batchPredictionJobs",
                         {**_body("gs://bkt/in.jsonl", "gs://bkt/out"), "notAField": True})
    assert status == 400 and reply["error"]["status"] == "INVALID_ARGUMENT"
    assert reply["error"]["message"] == "Invalid JSON payload received. Unknown name \"notAField\" at " \
        "'batch_prediction_job': Cannot find field."
    body = _body("gs://bkt/in.jsonl", "gs://bkt/out")
    body["inputConfig"]["gcsSource"]["uri"] = "gs://bkt/x"
    status, reply = _raw(emulator, "POST", f"{PARENT}/batchPredictionJobs", body)
    assert status == 400 and "'batch_prediction_job.input_config.gcs_source'" in reply["error"]["message"]
    assert emulator.engine.stats()["creates_by_display_name"] == {}


def _body(src: str, dest: str) -> dict[str, Any]:
    return {"displayName": "raw", "model": f"publishers/google/models/{MODEL}",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [src]}},
            "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": dest}}}


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_cancel_ends_a_live_job_cancelled_after_a_while_cancelling(tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _put(fs, f"{bucket}/in.jsonl", [_line(0)])
    with start_in_thread(tmp_path / "emu", job_seconds=60) as emu, _client(emu) as client:
        name = _create(client, src, f"gs://{bucket}/out")
        client.batches.cancel(name=name)
        assert client.batches.get(name=name).state == types.JobState.JOB_STATE_CANCELLING
        job = wait_done(client, name)
        assert job.state == types.JobState.JOB_STATE_CANCELLED and job.end_time


def test_delete_answers_a_done_operation_and_the_job_is_gone(
        client: genai.Client, emulator: RunningEmulator, fs: Any, bucket: str) -> None:
    name = wait_done(client, _create(client, _put(fs, f"{bucket}/in.jsonl", [_line(0)]), f"gs://{bucket}/out")).name
    assert name
    status, op = _raw(emulator, "DELETE", name)
    assert status == 200 and op["done"] is True and op["name"].startswith(f"{PARENT}/operations/")
    with pytest.raises(errors.ClientError) as info:
        client.batches.get(name=name)
    assert info.value.code == 404
    assert client.batches.delete(name=_create(client, f"gs://{bucket}/in.jsonl", f"gs://{bucket}/o2")).done


def test_restarted_emulator_keeps_vertex_jobs_and_finishes_them(tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _put(fs, f"{bucket}/in.jsonl", [_line(0), _line(1)])
    with start_in_thread(tmp_path / "emu", job_seconds=0.5) as emu, _client(emu) as client:
        name = _create(client, src, f"gs://{bucket}/out", "survivor")
    time.sleep(0.6)
    with start_in_thread(tmp_path / "emu") as emu, _client(emu) as client:
        job = client.batches.get(name=name)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED
        assert sum(len(lines) for lines in _outputs(fs, job).values()) == 2
        assert emu.engine.stats()["creates_by_display_name"]["survivor"] == 1


@pytest.mark.parametrize(("change", "needle"), [
    ({"inputConfig": {"instancesFormat": "bigquery", "bigquerySource": {"inputUri": "bq://p.t"}}}, "bq://"),
    ({"outputConfig": {"predictionsFormat": "jsonl", "bigqueryDestination": {"outputUri": "bq://p.d.o"}}},
     "predictions_format"),
    ({"displayName": None}, "display_name"),
    ({"model": "gemini"}, "model"),
    ({"inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["/local/file.jsonl"]}}}, "gs://"),
])
def test_malformed_or_bigquery_create_is_400(emulator: RunningEmulator, change: dict[str, Any], needle: str) -> None:
    body = {"displayName": "x", "model": f"publishers/google/models/{MODEL}",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://bkt/in.jsonl"]}},
            "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": "gs://bkt/out"}}}
    status, reply = _raw(emulator, "POST", f"{PARENT}/batchPredictionJobs", {**body, **change})
    assert status == 400 and reply["error"]["status"] == "INVALID_ARGUMENT" and needle in reply["error"]["message"]


def test_create_without_gcsfs_names_the_missing_package(
        emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # what `import gcsfs` meets when it is not installed
    body = {"displayName": "x", "model": f"publishers/google/models/{MODEL}",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://bkt/in.jsonl"]}},
            "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": "gs://bkt/out"}}}
    status, reply = _raw(emulator, "POST", f"{PARENT}/batchPredictionJobs", body)
    assert status == 400 and "gcsfs" in reply["error"]["message"] and "batchflow[gcs]" in reply["error"]["message"]
    assert emulator.engine.stats()["creates_by_display_name"] == {}


def test_predictions_are_split_evenly_and_shuffled_the_same_way_for_the_same_job(tmp_path: Path) -> None:
    assert [part_count(n) for n in (0, 1, 2, 1000, 1001, 10**6)] == [1, 1, 2, 2, 2, 64]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(10)))

    def run(seed: str) -> list[list[str]]:
        parts = [tmp_path / f"{seed}-{i}.jsonl" for i in range(2)]
        assert answer_lines(MODEL, source, parts, seed, lambda: 0.0) == (10, 0)
        return [[json.loads(x)["request"]["labels"]["k"] for x in p.read_text().splitlines()] for p in parts]

    first = run("1")
    assert first == run("1") and [len(p) for p in first] == [5, 5]
    assert sorted(first[0] + first[1]) == [f"v{i:04d}" for i in range(10)]


def test_conformance_script_passes_with_vertex(tmp_path: Path, gcs_emulator: str) -> None:
    script = SHARED / "conformance" / "emulator_conformance.py"
    if not script.exists():
        pytest.skip(f"the shared conformance checker is not at {script}")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               STORAGE_EMULATOR_HOST=gcs_emulator, GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
    done = subprocess.run([sys.executable, str(script), "--vertex"], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert last.endswith(" passed, 0 failed") and "vertex:" in done.stdout, done.stdout + done.stderr


def test_fault_plans_reach_vertex_lines_and_jobs(tmp_path: Path, fs: Any, bucket: str) -> None:
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"seed": 3, "requests": {"fail": 0.5, "codes": [503]}, "jobs": {"fail": 1}}))
    src = _put(fs, f"{bucket}/in.jsonl", [_line(i) for i in range(40)])
    with start_in_thread(tmp_path / "emu", faults=load_faults(plan)) as emu, _client(emu) as client:
        forced = wait_done(client, _create(client, src, f"gs://{bucket}/o1", "first"))
        assert forced.state == types.JobState.JOB_STATE_FAILED and forced.error and forced.error.code
        job = wait_done(client, _create(client, src, f"gs://{bucket}/o2", "second"))
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.completion_stats
        out = [x for part in _outputs(fs, job).values() for x in part]
        faulted = [x for x in out if x["status"]]
        assert 0 < len(faulted) == job.completion_stats.failed_count < 40
        assert all("UNAVAILABLE" in x["status"] and "response" not in x and x["request"] for x in faulted)


def test_vertex_discovery_check_finds_no_deviation(tmp_path: Path, repo_root: Path) -> None:
    """Every call batchflow makes to Vertex, the emulator's answers and the staged JSONL lines, validated against
    Vertex AI's own discovery document by the shared checker (it fetches the document once with pip)."""
    script = SHARED / "conformance" / "vertex_discovery_check.py"
    if not script.exists():
        pytest.skip(f"the shared discovery checker is not at {script}")
    done = subprocess.run([sys.executable, str(script), str(repo_root), "--python", sys.executable,
                           "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    summary = [line for line in done.stdout.splitlines() if line.startswith("SUMMARY")]
    assert done.returncode == 0 and summary and summary[0].startswith("SUMMARY 0 distinct deviation"), \
        done.stdout[-4000:] + done.stderr[-2000:]
