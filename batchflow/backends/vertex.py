"""Vertex AI through google-genai (``vertexai=True``): shards staged as JSONL on GCS, results read from GCS.

Vertex's JSONL has no key field and its output comes back in any order, split over several files
(docs/google-apis.md, "JSONL formats"), echoing each request re-serialised (``canonical``). So an output line is
matched by the digest of its request's canonical form, and identical requests of a job are staged once: their one
answer (one charge) goes to every key that asked. An embedding instance is matched the same way. A line that matches no
request the job sent is refused by ``collect``: never a silent misalignment, never a match by position.

Embeddings take one of two lines, by the model's family (``models.embedding_of``): the legacy text-embedding instance
``{"content": "...", "task_type", "title"}`` (text-embedding-005 ...), or the Gemini embedding request
``{"key": K, "request": {"content": {"parts": [...]}, "embed_content_config": {...}}}`` (gemini-embedding-001, -2),
whose output lines carry ``response.embedding.values``. Such a line carries its key, so its answer is matched by
the key it echoes, and by its request's digest when it echoes none.

The key goes in the request's ``labels`` only when the spec asks (``backend.key_labels``). Google's page on custom
metadata labels (https://docs.cloud.google.com/gemini-enterprise-agent-platform/models/capabilities/
add-labels-to-api-calls?hl=ja, "ラベルの要件"; cited in BerriAI/litellm #14044) says:
"各ラベルキーには、関連付けられた請求先アカウントの有効期間にわたって、すべてのリクエストで最大 1,000 個の一意の値を
設定できます。1,000 個を超える一意の値が関連付けられている場合、ラベルキーは予告なく削除されることがあります。"
(each label key may have at most 1,000 unique values over the billing account's lifetime; beyond that the key may
be deleted without notice). A key per record passes that in one job.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from batchflow.backends.base import JobInfo, MediaStaging, Result, Stored
from batchflow.backends.gemini import line_error
from batchflow.backends.sdk import SdkBackend, api_errors
from batchflow.backends.vertex_media import VertexMedia, for_vertex, media_root, names_media
from batchflow.errors import BackendError, OutputMissing, SpecError
from batchflow.libs.deadlines import Deadlines, deadlines, genai_http_options, genai_once
from batchflow.libs.storage import call_bound, open_read, remote, upload_when_done, url_to_fs
from batchflow.request.canonical import canonical, canonical_request
from batchflow.spec import models
from batchflow.spec.spec import Spec

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


def _line_identity(line: dict[str, Any]) -> tuple[bytes, bytes]:
    """A staged or echoed line's (match digest, line digest): the first, of its canonical request without
    ``labels`` (whether the service echoes labels is not documented), finds the requests it may answer; the
    second, with them, tells apart requests that differ only in labels (each staged once)."""
    if "request" not in line:  # an embedding instance
        digest = _digest(canonical(line))
        return digest, digest
    if isinstance(line["request"], dict) and "content" in line["request"]:  # a Gemini embedding request
        digest = _digest(canonical(line["request"]))
        return digest, digest
    request = canonical_request(line["request"] if isinstance(line["request"], dict) else {})
    labels = request.pop("labels", None)
    match = _digest(request)
    return match, _digest([match.hex(), labels]) if labels else match


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


def embed_request(request: dict[str, Any]) -> dict[str, Any]:
    """A Gemini embed request (wire form) -> Vertex's Gemini embedding request: ``content`` and, beside it,
    ``embed_content_config`` with the options in the documented snake_case (``output_dimensionality``,
    ``task_type``, ``title``, ``auto_truncate``)."""
    out: dict[str, Any] = {"content": request.get("content")}
    config = {_SNAKE.get(k, k): v for k, v in request.items() if k != "content"}
    if config:
        out["embed_content_config"] = config
    return out


_SNAKE = {"outputDimensionality": "output_dimensionality", "taskType": "task_type", "autoTruncate": "auto_truncate"}


def job_parameters(spec: Spec) -> dict[str, Any] | None:
    """A Vertex embedding job's ``modelParameters``: the spec's ``embed_config.output_dimensionality`` (one number
    for every instance: ``templating`` refuses a template there on Vertex)."""
    if spec.task != "embed" or embed_format(spec) != "instance":
        return None
    dims = (spec.embed_config or {}).get("output_dimensionality")
    return {"outputDimensionality": int(dims)} if dims is not None else None


def embed_format(spec: Spec) -> str | None:
    """The line a spec's embeddings take on Vertex: ``instance`` (legacy) or ``request`` (Gemini embedding)."""
    return models.embedding_of(spec.model).format if spec.task == "embed" else None


