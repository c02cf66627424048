"""Small disk and time helpers shared by the file store and the job table."""

from __future__ import annotations

import os
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import orjson

from batchflow.emulator.wire.errors import invalid_argument

_ID_ALPHABET = string.ascii_lowercase + string.digits


class Record(Protocol):
    """What `save_record` and `load_records` keep: a dataclass with an `id`."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def id(self) -> str:
        """The record's id, also its file name."""


R = TypeVar("R", bound=Record)


def new_id(length: int = 16) -> str:
    """A resource id shaped like Google's: lower-case letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def rfc3339(epoch: float) -> str:
    """A Z-normalised RFC 3339 timestamp with microseconds, as proto-JSON writes it."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON so that a reader (or a restart after a kill) sees the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(value))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Parse a JSON file written by `write_json_atomic`."""
    return orjson.loads(path.read_bytes())


def save_record(directory: Path, record: Record) -> None:
    """Persist a job record (a dataclass with an `id`) atomically as `directory/ID.json`."""
    write_json_atomic(directory / f"{record.id}.json", asdict(record))


def load_records(directory: Path, make: Callable[..., R]) -> dict[str, R]:
    """Every record saved under `directory`, by id; unreadable files are skipped (a foreign file is not a job)."""
    found: dict[str, R] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            record = make(**read_json(path))
        except (OSError, ValueError, TypeError):
            continue
        found[record.id] = record
    return found


def page_token(seq: int) -> str:
    """An opaque page token: the sequence number of the last item of the page."""
    return f"s{seq}"


def parse_page_token(token: str | None) -> int | None:
    """The sequence number inside a page token; None for the first page."""
    if not token:
        return None
    if not token.startswith("s") or not token[1:].isdigit():
        raise invalid_argument(f"Invalid page token: {token!r}")
    return int(token[1:])


def page_size(raw: str | None, default: int, maximum: int) -> int:
    """A `pageSize` query value, clamped the way Google clamps it."""
    if not raw:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise invalid_argument(f"Invalid pageSize: {raw!r}") from None
    if size < 0:
        raise invalid_argument("pageSize must not be negative")
    return min(size or default, maximum)
