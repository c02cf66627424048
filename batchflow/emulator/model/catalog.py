"""The models the emulator serves: `models.get` / `models.list` on both surfaces, and the model check at create.

The list is batchflow's own table (`batchflow/spec/models.py`): every batch-capable model plus the few the services list
that take no batch jobs, so a client can be tested refusing them. The Gemini Developer API answers with `Model`
resources (`models/x`, `supportedGenerationMethods`), Vertex AI with `PublisherModel` resources
(`publishers/google/models/x`); google-genai reads `versionId` as the version of the latter.
"""

from __future__ import annotations

from typing import Any

from batchflow.emulator.jobs.store import page_token, parse_page_token
from batchflow.emulator.wire.errors import ApiError, invalid_argument, not_found
from batchflow.spec import models

# what the Gemini API lists under supportedGenerationMethods, per task of the table
_METHODS = {
    "generate": ("generateContent", "countTokens", "batchGenerateContent"),
    "embed": ("embedContent", "countTokens", "asyncBatchEmbedContent"),
    "live": ("bidiGenerateContent", "countTokens"),
}
_BATCH_METHODS = {"generate": "batchGenerateContent", "embed": "asyncBatchEmbedContent"}
_VERSION = "001"


def gemini_model(model: models.Model) -> dict[str, Any]:
    """The Gemini API's `Model` resource for a table entry."""
    body: dict[str, Any] = {
        "name": f"models/{model.name}", "baseModelId": model.name, "version": _VERSION,
        "displayName": _display_name(model.name), "description": f"{_display_name(model.name)} (emulated)",
        "inputTokenLimit": model.input_tokens, "outputTokenLimit": model.output_tokens,
        "supportedGenerationMethods": list(_METHODS[model.task]),
    }
    if model.task != "embed":
        body.update(temperature=1, maxTemperature=2, topP=0.95, topK=64, thinking=model.thinks)
    return body


def vertex_model(model: models.Model) -> dict[str, Any]:
    """Vertex AI's `PublisherModel` resource for a table entry."""
    return {"name": f"publishers/google/models/{model.name}", "versionId": _VERSION,
            "openSourceCategory": "PROPRIETARY", "launchStage": "PUBLIC_PREVIEW" if "preview" in model.name else "GA"}


def get_gemini(name: str, version: str) -> dict[str, Any]:
    """GET models/M; 404 in the service's words for a model it does not list."""
    model = models.listed_named(name, "gemini")
    if model is None:
        raise gemini_not_found(name, version, "get")
    return gemini_model(model)


def list_gemini(size: int, token: str | None) -> dict[str, Any]:
    """GET models?pageSize&pageToken: `{"models": [...], "nextPageToken"?}`."""
    return _page("models", [gemini_model(m) for m in models.listed("gemini")], size, token)


def get_vertex(publisher: str, name: str) -> dict[str, Any]:
    """GET publishers/P/models/M; 404 unless Google publishes that model."""
    model = models.listed_named(name, "vertex") if publisher == "google" else None
    if model is None:
        raise not_found(f"Publisher Model `publishers/{publisher}/models/{models.bare(name)}` not found.")
    return vertex_model(model)


def list_vertex(publisher: str, size: int, token: str | None) -> dict[str, Any]:
    """GET publishers/P/models: `{"publisherModels": [...], "nextPageToken"?}`."""
    listed = models.listed("vertex") if publisher == "google" else []
    return _page("publisherModels", [vertex_model(m) for m in listed], size, token)


def check_gemini_batch(kind: str, name: str, version: str) -> str:
    """The `models/M` name of a Gemini batch's model; 404 when the model is unknown or takes no batch of `kind`.

    The service answers both cases with one 404 NOT_FOUND ("... is not found for API version v1beta, or is not
    supported for batchGenerateContent"), the wording of its ListModels hint.
    """
    model = models.listed_named(name, "gemini")
    if model is None or model.task != kind:
        raise gemini_not_found(name, version, _BATCH_METHODS[kind])
    return f"models/{model.name}"


def check_vertex_batch(name: str, project: str, location: str, bigquery: bool = False) -> None:
    """Refuse a Vertex batch prediction job on a model Google does not publish (404) or that takes no batch (400).

    The 400 is what the service answered for a published model without batch support ("Do not support publisher
    model gemini-2.5-flash-preview-04-17", INVALID_ARGUMENT, python-genai #704). A Gemini embedding model is
    published only in its own locations (elsewhere: the same 404) and reads no BigQuery table (400).
    """
    publisher = _publisher(name)
    model = models.listed_named(name, "vertex") if publisher == "google" else None
    places = model.embedding.vertex_locations if model is not None and model.embedding is not None else None
    if model is None or (places is not None and location not in places):
        raise not_found(f"Publisher Model `projects/{project}/locations/{location}/publishers/{publisher}/models/"
                        f"{models.bare(name)}` was not found or your project does not have access to it.")
    if model.task not in _BATCH_METHODS:
        raise invalid_argument(f"Do not support publisher model {model.name}")
    if bigquery and model.embedding is not None and not model.embedding.vertex_bigquery:
        raise invalid_argument(f"BigQuery input is not supported for {model.name}: batch jobs of Gemini embedding "
                               "models read and write JSONL files on Cloud Storage only.")


def gemini_not_found(name: str, version: str, method: str) -> ApiError:
    """The Gemini API's 404 for a model it does not list, or that does not support `method`."""
    return not_found(f"models/{models.bare(name)} is not found for API version {version or 'v1beta'}, or is not "
                     f"supported for {method}. Call ListModels to see the list of available models and their "
                     "supported methods.")


def _publisher(name: str) -> str:
    parts = name.split("/")
    return parts[parts.index("publishers") + 1] if "publishers" in parts[:-1] else "google"


def _page(key: str, items: list[dict[str, Any]], size: int, token: str | None) -> dict[str, Any]:
    start = parse_page_token(token) or 0
    page = items[start:start + size]
    body: dict[str, Any] = {key: page} if page else {}  # proto3 JSON omits an empty repeated field
    if start + size < len(items):
        body["nextPageToken"] = page_token(start + size)
    return body


def _display_name(name: str) -> str:
    """`gemini-2.5-flash-lite` -> `Gemini 2.5 Flash Lite`."""
    return " ".join(word.capitalize() if word.isalpha() else word for word in name.split("-"))
