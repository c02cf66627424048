"""Reading a create body (`batchGenerateContent` / `asyncBatchEmbedContent`) into a submission.

Bodies are `{"batch": {"displayName"?, "inputConfig": {"fileName": "files/ID"} | {"requests": {"requests":
[{"request": {...}, "metadata"?: {...}}]}}}}`; the SDK sends the embeddings file source as snake_case
`file_name`, so every field is read by either name. Inline requests are part of the body the service parses, so
one that does not parse as its request message (`proto_json`) refuses the whole create with a 400; a request
that parses but makes no sense fails later, alone, as an error line.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator.gemini.files import FileStore
from batchflow.emulator.wire import proto_json
from batchflow.emulator.wire.errors import invalid_argument
from batchflow.emulator.wire.request_checks import field


@dataclass(frozen=True)
class Submission:
    """A parsed create body: where its lines come from and what it is called."""

    display_name: str | None
    file_id: str | None
    inline: list[dict[str, Any]] | None

    def write_input(self, files: FileStore, dest: Path) -> None:
        """Place the job's own copy of its input lines at `dest` (a hard link when the file system allows)."""
        if self.file_id is not None:
            _link_or_copy(files.data_path(self.file_id), dest)
            return
        with open(dest, "wb") as out:
            for item in self.inline or ():
                out.write(orjson.dumps(item))
                out.write(b"\n")

    def lines(self, files: FileStore) -> int | None:
        """The input's request lines when known without reading it: inline, or counted as the file was uploaded."""
        if self.file_id is not None:
            return files.get(self.file_id).lines
        return len(self.inline or ())


def parse_create(kind: str, body: Any, files: FileStore) -> Submission:
    """A Submission from a create body; raises ApiError(400) for a malformed one."""
    batch = field(body, "batch")
    if not isinstance(batch, Mapping):
        raise invalid_argument("* batch: a batch object is required")
    display_name = field(batch, "displayName")
    if display_name is not None and not isinstance(display_name, str):
        raise invalid_argument("Invalid value at 'batch.display_name': expected a string")
    config = field(batch, "inputConfig")
    if not isinstance(config, Mapping):
        raise invalid_argument("* batch.input_config: input_config is required")
    file_name, requests = field(config, "fileName"), field(config, "requests")
    if (file_name is None) == (requests is None):
        raise invalid_argument("batch.input_config: exactly one of file_name and requests must be set")
    if file_name is not None:
        return Submission(display_name, _file_id(file_name, files), None)
    return Submission(display_name, None, _inline(kind, requests))


def _file_id(file_name: Any, files: FileStore) -> str:
    if not isinstance(file_name, str) or not file_name.startswith("files/"):
        raise invalid_argument(f"batch.input_config.file_name must look like files/ID, got {file_name!r}")
    file_id = file_name.removeprefix("files/")
    if not files.exists(file_id):
        raise invalid_argument(f"batch.input_config.file_name: file {file_name} does not exist")
    return file_id


def _inline(kind: str, requests: Any) -> list[dict[str, Any]]:
    items = field(requests, "requests")
    if not isinstance(items, list) or not items:
        raise invalid_argument("batch.input_config.requests.requests must be a non-empty list")
    lines = []
    for i, item in enumerate(items):
        where = f"batch.input_config.requests.requests[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("request"), Mapping):
            raise invalid_argument(f"* {where}.request: a request object is required")
        metadata = item.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise invalid_argument(f"Invalid value at '{where}.metadata': expected an object")
        proto_json.check("gemini", kind, item["request"], f"{where}.request")
        line = {"request": item["request"]}
        if metadata is not None:
            line["metadata"] = metadata
        lines.append(line)
    return lines


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
