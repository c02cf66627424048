"""Vertex AI through google-genai (``vertexai=True``): shards staged as JSONL on GCS, results read from GCS.

Vertex's JSONL has no key field and its output comes back in any order, split over several files
(API_NOTES.md). So the key travels in the request's ``labels`` (hashed when it breaks label rules), with a
hash of the request as the second way; an embedding instance is matched by a hash of the instance. A line that
matches no request the job sent is refused by ``collect``: never a silent misalignment, never a match by position.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batchflow.backends import JobInfo, Result
from batchflow.backends.gemini import line_error
from batchflow.backends.sdk import SdkBackend, api_errors
from batchflow.errors import BackendError, OutputMissing, SpecError
from batchflow.spec import Spec
from batchflow.storage import url_to_fs

KEY_LABEL = "batchflow_key"
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{1,63}$")
_HASHED = "bfh-"


def key_label(key: str) -> str:
    """The label value that carries a key: the key itself when Vertex's label rules allow it, else a hash."""
    if _LABEL_VALUE.match(key) and not key.startswith(_HASHED):
        return key
    return _HASHED + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


_INSTANCE_FIELDS = (("task_type", "taskType"), ("title", "title"))


def embed_instance(request: dict[str, Any]) -> dict[str, Any]:
    """A Gemini embed request -> Vertex's text-embedding instance ``{"content": "…", "task_type", "title"}``.

    The embedding's size is not an instance field: it is the job's ``modelParameters.outputDimensionality``
    (``job_parameters``). Google's batch text-embeddings page shows instances of ``content`` alone
    (https://cloud.google.com/vertex-ai/generative-ai/docs/embeddings/batch-prediction-genai-embeddings); the
    online API takes ``task_type``/``title`` per instance and ``outputDimensionality`` in ``parameters``, and
    ``PredictSchemata`` says the parameters schema describes "PredictRequest.parameters, ExplainRequest.parameters
    and BatchPredictionJob.model_parameters" (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/PredictSchemata).
    """
    parts = (request.get("content") or {}).get("parts") or []
    instance: dict[str, Any] = {"content": "".join(str(p.get("text", "")) for p in parts)}
    for name, wire in _INSTANCE_FIELDS:
        if wire in request:  # the request line is in the SDK's wire form (request_json): camelCase
            instance[name] = request[wire]
    return instance


def job_parameters(spec: Spec) -> dict[str, Any] | None:
    """A Vertex embedding job's ``modelParameters``: the spec's ``embed_config.output_dimensionality`` (one number
    for every instance: ``templating`` refuses a template there on Vertex)."""
    dims = (spec.embed_config or {}).get("output_dimensionality") if spec.task == "embed" else None
    return {"outputDimensionality": int(dims)} if dims is not None else None


