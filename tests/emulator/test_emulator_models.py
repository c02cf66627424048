"""The emulator's models endpoints and its model check at create, driven by the real google-genai SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import errors, types
from support.emulator_helpers import http_json

from batchflow.emulator import RunningEmulator, start_in_thread
from batchflow.spec import models

LIVE = "gemini-2.0-flash-live-001"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    with start_in_thread(tmp_path_factory.mktemp("emu")) as running:
        yield running


@pytest.fixture
def gemini(emulator: RunningEmulator) -> genai.Client:
    return genai.Client(api_key="test", http_options=types.HttpOptions(base_url=emulator.base_url))


@pytest.fixture
def vertex(emulator: RunningEmulator) -> genai.Client:
    return genai.Client(vertexai=True, project="proj", location="us-central1",
                        credentials=google.oauth2.credentials.Credentials(token="fake"),
                        http_options=types.HttpOptions(base_url=emulator.base_url))


def test_gemini_models_get_reads_the_table(gemini: genai.Client) -> None:
    model = gemini.models.get(model="gemini-2.5-flash")
    assert (model.name, model.version, model.input_token_limit, model.output_token_limit, model.thinking) == (
        "models/gemini-2.5-flash", "001", 1_048_576, 65_536, True)
    assert model.supported_actions == ["generateContent", "countTokens", "batchGenerateContent"]
    embed = gemini.models.get(model="models/gemini-embedding-001")
    assert embed.supported_actions == ["embedContent", "countTokens", "asyncBatchEmbedContent"]


def test_gemini_models_list_pages_through_every_listed_model(gemini: genai.Client) -> None:
    names = [m.name for m in gemini.models.list(config={"page_size": 3})]
    assert names == [f"models/{m.name}" for m in models.listed("gemini")]
    assert f"models/{LIVE}" in names and "models/text-embedding-005" not in names


def test_gemini_models_get_unknown_is_404_in_googles_shape(emulator: RunningEmulator) -> None:
    status, body = http_json("GET", f"{emulator.base_url}/v1beta/models/gemini-9-ultra")
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    assert body["error"]["message"].startswith("models/gemini-9-ultra is not found for API version v1beta")


def test_vertex_models_get_and_list_publisher_models(vertex: genai.Client) -> None:
    model = vertex.models.get(model="text-embedding-005")
    assert (model.name, model.version) == ("publishers/google/models/text-embedding-005", "001")
    names = [m.name for m in vertex.models.list()]
    assert names == [f"publishers/google/models/{m.name}" for m in models.listed("vertex")]
    with pytest.raises(errors.ClientError) as caught:
        vertex.models.get(model="gemini-9-ultra")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"


@pytest.mark.parametrize(("model", "method"), [("gemini-9-ultra", "batchGenerateContent"),
                                               (LIVE, "batchGenerateContent"),
                                               ("gemini-embedding-001", "batchGenerateContent")])
def test_gemini_batch_on_a_model_without_that_batch_is_404(gemini: genai.Client, model: str, method: str) -> None:
    with pytest.raises(errors.ClientError) as caught:
        gemini.batches.create(model=model, src=[types.InlinedRequest(contents="x")])
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
    assert f"is not supported for {method}" in str(caught.value.message)


def test_gemini_embed_batch_on_a_generate_model_is_404(emulator: RunningEmulator) -> None:
    body = {"batch": {"inputConfig": {"requests": {"requests": [
        {"request": {"content": {"parts": [{"text": "x"}]}}}]}}}}
    status, reply = http_json("POST", f"{emulator.base_url}/v1beta/models/gemini-2.5-flash:asyncBatchEmbedContent",
                              json.dumps(body).encode())
    assert status == 404 and "asyncBatchEmbedContent" in reply["error"]["message"]


@pytest.mark.parametrize(("model", "code"), [("gemini-9-ultra", 404), (LIVE, 400),
                                             ("publishers/acme/models/gemini-2.5-flash", 404)])
def test_vertex_batch_on_an_unknown_or_non_batch_model_is_refused(emulator: RunningEmulator, model: str,
                                                                  code: int) -> None:
    name = model if "/" in model else f"publishers/google/models/{model}"
    body = {"displayName": "x", "model": name,
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://bkt/in.jsonl"]}},
            "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": "gs://bkt/out"}}}
    status, reply = http_json("POST", f"{emulator.base_url}/v1beta1/projects/p/locations/l/batchPredictionJobs",
                              json.dumps(body).encode())
    assert status == code, reply


def test_models_table_keeps_non_batch_models_out_of_known() -> None:
    assert models.known(LIVE, "gemini", "generate") is None
    assert models.listed_named(f"models/{LIVE}", "gemini") is not None
    assert models.listed_named("text-embedding-005", "gemini") is None


def test_raw_models_list_pages_with_a_token(emulator: RunningEmulator) -> None:
    status, body = http_json("GET", f"{emulator.base_url}/v1beta/models?pageSize=2")
    assert status == 200 and len(body["models"]) == 2 and body["nextPageToken"]
    token = body["nextPageToken"]
    status, rest = http_json("GET", f"{emulator.base_url}/v1beta/models?pageSize=1000&pageToken={token}")
    assert len(body["models"]) + len(rest["models"]) == len(models.listed("gemini")) and "nextPageToken" not in rest