class VertexBackend(SdkBackend):
    """Inputs under ``backend.staging/<spec>/<job>/input.jsonl``; each job writes under ``…/<job>/output``."""

    def __init__(self, client: Any, staging: str, task: str, parameters: dict[str, Any] | None = None,
                 key_labels: bool = False, embed_format: str | None = "instance",
                 media_staging: str | None = None, limits: Deadlines | None = None) -> None:
        super().__init__(client, limits)
        self.staging = staging.rstrip("/")
        self.task = task
        self.parameters = parameters
        self.key_labels = key_labels
        self.lines = "generate" if task != "embed" else embed_format or "instance"  # which line each request takes
        # local media go to the staging root's media/ by content (vertex_media.py): shared by the specs staging there
        self.media = VertexMedia(media_root(media_staging or self.staging))

    @classmethod
    def from_spec(cls, spec: Spec) -> VertexBackend:
        if not spec.backend.staging:
            raise SpecError(f"{spec.where('backend')}: backend: vertex needs staging (gs://bucket/prefix)")
        return cls(vertex_client(spec), f"{spec.backend.staging}/{spec.name}", spec.task, job_parameters(spec),
                   spec.backend.key_labels, embed_format(spec), spec.backend.staging,
                   deadlines(spec.retry.call_attempts))

    def media_staging(self, contents: dict[str, tuple[str, int]]) -> MediaStaging:
        """Every local content goes to the staging root's media/ unless its object is there (one listing)."""
        return self.media.staging(contents)

    def stage(self, path: Path, display_name: str) -> str:
        uri = f"{self.staging}/{display_name}/input.jsonl"
        fs, target = url_to_fs(uri)
        try:  # written to a local file, then uploaded in one bounded call (libs/storage.py)
            with upload_when_done(fs, target, uri, "stage", limits=self.deadlines) as dst:
                for line in self._staged_lines(path, self.media.upload):
                    dst.write(line)
        except OSError as exc:
            raise BackendError(f"stage {uri}: {exc}") from exc
        return uri

    def staged_files(self, prefix: str) -> dict[str, tuple[str, int]]:
        """The staging objects under display names starting with ``prefix`` (a run killed while uploading left
        them): one listing. None is reused (an object holds the Vertex form of the lines, never the unit file's
        size): a unit's is staged again, onto the same name; the rest are deleted."""
        fs, directory = url_to_fs(self.staging)
        fs.invalidate_cache(directory)
        try:
            with remote("list", self.staging):
                found = fs.glob(f"{directory}/{prefix}*/input.jsonl", **call_bound(fs))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise BackendError(f"list {self.staging}: {exc}") from exc
        names = (path.rsplit("/", 2)[-2] for path in found)
        return {name: (f"{self.staging}/{name}/input.jsonl", -1) for name in names}

    def delete_staged(self, staged: str) -> None:
        fs, target = url_to_fs(staged)
        try:
            with remote("delete", staged):
                fs.rm(target, **call_bound(fs))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise BackendError(f"delete {staged}: {exc}") from exc

    def stored(self, spec_name: str) -> list[Stored]:
        """What this spec's jobs left under its staging prefix, in one listing: each job's request lines
        (``<job>/input.jsonl``) and its predictions (every file under ``<job>/output/``, one item that holds the
        job's answers). Media are not under the prefix (``<staging>/media/``, shared by the specs staging there:
        another spec's job may read one), so they are never among them."""
        fs, directory = url_to_fs(self.staging)
        fs.invalidate_cache(directory)
        try:
            with remote("list", self.staging):
                found: dict[str, dict[str, Any]] = fs.find(directory, detail=True, **call_bound(fs))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackendError(f"list {self.staging}: {exc}") from exc
        return _job_files(self.staging, directory, found)

    def delete_stored(self, stored: Stored) -> None:
        """One job's request lines, or every file of its predictions; what is gone already is no error."""
        fs, target = url_to_fs(stored.ref)
        try:
            with remote("delete", stored.ref):
                fs.rm(target, recursive=stored.holds_answers, **call_bound(fs))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise BackendError(f"delete {stored.ref}: {exc}") from exc

    def billed_requests(self, path: Path) -> int:
        """The lines ``stage`` would write: identical requests once, answered and billed once."""
        return sum(1 for _ in self._staged_lines(path))

    def _staged_lines(self, path: Path, upload: _Upload | None = None) -> Iterator[bytes]:
        """The job's input lines as Vertex reads them, each distinct request once; ``upload`` is given the local
        media files each line names, before the line is written."""
        seen: set[bytes] = set()
        for _, line in _vertex_lines(path, self.lines, self.key_labels, self.media.root, upload):
            _, identity = _line_identity(line)
            if identity not in seen:
                seen.add(identity)
                yield orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def create(self, model: str, task: str, staged: str, display_name: str) -> JobInfo:
        from google.genai import types

        dest = staged.rsplit("/", 1)[0] + "/output"
        # google-genai has no field of its own for a job's modelParameters: they go in the body as they are
        extra = {"extra_body": {"modelParameters": self.parameters}} if self.parameters else {}
        config = types.CreateBatchJobConfig(display_name=display_name, dest=dest,
                                            http_options=genai_once(self.deadlines, **extra))
        with _agent_refusals(f"create {display_name}"), api_errors(f"create {display_name}"):
            return self._info(self.client.batches.create(model=model, src=staged, config=config))

    def results(self, job: JobInfo, workdir: Path, sent: Path) -> Iterator[Result]:
        if not job.output:
            if job.status == "succeeded":
                raise OutputMissing(f"job {job.name} succeeded but names no output directory yet")
            return
        matcher = _Matcher(_vertex_lines(sent, self.lines, self.key_labels, self.media.root))
        fs, directory = url_to_fs(job.output)
        fs.invalidate_cache(directory)  # a late output appears between two looks: never a cached listing
        with remote("list", job.output):
            files = sorted(fs.glob(f"{directory}/predictions*.jsonl", **call_bound(fs)))
        if not files and job.status == "succeeded":
            raise OutputMissing(f"job {job.name}: no predictions files under {job.output}")
        for name in files:
            # read through a buffer of blocks (a remote file's own readline makes many small reads: ~400x slower),
            # each block one call bounded by its size (libs/storage.py), a timeout named here
            with remote("download", f"gs://{name}"), open_read(fs, name, limits=self.deadlines) as fh:
                for line in fh:
                    if line.strip():
                        yield from matcher.results(orjson.loads(line))

    def _output(self, job: Any) -> str | None:
        info = job.output_info
        return info.gcs_output_directory if info is not None else None

    def _find_filter(self, display_name: str) -> str | None:
        return f'display_name="{display_name}"'


