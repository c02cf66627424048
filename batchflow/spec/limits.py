"""What each backend allows per job, in one table (docs/google-apis.md, "Limits")."""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchflow.errors import SpecError
from batchflow.libs import media_info
from batchflow.spec import models
from batchflow.spec.spec import Spec

DEFAULT_MAX_REQUESTS = 30_000


@dataclass(frozen=True)
class Limits:
    max_requests: int  # requests in one job
    max_bytes: int  # bytes of one job's input file
    max_concurrent: int  # jobs in flight at once


# The Developer API has no fixed request count (its caps are enqueued tokens per tier); a file is at most 2 GB.
_GEMINI = Limits(max_requests=1_000_000, max_bytes=2_000_000_000, max_concurrent=100)

LIMITS: dict[tuple[str, str], Limits] = {
    ("gemini", "generate"): _GEMINI,
    ("gemini", "embed"): _GEMINI,
    ("local", "generate"): _GEMINI,
    ("local", "embed"): _GEMINI,
    ("vertex", "generate"): Limits(max_requests=200_000, max_bytes=1_000_000_000, max_concurrent=8),
    ("vertex", "embed"): Limits(max_requests=30_000, max_bytes=1_000_000_000, max_concurrent=8),
}


def limits_for(backend: str, task: str, model: str | None = None) -> Limits:
    """The limits of one backend and task; on Vertex an embedding model's own rows and bytes a job
    (``models.Embedding``: 1,000,000 rows and 1 GB for the Gemini embedding models, 30,000 for the legacy ones)."""
    found = LIMITS[(backend, task)]
    if backend == "vertex" and task == "embed" and model is not None:
        embedding = models.embedding_of(model)
        return Limits(embedding.vertex_rows, embedding.vertex_bytes, found.max_concurrent)
    return found


@dataclass(frozen=True)
class JobSize:
    max_requests: int
    max_bytes: int


def job_size(backend: str, task: str, max_requests: int | None, max_bytes: int | None,
             model: str | None = None) -> JobSize:
    """The spec's job size, defaulted and checked against the backend's (and model's) limits. Embeddings on Vertex
    default to their model's own rows a job: a Gemini embedding job takes 1,000,000 (5M texts: 5 jobs, not 167)."""
    lim = limits_for(backend, task, model)
    default = lim.max_requests if backend == "vertex" and task == "embed" else DEFAULT_MAX_REQUESTS
    requests = min(default, lim.max_requests) if max_requests is None else max_requests
    size = lim.max_bytes if max_bytes is None else max_bytes
    if requests > lim.max_requests:
        of = f"{model} on the {backend} backend" if model and (backend, task) == ("vertex", "embed") else \
            f"the {backend} backend"
        raise SpecError(f"jobs.max_requests: {requests:,} is above {of}'s limit of "
                        f"{lim.max_requests:,} requests per {task} job")
    if size > lim.max_bytes:
        raise SpecError(f"jobs.max_bytes: {size:,} is above the {backend} backend's limit of "
                        f"{lim.max_bytes:,} bytes per job input")
    return JobSize(requests, size)


def spec_job_size(spec: Spec) -> JobSize:
    """The spec's job size, or a SpecError naming where in the spec the size went over the limit."""
    try:
        return job_size(spec.backend.type, spec.task, spec.jobs.max_requests, spec.jobs.max_bytes, spec.model)
    except SpecError as exc:
        field = str(exc).split(":", 1)[0]
        raise SpecError(spec.at(field, str(exc))) from None


# The Gemini API's enqueued-token quota for batch jobs per model at Tier 1 (the "Rate limits" page, "Batch API"
# table, as of 2026-11): the input tokens of a project's jobs in flight per model. A create over it answers 429.
ENQUEUED_TOKENS_TIER1: dict[str, int] = {
    "gemini-3-pro-preview": 5_000_000,
    "gemini-2.5-pro": 5_000_000,
    "gemini-2.5-flash": 3_000_000,
    "gemini-2.5-flash-lite": 10_000_000,
    "gemini-2.0-flash": 10_000_000,
    "gemini-2.0-flash-lite": 10_000_000,
}