class VertexBackend(SdkBackend):
    """Inputs under ``backend.staging/<spec>/<job>/input.jsonl``; each job writes under ``…/<job>/output``."""

    def __init__(self, client: Any, staging: str, task: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(client)
        self.staging = staging.rstrip("/")
        self.task = task
        self.parameters = parameters

    @classmethod
    def from_spec(cls, spec: Spec) -> VertexBackend:
        if not spec.backend.staging:
            raise SpecError(f"{spec.where('backend')}: backend: vertex needs staging (gs://bucket/prefix)")
        return cls(vertex_client(spec), f"{spec.backend.staging}/{spec.name}", spec.task, job_parameters(spec))

    def stage(self, path: Path, display_name: str) -> str:
        uri = f"{self.staging}/{display_name}/input.jsonl"
        fs, target = url_to_fs(uri)
        convert = _embed_line if self.task == "embed" else _labelled
        try:
            with open(path, "rb") as src, fs.open(target, "wb") as dst:
                for line in src:
                    item = orjson.loads(line)
                    dst.write(orjson.dumps(convert(item["request"], str(item["key"])),
                                           option=orjson.OPT_APPEND_NEWLINE))
        except OSError as exc:
            raise BackendError(f"stage {uri}: {exc}") from exc
        return uri

    def create(self, model: str, task: str, staged: str, display_name: str) -> JobInfo:
        from google.genai import types

        dest = staged.rsplit("/", 1)[0] + "/output"
        # google-genai has no field of its own for a job's modelParameters: they go in the body as they are
        extra = types.HttpOptions(extra_body={"modelParameters": self.parameters}) if self.parameters else None
        config = types.CreateBatchJobConfig(display_name=display_name, dest=dest, http_options=extra)
        with api_errors(f"create {display_name}"):
            return self._info(self.client.batches.create(model=model, src=staged, config=config))

    def results(self, job: JobInfo, workdir: Path, sent: Path) -> Iterator[Result]:
        if not job.output:
            if job.status == "succeeded":
                raise OutputMissing(f"job {job.name} succeeded but names no output directory yet")
            return
        matcher = _Matcher(sent, self.task)
        fs, directory = url_to_fs(job.output)
        fs.invalidate_cache(directory)  # a late output appears between two looks: never a cached listing
        files = sorted(fs.glob(f"{directory}/predictions*.jsonl"))
        if not files and job.status == "succeeded":
            raise OutputMissing(f"job {job.name}: no predictions files under {job.output}")
        for name in files:
            # a remote file's own readline makes many small reads: ~400x slower than a local buffer over it
            with fs.open(name, "rb") as remote, io.BufferedReader(remote, 1 << 20) as fh:
                for line in fh:
                    if line.strip():
                        yield matcher.result(orjson.loads(line))

    def _output(self, job: Any) -> str | None:
        info = job.output_info
        return info.gcs_output_directory if info is not None else None

    def _find_filter(self, display_name: str) -> str | None:
        return f'display_name="{display_name}"'


def _embed_line(request: dict[str, Any], key: str) -> dict[str, Any]:
    return embed_instance(request)


def _labelled(request: dict[str, Any], key: str) -> dict[str, Any]:
    return {"request": {**request, "labels": {**(request.get("labels") or {}), KEY_LABEL: key_label(key)}}}


class _Matcher:
    """Finds the key of an output line: by label, else by a hash of what was sent (equal inputs, any of them)."""

    def __init__(self, sent: Path, task: str) -> None:
        self.task = task
        self.by_label: dict[str, str] = {}
        self.by_digest: dict[bytes, list[str]] = defaultdict(list)
        with open(sent, "rb") as fh:
            for line in fh:
                item = orjson.loads(line)
                key = str(item["key"])
                if task == "embed":
                    self.by_digest[_digest(embed_instance(item["request"]))].append(key)
                else:
                    self.by_label[key_label(key)] = key
                    self.by_digest[_digest(item["request"])].append(key)

    def result(self, line: dict[str, Any]) -> Result:
        error = line_error(line.get("status"))
        if self.task == "embed":
            key = self._pop(line.get("instance"))
            predictions = line.get("predictions") or [{}]
            values = (predictions[0].get("embeddings") or {}).get("values")
            return Result(key, None if error else {"embedding": {"values": values}}, error)
        request = dict(line.get("request") or {})
        labels = dict(request.get("labels") or {})
        key = self.by_label.get(labels.pop(KEY_LABEL, ""))
        if key is None:
            if labels:
                request["labels"] = labels
            else:
                request.pop("labels", None)
            key = self._pop(request)
        return Result(key, None if error else line.get("response"), error)

    def _pop(self, sent: Any) -> str | None:
        keys = self.by_digest.get(_digest(sent))
        return keys.pop() if keys else None


def vertex_client(spec: Spec) -> Any:
    """The spec's Vertex client; a base URL (``backend.base_url`` or, as google-genai itself reads it,
    ``GOOGLE_VERTEX_BASE_URL``) means a stand-in, reached with a fixed token."""
    b = spec.backend
    if not (b.project and b.location):
        raise SpecError(f"{spec.where('backend')}: backend: vertex needs project and location")
    return make_vertex_client(b.project, b.location, b.base_url or os.environ.get("GOOGLE_VERTEX_BASE_URL"))


def make_vertex_client(project: str, location: str, base_url: str | None) -> Any:
    """A google-genai client for Vertex AI; Application Default Credentials, or a fixed token for an emulator."""
    from google import genai
    from google.genai import types

    if base_url is None:
        return genai.Client(vertexai=True, project=project, location=location)
    import google.oauth2.credentials

    return genai.Client(vertexai=True, project=project, location=location,
                        credentials=google.oauth2.credentials.Credentials(token="emulator"),  # type: ignore[no-untyped-call]
                        http_options=types.HttpOptions(base_url=base_url))
