"""The emulator's Vertex text-embedding jobs over BigQuery, as Google's "Get batch text embeddings" page shows them:
a `content` column in (`task_type`, `title` optional), the input's columns out with `predictions` (a STRING holding
the JSON list of embeddings) and `status`. Driven through google-genai against a separately started emulator that
reads and writes the BigQuery emulator."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from google.genai import types
from support.bq import PROJECT, client, make_table
from support.servers import batchflow_emulator

from batchflow.backends.vertex import make_vertex_client

pytestmark = pytest.mark.bigquery


def test_a_text_embedding_job_reads_the_content_column_and_writes_predictions_beside_the_rows(
        tmp_path: Path, bigquery_emulator: str) -> None:
    rows = [{"id": 1, "content": "banana bread", "task_type": "RETRIEVAL_DOCUMENT"}, {"id": 2, "content": "a model"},
            {"id": 3, "content": ""}]  # an empty text: that row's error in `status`, no prediction
    source = make_table(f"{PROJECT}.embedbq.texts", [("id", "INT64"), ("content", "STRING"), ("task_type", "STRING")],
                        rows)
    with batchflow_emulator(tmp_path / "vertex", job_seconds=0.1, BIGQUERY_EMULATOR_HOST=bigquery_emulator) as url:
        vertex = make_vertex_client(PROJECT, "us-central1", url)
        job = vertex.batches.create(model="text-embedding-005", src=f"bq://{source}",
                                    config=types.CreateBatchJobConfig(dest=f"bq://{PROJECT}.embedbq.vectors",
                                                                      display_name="embed-bq"))
        while job.state not in (types.JobState.JOB_STATE_SUCCEEDED, types.JobState.JOB_STATE_FAILED):
            time.sleep(0.2)
            job = vertex.batches.get(name=job.name or "")
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED, job.error
    table = client().get_table(f"{PROJECT}.embedbq.vectors")
    assert [f.name for f in table.schema] == ["id", "content", "task_type", "predictions", "status"]
    assert [f.field_type for f in table.schema][1:] == ["STRING"] * 4
    out = {r["id"]: r for r in client().query(f"SELECT * FROM `{PROJECT}.embedbq.vectors`").result()}
    assert set(out) == {1, 2, 3} and out[1]["content"] == "banana bread" and out[2]["task_type"] is None
    for i in (1, 2):
        [prediction] = json.loads(out[i]["predictions"])
        embedding = prediction["embeddings"]
        assert out[i]["status"] == "" and len(embedding["values"]) == 768  # text-embedding-005's default size
        assert embedding["statistics"]["token_count"] > 0 and embedding["statistics"]["truncated"] is False
    assert out[1]["predictions"] != out[2]["predictions"]
    assert out[3]["predictions"] is None and "content" in out[3]["status"]
