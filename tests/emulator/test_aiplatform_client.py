"""The emulator's Vertex surface driven by a second official client, google-cloud-aiplatform (REST transport,
anonymous credentials, an `http://` endpoint), against a real GCS emulator: what it sends — numeric enums
(`$alt=json;enum-encoding=int`), v1 paths, AIP-160 filters — must be answered as the service answers it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions

from batchflow.emulator import RunningEmulator, start_in_thread

aiplatform = pytest.importorskip("google.cloud.aiplatform")
pytestmark = pytest.mark.gcs

MODEL = "publishers/google/models/gemini-2.5-flash"
_LIVE = ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_CANCELLING")


@pytest.fixture
def source(gcs_emulator: str) -> tuple[str, str]:
    """A bucket and the gs:// URI of a two-line input in it."""
    import gcsfs

    fs, bucket = gcsfs.GCSFileSystem(token="anon"), f"aip-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    lines = [{"request": {"contents": [{"role": "user", "parts": [{"text": f"item {i}"}]}]}} for i in range(2)]
    fs.pipe(f"{bucket}/in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
    return bucket, f"gs://{bucket}/in.jsonl"


@pytest.fixture
def vertex(tmp_path: Path, gcs_emulator: str) -> Iterator[RunningEmulator]:
    """An emulator whose jobs take a moment, with google-cloud-aiplatform pointed at it."""
    with start_in_thread(tmp_path / "emu", job_seconds=0.3) as running:
        _point_at(running)
        yield running


def _point_at(emulator: RunningEmulator) -> None:
    from google.auth.credentials import AnonymousCredentials

    aiplatform.init(project="proj", location="us-central1", api_endpoint=emulator.base_url, api_transport="rest",
                    credentials=AnonymousCredentials())


def _submit(source: str, dest: str, name: str, **extra: Any) -> Any:
    return aiplatform.BatchPredictionJob.submit(job_display_name=name, model_name=MODEL, gcs_source=source,
                                                gcs_destination_prefix=dest, **extra)


def _finish(job: Any, timeout: float = 15) -> str:
    """Poll (the SDK's own wait sleeps seconds between gets) until the job's state is final; its name."""
    end = time.monotonic() + timeout
    while (state := job.state.name) in _LIVE:
        assert time.monotonic() < end, f"{job.resource_name} still {state}"
        time.sleep(0.05)
    return str(state)


def _listed(text: str) -> list[str]:
    return sorted(job.display_name for job in aiplatform.BatchPredictionJob.list(filter=text))


def test_submit_wait_and_read_outputs(vertex: RunningEmulator, source: tuple[str, str]) -> None:
    bucket, src = source
    job = _submit(src, f"gs://{bucket}/out", "aip-one", labels={"team": "a"})
    assert job.resource_name.startswith("projects/proj/locations/us-central1/batchPredictionJobs/")
    assert _finish(job) == "JOB_STATE_SUCCEEDED"
    assert job.output_info.gcs_output_directory.startswith(f"gs://{bucket}/out/prediction-model-")
    stats = job.completion_stats
    assert (stats.successful_count, stats.failed_count) == (2, 0) and job.error.code == 0
    again = aiplatform.BatchPredictionJob(job.resource_name)
    assert again.display_name == "aip-one" and again.labels == {"team": "a"} and again.end_time
    assert vertex.engine.stats()["calls_by_endpoint"]["vertex.batchPredictionJobs.create"] == 1


def test_list_with_the_documented_filters(vertex: RunningEmulator, source: tuple[str, str]) -> None:
    bucket, src = source
    first = _submit(src, f"gs://{bucket}/a", "aip-a", labels={"team": "a"})
    second = aiplatform.BatchPredictionJob.create(job_display_name="other", model_name=MODEL, gcs_source=src,
                                                  gcs_destination_prefix=f"gs://{bucket}/b", sync=False)
    second.wait_for_resource_creation()
    assert [_finish(first), _finish(second)] == ["JOB_STATE_SUCCEEDED"] * 2
    since = first.create_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert _listed('display_name:"aip-*"') == ["aip-a"]
    assert _listed("labels.team:*") == ["aip-a"]
    assert _listed('labels.team="a" OR display_name="other"') == ["aip-a", "other"]
    assert _listed('NOT display_name="other"') == ["aip-a"]
    assert _listed('state!="JOB_STATE_SUCCEEDED"') == []
    assert _listed(f'create_time>="{since}" AND model_display_name="gemini-2.5-flash"') == ["aip-a", "other"]
    assert _listed(f'create_time<"{since}"') == []
    # what num_pending_jobs() (in later SDK versions) sends: an OR of the live states
    assert _listed(" OR ".join(f'state="{state}"' for state in _LIVE)) == []
    with pytest.raises(exceptions.BadRequest, match="displayName"):
        _listed('displayName="other"')


def test_cancel_then_delete(tmp_path: Path, source: tuple[str, str]) -> None:
    bucket, src = source
    with start_in_thread(tmp_path / "slow", job_seconds=60) as slow:
        _point_at(slow)
        job = _submit(src, f"gs://{bucket}/c", "aip-cancel")
        assert job.state.name == "JOB_STATE_PENDING"
        job.cancel()
        assert _finish(job) == "JOB_STATE_CANCELLED" and job.end_time
        job.delete()
        assert _listed('display_name="aip-cancel"') == []
        assert slow.engine.stats()["calls_by_endpoint"]["vertex.batchPredictionJobs.delete"] == 1
