"""A unit's media, counted before anything is spent: the distinct local contents its request lines name, and the
prompt tokens its requests pay for them, for ``plan`` and the cost estimate (and the enqueued-token quota).

Each request pays for each media part it names (the same file in two requests is counted twice), at the rates of
``spec/limits.py`` read from the file's own header (image size, PDF pages, audio and video seconds). A ``gs://`` or
``https://`` part is not read here: it counts the least its kind costs (one image, one page, one second).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchflow.errors import DataError
from batchflow.request.media import file_parts, file_uri_path, may_have_media, untagged
from batchflow.spec import limits
from batchflow.spec.spec import Spec

_NAMES_A_FILE = (b"ileUri", b"ile_uri")  # a request line with a file_data part holds one of these
_TOKENS: dict[str, int] = {}  # sha256 -> its prompt tokens (records share files; bounded below)


@dataclass
class MediaTally:
    """What a unit's (or a generation's) requests name: contents by sha256 -> (local file, bytes), tokens."""

    tokens: int = 0
    parts: int = 0
    requests: int = 0  # the unit's request lines
    contents: dict[str, tuple[str, int]] = field(default_factory=dict)

    def add(self, other: MediaTally) -> None:
        self.tokens += other.tokens
        self.parts += other.parts
        self.requests += other.requests
        self.contents.update(other.contents)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.contents.values())


def media_tokens(spec: Spec, path: Path) -> int:
    """The prompt tokens a unit's media parts cost; none read for a spec whose requests cannot name media."""
    return tally(path).tokens if may_have_media(spec) else 0


def unit_media_tokens(spec: Spec, path: Path, unit: int) -> int:
    """``media_tokens``, after refusing a unit whose media alone would not fit the Files API storage a run may
    hold (``check_unit_media``)."""
    if not may_have_media(spec):
        return 0
    found = tally(path)
    check_unit_media(spec, found, unit)
    return found.tokens


def check_unit_media(spec: Spec, found: MediaTally, unit: int) -> None:
    """On a backend whose media go through the Files API, a unit (one job) whose distinct local contents over
    the inline threshold pass ``jobs.max_media_bytes`` could never be staged: a data error at plan time, before
    anything of the run is uploaded, naming the unit, its records and the figures."""
    if spec.backend.type not in limits.FILES_API_BACKENDS:
        return
    cap = limits.MEDIA_PROJECT_MAX_BYTES if spec.jobs.max_media_bytes is None else spec.jobs.max_media_bytes
    uploads = sum(size for _, size in found.contents.values() if size > limits.INLINE_MAX_BYTES)
    if uploads > cap:
        raise DataError(f"unit {unit} ({found.requests:,} records): its media to upload are {uploads:,} bytes, "
                        f"more than the Files API may hold for a run ({spec.where('jobs')}: jobs.max_media_bytes: "
                        f"{cap:,}); lower jobs.max_requests or jobs.max_bytes so that a job's media fit")


def tally(path: Path) -> MediaTally:
    """The media a unit's request lines name (one pass over its file; lines without a file part are skipped)."""
    found = MediaTally()
    with open(path, "rb") as fh:
        for line in fh:
            found.requests += 1
            if not any(mark in line for mark in _NAMES_A_FILE):
                continue
            for part in file_parts(orjson.loads(line).get("request")):
                _count(part, found)
    return found


def _count(part: dict[str, Any], found: MediaTally) -> None:
    data = part.get("fileData", part.get("file_data")) or {}
    uri, mime = data.get("fileUri", data.get("file_uri")), data.get("mimeType", data.get("mime_type"))
    if not isinstance(uri, str) or not isinstance(mime, str):
        return
    found.parts += 1
    place, identity = untagged(uri)
    if not (identity and identity.startswith("sha256:") and place.startswith("file://")):
        found.tokens += limits.media_tokens(mime, b"")
        return
    sha, local = identity[7:], file_uri_path(place)
    tokens = _TOKENS.get(sha)
    try:
        if tokens is None:
            data_bytes = Path(local).read_bytes()
            tokens = limits.media_tokens(mime, data_bytes)
            if len(_TOKENS) > 100_000:
                _TOKENS.clear()
            _TOKENS[sha] = tokens
        found.contents[sha] = (local, Path(local).stat().st_size)
    except OSError:
        tokens = limits.media_tokens(mime, b"")  # gone since it was rendered: staging says so, loudly
    found.tokens += tokens