def enqueued_tokens(model: str) -> int | None:
    """The model's Tier 1 enqueued-token quota, when the table has it."""
    return ENQUEUED_TOKENS_TIER1.get(model.rsplit("/", 1)[-1])


# Media parts (images, documents, audio, video). Sources, as of 2026-12: the Gemini API's "File input methods" page
# and its "Files API" page (ai.google.dev/gemini-api/docs), Google's "Increased file size limits" post (2026-01),
# and the Gemini API's image / document / audio / video understanding pages for the MIME types.
MEDIA_FILE_MAX_BYTES = 2_000_000_000  # one file through the Files API (also a registered GCS object)
# Vertex AI's own caps a file, by type, for media a batch line names on Cloud Storage (the Gemini 2.5 models; Vertex
# "Image understanding": 30 MB a file from Cloud Storage; "Document understanding": 50 MB a PDF or text file for the
# API or Cloud Storage imports; read 2026-12-07; the newest models' pages give more, up to 2 GiB minus 500 KiB, so
# these are the floor). Video and audio are capped by length there (about 45 min of video with audio, 1 h without),
# not by bytes. MB read as MiB: a file between the two is left to the service rather than refused here.
MEDIA_TYPE_MAX_BYTES: dict[str, tuple[tuple[str, int, str], ...]] = {
    "vertex": (("image/", 30 * 2**20, "an image"), ("application/pdf", 50 * 2**20, "a PDF"),
               ("text/plain", 50 * 2**20, "a text file")),
}


def media_type_cap(backend: str, mime: str) -> tuple[int, str] | None:
    """The backend's own cap on one file of type ``mime`` (bytes, and what it calls the file), if it has one."""
    for prefix, cap, kind in MEDIA_TYPE_MAX_BYTES.get(backend, ()):
        if mime == prefix or (prefix.endswith("/") and mime.startswith(prefix)):
            return cap, kind
    return None


# The Files API's storage per project: "20 GB" on the Files API page; the service's own 429 names the quota
# FileStorageBytesPerProject with quotaValue 21474836480, i.e. 20 GiB (googleapis/python-genai#1172, 2025-07;
# github.com/alphaXiv/feedback/issues/16, 2025-10; checked 2026-12). What jobs.max_media_bytes defaults to.
MEDIA_PROJECT_MAX_BYTES = 20 * 2**30
FILES_API_BACKENDS = frozenset({"gemini", "local"})  # whose local media go through the Files API (and its quota)
MEDIA_FILE_HOURS = 48  # a Files API file is deleted this long after its upload
INLINE_REQUEST_MAX_BYTES = 100_000_000  # inline data in one request, base64 encoded (was 20 MB before 2026-01)
# batchflow's own choice, not Google's: a local file up to this size goes inline (base64) in its request line on
# the Gemini API instead of through the Files API; a larger one is uploaded once per distinct content.
INLINE_MAX_BYTES = 32 * 1024
# batchflow's own choice: an uploaded file is reused for a new job only while it has this long to live, the Gemini
# batch API's target turnaround (24 h, "Batch Mode" page, 2026-12); an older one is uploaded again.
MEDIA_REUSE_MIN_HOURS = 24

MEDIA_MIME_TYPES: frozenset[str] = frozenset({
    "image/png", "image/jpeg", "image/webp", "image/heic", "image/heif",
    "application/pdf", "text/plain",
    "audio/wav", "audio/mp3", "audio/aiff", "audio/aac", "audio/ogg", "audio/flac",
    "video/mp4", "video/mpeg", "video/mov", "video/avi", "video/x-flv", "video/mpg", "video/webm", "video/wmv",
    "video/3gpp",
})
"""The MIME types the Gemini models (generate) take as media parts, on either service."""


def media_types(task: str, model: str | None = None) -> frozenset[str]:
    """The MIME types a task's model takes as media parts: any Gemini model's for generation, an embedding model's
    own (``models.Embedding.media``; none for a model that embeds text alone)."""
    if task == "generate":
        return MEDIA_MIME_TYPES
    caps = models.embedding_of(model).media if task == "embed" and model else None
    return caps.mime_types if caps is not None else frozenset()