_Upload = Callable[[list[tuple[str, str]]], None]


def _job_files(staging: str, directory: str, found: dict[str, dict[str, Any]]) -> list[Stored]:
    """A listing of the staging prefix as its jobs' request lines and predictions (``<job>/output/…`` summed into
    one item per job); anything else under the prefix is not batchflow's to name."""
    lines: list[Stored] = []
    outputs: dict[str, int] = {}
    for path, info in sorted(found.items()):
        job, _, rest = path.removeprefix(f"{directory.rstrip('/')}/").partition("/")
        size = int(info.get("size") or 0)
        if rest == "input.jsonl":
            lines.append(Stored(f"{staging}/{job}/input.jsonl", "request lines", job=job, size=size))
        elif rest.startswith("output/"):
            outputs[job] = outputs.get(job, 0) + size
    predictions = [Stored(f"{staging}/{job}/output", "predictions", job=job, size=size, holds_answers=True)
                   for job, size in outputs.items()]
    return lines + predictions


def _vertex_lines(path: Path, lines: str, key_labels: bool, media: str,
                  upload: _Upload | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, the line Vertex gets for it) for each ``{"key", "request"}`` line of a job's input; ``lines``:
    generate, instance (legacy embeddings) or request (Gemini embeddings). Media parts name their Cloud Storage
    objects under ``media`` (``vertex_media.for_vertex``), the local files among them given to ``upload``."""
    with open(path, "rb") as fh:
        for raw in fh:
            item = orjson.loads(raw)
            key, request = str(item["key"]), item["request"]
            if lines != "instance" and names_media(raw):
                files = for_vertex(request, media)
                if upload is not None and files:
                    upload(files)
            if lines == "instance":
                yield key, embed_instance(request)
            elif lines == "request":
                yield key, {"key": key, "request": embed_request(request)}
            else:
                yield key, {"request": _labelled(request, key) if key_labels else request}


def _labelled(request: dict[str, Any], key: str) -> dict[str, Any]:
    return {**request, "labels": {**(request.get("labels") or {}), KEY_LABEL: key_label(key)}}


class _Matcher:
    """The keys an output line answers: those of the staged line whose request it echoes (``_line_identity``).

    Holds every key of the job once, in groups (one per staged line), as ``collect`` holds them anyway. An echo
    without the labels it was sent with matches all requests that differ only in labels: those are the same
    request to the model, so each such line answers the next group, and the last one any repeat (which ``collect``
    then reports as a duplicate)."""

    def __init__(self, sent: Iterator[tuple[str, dict[str, Any]]]) -> None:
        self.by_line: dict[bytes, list[str]] = {}
        self.by_match: dict[bytes, list[list[str]]] = {}
        self.by_key: dict[str, list[str]] = {}  # a staged line's own key (Gemini embeddings) -> the keys it answers
        for key, line in sent:
            match, identity = _line_identity(line)
            keys = self.by_line.get(identity)
            if keys is None:
                keys = self.by_line[identity] = []
                self.by_match.setdefault(match, []).append(keys)
                if "key" in line:
                    self.by_key[key] = keys
            keys.append(key)

    def results(self, line: dict[str, Any]) -> Iterator[Result]:
        """One result per key the line answers; one with no key when it answers none."""
        error = line_error(line.get("status"))
        if "instance" in line:
            predictions = line.get("predictions") or [{}]
            values = (predictions[0].get("embeddings") or {}).get("values")
            response, echoed = None if error else {"embedding": {"values": values}}, line["instance"]
        else:
            response, echoed = None if error else line.get("response"), {"request": line.get("request")}
        keys = self.by_key.get(str(line["key"])) if "key" in line else None
        if keys is None and isinstance(echoed, dict):
            keys = self._keys(echoed)
        for key in keys or (None,):
            yield Result(key, response, error)

    def _keys(self, echoed: dict[str, Any]) -> list[str] | None:
        match, identity = _line_identity(echoed)
        keys = self.by_line.get(identity)
        if keys is not None:
            return keys
        groups = self.by_match.get(match)
        if not groups:
            return None
        return groups.pop(0) if len(groups) > 1 else groups[0]


def vertex_client(spec: Spec) -> Any:
    """The spec's Vertex client; a base URL (``backend.base_url`` or, as google-genai itself reads it,
    ``GOOGLE_VERTEX_BASE_URL``) means a stand-in, reached with a fixed token."""
    b = spec.backend
    if not (b.project and b.location):
        raise SpecError(f"{spec.where('backend')}: backend: vertex needs project and location")
    return make_vertex_client(b.project, b.location, b.base_url or os.environ.get("GOOGLE_VERTEX_BASE_URL"),
                              spec.retry.call_attempts)


def make_vertex_client(project: str, location: str, base_url: str | None, attempts: int = 3) -> Any:
    """A google-genai client for Vertex AI; Application Default Credentials, or a fixed token for an emulator;
    every call bounded (libs/deadlines.py)."""
    from google import genai

    options = genai_http_options(deadlines(attempts), base_url)
    if base_url is None:
        return genai.Client(vertexai=True, project=project, location=location, http_options=options)
    import google.oauth2.credentials

    return genai.Client(vertexai=True, project=project, location=location,
                        credentials=google.oauth2.credentials.Credentials(token="emulator"),  # type: ignore[no-untyped-call]
                        http_options=options)


# Vertex refuses a create whose input or output its service agent cannot reach, e.g. "Service account
# `service-123@gcp-sa-aiplatform.iam.gserviceaccount.com` does not have `[storage.objects.get]` IAM permission(s) to
# the bucket "b". Please either copy the files ..." (FAILED_PRECONDITION; the wording as users report it).
_AGENT_REFUSAL = re.compile(r"Service account `?(?P<agent>[\w.@-]+@gcp-sa-aiplatform\.iam\.gserviceaccount\.com)`? "
                            r"does not have `?\[?(?P<permissions>[^\]`]+)\]?`? IAM permission\(s\) to the "
                            r"(?:bucket|directory) \"?(?:gs://)?(?P<bucket>[^\"/\s]+)")


@contextmanager
def _agent_refusals(call: str) -> Iterator[None]:
    """A create refused because the job's service agent cannot read (or write) a bucket, as one line naming the
    bucket, the agent and the role to grant it; other errors pass as they are."""
    try:
        yield
    except BackendError as exc:
        found = _AGENT_REFUSAL.search(str(exc))
        if found is None:
            raise
        agent, bucket = found["agent"], found["bucket"]
        raise BackendError(
            f"{call}: Vertex AI's service agent {agent} cannot use gs://{bucket} ({found['permissions'].strip()}): "
            f"grant it roles/storage.objectUser there (the staging bucket: it reads the input and writes the "
            f"predictions; roles/storage.objectViewer is enough for a bucket it only reads media from), e.g. "
            f"gcloud storage buckets add-iam-policy-binding gs://{bucket} --member=serviceAccount:{agent} "
            f"--role=roles/storage.objectUser") from exc

