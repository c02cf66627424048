"""The REST surface: which path and method reach which engine call, and the reply each gets.

Paths carry any of Google's version prefixes (`/v1`, `/v1beta`, `/v1alpha`, `/v1beta1`); uploads arrive under
`/upload/{version}/files`. Route functions see a `Call` (parsed request) and return a `Reply`; all socket work
stays in `http.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator.engine import Emulator
from batchflow.emulator.gemini.files import Readable
from batchflow.emulator.jobs.store import page_size
from batchflow.emulator.model import catalog, media
from batchflow.emulator.vertex import routes as vertex
from batchflow.emulator.wire.errors import ApiError, invalid_argument, not_found

_PREFIX = re.compile(r"^/(?:(?P<upload>upload)/)?(?P<version>v1|v1beta|v1alpha|v1beta1)/(?P<rest>.+)$")
_DEFAULT_PAGE, _MAX_PAGE = 50, 1000


@dataclass
class Call:
    """One parsed HTTP request, as route functions see it."""

    engine: Emulator
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    base_url: str  # scheme://host:port the client used
    version: str
    body: bytes = b""
    stream: Readable | None = None  # the unread body, for upload chunks only
    length: int = 0

    def read_body(self) -> None:
        """Read a streamed body into `body` (small bodies only)."""
        if self.stream is not None and self.length:
            self.body, self.length = self.stream.read(self.length), 0

    def json(self) -> Any:
        """The body as JSON ({} when empty); 400 when it is not JSON."""
        if not self.body.strip():
            return {}
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise invalid_argument(f"Invalid JSON payload received. {exc}") from None


@dataclass
class Reply:
    """What to answer: a JSON body, raw bytes, or a file streamed from disk."""

    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    content_type: str = "application/json; charset=UTF-8"


RouteFn = Callable[[Call], Reply]


@dataclass(frozen=True)
class Route:
    """A method and path pattern, the endpoint name it counts under, and its function."""

    method: str
    upload: bool
    pattern: re.Pattern[str]
    endpoint: str
    fn: RouteFn
    streams_body: bool = False


def match(method: str, path: str) -> tuple[Route, dict[str, str], str] | None:
    """The route for a request path, its path parameters and the API version; None when none matches."""
    if path == "/_emulator/stats" and method == "GET":
        return STATS, {}, ""
    if path == "/_emulator/age_files" and method == "POST":
        return AGE_FILES, {}, ""
    prefix = _PREFIX.match(path)
    if prefix is None:
        return None
    for route in ROUTES:
        if route.method == method and route.upload == bool(prefix["upload"]):
            found = route.pattern.fullmatch(prefix["rest"])
            if found:
                return route, found.groupdict(), prefix["version"]
    return None


# -- files ---------------------------------------------------------------------------------------------------

def upload(call: Call) -> Reply:
    """Start a resumable upload, or take one of its chunks (`upload_id` in the query)."""
    upload_id = call.query.get("upload_id")
    if upload_id is None:
        call.read_body()
        return _upload_start(call)
    try:
        return _upload_chunk(call, upload_id)
    except ApiError as exc:
        # "final" tells the SDK the upload is over, so it raises this error instead of retrying the chunk
        return Reply(exc.code, exc.body(), {"X-Goog-Upload-Status": "final"})


def _upload_start(call: Call) -> Reply:
    if call.headers.get("x-goog-upload-command", "start").strip().lower() != "start":
        raise invalid_argument("X-Goog-Upload-Command must be 'start' without an upload_id")
    upload_id = call.engine.files.start_upload(call.json(), call.headers.get("x-goog-upload-header-content-type"),
                                               call.headers.get("x-goog-upload-header-content-length"))
    url = f"{call.base_url}/upload/{call.version}/files?upload_id={upload_id}&upload_protocol=resumable"
    return Reply(headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active",
                          "X-Goog-Upload-Chunk-Granularity": "8388608"})


def _upload_chunk(call: Call, upload_id: str) -> Reply:
    files = call.engine.files
    commands = {c.strip().lower() for c in call.headers.get("x-goog-upload-command", "").split(",")}
    received = files.received(upload_id)
    if "upload" in commands and call.stream is not None:
        offset = call.headers.get("x-goog-upload-offset", str(received))
        if not offset.isdigit():
            raise invalid_argument(f"Invalid X-Goog-Upload-Offset: {offset!r}")
        received = files.receive(upload_id, int(offset), call.stream, call.length)
        call.length = 0  # consumed
    if "finalize" in commands:
        record = files.finalize(upload_id)
        return Reply(json={"file": record.resource(call.base_url)}, headers={"X-Goog-Upload-Status": "final"})
    return Reply(headers={"X-Goog-Upload-Status": "active", "X-Goog-Upload-Size-Received": str(received)})


def get_file(call: Call) -> Reply:
    """GET files/ID."""
    call.engine.settle_file(call.params["id"])
    return Reply(json=call.engine.files.get(call.params["id"]).resource(call.base_url))


def register_files(call: Call) -> Reply:
    """POST files:register {"uris": [gs://...]}: Cloud Storage objects registered as Files API files (the
    caller's OAuth token is not checked; the objects are read from the GCS emulator)."""
    body = call.json()
    uris = body.get("uris") if isinstance(body, dict) else None
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u.startswith("gs://") for u in uris):
        raise invalid_argument("uris: one or more gs:// URIs are required")
    files = call.engine.files
    return Reply(json={"files": [files.register(uri, media.read_gcs(uri)).resource(call.base_url) for uri in uris]})


def list_files(call: Call) -> Reply:
    """GET files?pageSize&pageToken."""
    size = page_size(call.query.get("pageSize"), _DEFAULT_PAGE, _MAX_PAGE)
    call.engine.settle_files()
    records, token = call.engine.files.list(size, call.query.get("pageToken"))
    body: dict[str, Any] = {"files": [r.resource(call.base_url) for r in records]} if records else {}
    if token:
        body["nextPageToken"] = token
    return Reply(json=body)


def delete_file(call: Call) -> Reply:
    """DELETE files/ID."""
    call.engine.files.delete(call.params["id"])
    return Reply(json={})


def download_file(call: Call) -> Reply:
    """GET files/ID:download?alt=media: the raw bytes, streamed from disk."""
    files = call.engine.files
    call.engine.settle_file(call.params["id"])
    record = files.get(call.params["id"])
    return Reply(file=files.data_path(record.id), content_type=record.mime_type)


# -- batches -------------------------------------------------------------------------------------------------

def create_batch(call: Call) -> Reply:
    """POST models/M:batchGenerateContent (404 for a model that takes no such batch)."""
    model = catalog.check_gemini_batch("generate", call.params["model"], call.version)
    return Reply(json=call.engine.create_batch("generate", model, call.json()))


def create_embed_batch(call: Call) -> Reply:
    """POST models/M:asyncBatchEmbedContent (404 for a model that takes no such batch)."""
    model = catalog.check_gemini_batch("embed", call.params["model"], call.version)
    return Reply(json=call.engine.create_batch("embed", model, call.json()))


def get_batch(call: Call) -> Reply:
    """GET batches/ID."""
    return Reply(json=call.engine.get_batch(call.params["id"]))


def list_batches(call: Call) -> Reply:
    """GET batches?pageSize&pageToken."""
    size = page_size(call.query.get("pageSize"), _DEFAULT_PAGE, _MAX_PAGE)
    return Reply(json=call.engine.list_batches(size, call.query.get("pageToken")))


def cancel_batch(call: Call) -> Reply:
    """POST batches/ID:cancel."""
    return Reply(json=call.engine.cancel_batch(call.params["id"]))


def delete_batch(call: Call) -> Reply:
    """DELETE batches/ID."""
    return Reply(json=call.engine.delete_batch(call.params["id"]))


# -- models --------------------------------------------------------------------------------------------------

def get_model(call: Call) -> Reply:
    """GET models/M (Gemini Developer API)."""
    return Reply(json=catalog.get_gemini(call.params["model"], call.version))


def list_models(call: Call) -> Reply:
    """GET models?pageSize&pageToken (Gemini Developer API)."""
    size = page_size(call.query.get("pageSize"), _DEFAULT_PAGE, _MAX_PAGE)
    return Reply(json=catalog.list_gemini(size, call.query.get("pageToken")))


def get_publisher_model(call: Call) -> Reply:
    """GET publishers/P/models/M (Vertex AI)."""
    return Reply(json=catalog.get_vertex(call.params["publisher"], call.params["model"]))


def list_publisher_models(call: Call) -> Reply:
    """GET publishers/P/models?pageSize&pageToken (Vertex AI)."""
    size = page_size(call.query.get("pageSize"), _DEFAULT_PAGE, _MAX_PAGE)
    return Reply(json=catalog.list_vertex(call.params["publisher"], size, call.query.get("pageToken")))


def stats(call: Call) -> Reply:
    """GET /_emulator/stats: counters for tests and harnesses (not a Google endpoint)."""
    return Reply(json=call.engine.stats())


def age_files(call: Call) -> Reply:
    """POST /_emulator/age_files?seconds=N: every file uploaded N seconds earlier, so that a test lets the Files
    API's 48 hours go by between two runs (not a Google endpoint)."""
    try:
        seconds = float(call.query.get("seconds", ""))
    except ValueError:
        raise invalid_argument("age_files takes ?seconds=N") from None
    return Reply(json={"files": call.engine.files.age(seconds)})


def unknown(call: Call) -> Reply:
    """Anything else: 404 in Google's shape."""
    raise not_found("The requested URL was not found on this server.")


_ID = r"(?P<id>[A-Za-z0-9_-]+)"
_MODEL = r"(?P<model>[^/:]+)"
_PUBLISHER = r"publishers/(?P<publisher>[^/:]+)/models"
ROUTES: tuple[Route, ...] = (
    Route("POST", True, re.compile(r"files"), "files.upload", upload, streams_body=True),
    Route("GET", False, re.compile(rf"files/{_ID}:download"), "files.download", download_file),
    Route("GET", False, re.compile(rf"files/{_ID}"), "files.get", get_file),
    Route("GET", False, re.compile(r"files"), "files.list", list_files),
    Route("POST", False, re.compile(r"files:register"), "files.register", register_files),
    Route("DELETE", False, re.compile(rf"files/{_ID}"), "files.delete", delete_file),
    Route("POST", False, re.compile(rf"models/{_MODEL}:batchGenerateContent"), "batches.create",
          create_batch),
    Route("POST", False, re.compile(rf"models/{_MODEL}:asyncBatchEmbedContent"),
          "batches.create_embeddings", create_embed_batch),
    Route("GET", False, re.compile(rf"batches/{_ID}"), "batches.get", get_batch),
    Route("GET", False, re.compile(r"batches"), "batches.list", list_batches),
    Route("POST", False, re.compile(rf"batches/{_ID}:cancel"), "batches.cancel", cancel_batch),
    Route("DELETE", False, re.compile(rf"batches/{_ID}"), "batches.delete", delete_batch),
    Route("GET", False, re.compile(rf"models/{_MODEL}"), "models.get", get_model),
    Route("GET", False, re.compile(r"models"), "models.list", list_models),
    Route("GET", False, re.compile(rf"{_PUBLISHER}/{_MODEL}"), "vertex.publishers.models.get", get_publisher_model),
    Route("GET", False, re.compile(_PUBLISHER), "vertex.publishers.models.list", list_publisher_models),
)


def _vertex(handler: vertex.Handler) -> RouteFn:
    return lambda call: Reply(json=handler(call.engine.vertex, call.params, call.query, call.json()))


ROUTES += tuple(Route(m, False, re.compile(p), e, _vertex(h)) for m, p, e, h in vertex.ROUTES)
STATS = Route("GET", False, re.compile(r""), "emulator.stats", stats)
AGE_FILES = Route("POST", False, re.compile(r""), "emulator.age_files", age_files)
UNKNOWN = Route("*", False, re.compile(r""), "unknown", unknown)