# What media cost in prompt tokens. Source, as of 2026-12: the Gemini API's "Understand and count tokens" page
# (ai.google.dev/gemini-api/docs/tokens) and its document / audio / video understanding pages: an image with both
# sides at most 384 px is 258 tokens, a larger one is cut into 768x768 tiles of 258 tokens each; a PDF page is 258
# tokens; audio 32 tokens a second; video 263 a second (at the default media resolution).
IMAGE_TOKENS = 258
IMAGE_SMALL_SIDE = 384
IMAGE_TILE_SIDE = 768
PDF_PAGE_TOKENS = 258
AUDIO_TOKENS_PER_SECOND = 32
VIDEO_TOKENS_PER_SECOND = 263


def modality(mime: str) -> str:
    """The usageMetadata modality a media part's tokens are counted under (IMAGE, AUDIO, VIDEO, DOCUMENT, TEXT)."""
    kind = mime.split("/", 1)[0]
    return {"image": "IMAGE", "audio": "AUDIO", "video": "VIDEO", "text": "TEXT"}.get(kind, "DOCUMENT")


def media_tokens(mime: str, data: bytes) -> int:
    """The prompt tokens one media part costs, from what its header says of its extent (an image whose size the
    header does not give is counted as one small image, a document as one page, audio or video as one second)."""
    kind = modality(mime)
    if kind == "IMAGE":
        size = media_info.image_size(data)
        if size is None or max(size) <= IMAGE_SMALL_SIDE:
            return IMAGE_TOKENS
        width, height = size
        return IMAGE_TOKENS * -(-width // IMAGE_TILE_SIDE) * -(-height // IMAGE_TILE_SIDE)
    if kind in ("AUDIO", "VIDEO"):
        rate = AUDIO_TOKENS_PER_SECOND if kind == "AUDIO" else VIDEO_TOKENS_PER_SECOND
        return max(1, math.ceil(rate * (media_info.seconds(data) or 1.0)))
    if kind == "TEXT":
        return max(1, (len(data) + 3) // 4)
    return PDF_PAGE_TOKENS * (media_info.pdf_pages(data) or 1)


def media_over_caps(parts: list[tuple[str, str, bytes | None]], caps: models.MediaCaps, model: str) -> str | None:
    """What in one embed request's media is over the model's caps a request (``models.MediaCaps``), or None:
    ``parts`` are (label, MIME type, bytes or None when they were not read), in order. Counts are checked for
    every part; pages and seconds where the bytes are at hand (a header this reads, ``libs/media_info``)."""
    counts: dict[str, int] = {}
    for label, mime, data in parts:
        kind = _embed_kind(mime)
        counts[kind] = counts.get(kind, 0) + 1
        problem = _extent_problem(label, kind, data, caps) if data is not None else None
        if problem is not None:
            return problem
    allowed = {"image": caps.images, "document": caps.documents, "video": caps.videos, "audio": caps.audios}
    for kind, count in counts.items():
        if count > allowed[kind]:
            return (f"{count} {_KIND_NAMES[kind]}s in one request, over {model}'s limit of {allowed[kind]} "
                    "a request")
    return None


_KIND_NAMES = {"image": "image", "document": "PDF", "video": "video", "audio": "audio file"}


def _embed_kind(mime: str) -> str:
    head = mime.split("/", 1)[0]
    return head if head in ("image", "video", "audio") else "document"


def _extent_problem(label: str, kind: str, data: bytes, caps: models.MediaCaps) -> str | None:
    if kind == "image":
        return None
    if kind == "document":
        pages = media_info.pdf_pages(data)
        return (f"{label}: {pages} pages, over the limit of {caps.pages} pages a PDF"
                if pages is not None and pages > caps.pages else None)
    seconds = media_info.seconds(data)
    limit = caps.video_seconds if kind == "video" else caps.audio_seconds
    one = "a video" if kind == "video" else "an audio file"
    return (f"{label}: {seconds:.1f} s long, over the limit of {limit:g} s {one}"
            if seconds is not None and seconds > limit else None)
