"""Running a Vertex batch prediction job over GCS: lines in from `gs://` URIs, answers out as prediction files.

Input objects (plain URIs or `*` globs, read in sorted order) are streamed line by line into the job's own local
copy; every line is answered by the deterministic model; the output lines are shuffled (seeded by the job id, in
bounded windows) and dealt round-robin into several `predictions_0000N.jsonl` files, which are then uploaded to
the job's output directory. Nothing in the output follows input order: the real service promises none
(python-aiplatform #1166), so clients must match lines by what they echo.

gcsfs is imported on first use only, so the emulator runs without it until a Vertex job is created.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator.faults.plan import LineFaults
from batchflow.emulator.model import deterministic as model
from batchflow.emulator.model import media
from batchflow.emulator.model.degraded import degrade
from batchflow.emulator.vertex.echo import echo
from batchflow.emulator.wire import proto_json
from batchflow.emulator.wire.errors import ApiError, invalid_argument
from batchflow.emulator.wire.request_checks import check_dimensions, check_embed_request, field, text_of
from batchflow.spec import models

LINES_PER_PART = 1000  # one predictions file per this many lines...
MAX_PARTS = 64  # ...up to this many; and at least two whenever there are two lines
_SHUFFLE_WINDOW = 4096  # lines shuffled together: bounds memory on a job of any size
_MAX_EMBED_TOKENS = 2048  # text-embedding-005's input limit; longer text is truncated, as the service does
_EMBED_DIMENSIONS = {"gemini-embedding": 3072}  # model-name prefix -> default size; others: model's default
_GLOB_CHARS = frozenset("*?[")
_READ_CHUNK = 1 << 22
_MEDIA = media.reader()  # Vertex reads a part's gs:// objects (no Files API); other URIs are named, not read
_SIMPLE_UPLOAD = 48 << 20  # a predictions file under this is uploaded in one request (gcsfs pipe_file: < 50 MiB)


class InputError(Exception):
    """The job's input cannot be used: the job ends FAILED with this google.rpc.Status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class JobResult:
    """How a job's lines went, or why the whole job failed (`error`, a google.rpc.Status)."""

    request_count: int = 0
    succeeded: int = 0
    failed: int = 0
    error: dict[str, Any] | None = None


def filesystem() -> Any:
    """An anonymous gcsfs file system (STORAGE_EMULATOR_HOST points it at an emulator); 400 without gcsfs."""
    # gcsfs >= 2026 otherwise asks a gRPC endpoint for the bucket type, which hangs 60 s against an emulator
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    try:
        import gcsfs
    except ImportError:
        raise ApiError(400, "FAILED_PRECONDITION", "The emulator's Vertex AI surface reads and writes gs:// through "
                       "the gcsfs package, which is not installed: pip install 'batchflow[gcs]'") from None
    return gcsfs.GCSFileSystem(token="anon")


def is_embedding_model(model_name: str) -> bool:
    """Whether a model answers in the text-embeddings seed format (`text-embedding-005`, `gemini-embedding-001`)."""
    return "embedding" in model_name.rsplit("/", 1)[-1]


def kind_of(model_name: str) -> str:
    """What a model's lines are: generate or embed."""
    return "embed" if is_embedding_model(model_name) else "generate"


@dataclass(frozen=True)
class Output:
    """How a job writes its predictions: the echo's shape, and whether they wait on local disk (`defer`) for the
    engine to publish them when the job ends."""

    defer: bool = False
    reserialise: bool = True
    drop_labels: bool = False


def run_job(job_id: str, model_name: str, uris: list[str], output_dir: str, work: Path,
            clock: Callable[[], float], keep: Callable[[], bool], faults: LineFaults | None = None,
            parameters: Mapping[str, Any] | None = None, output: Output = Output()) -> JobResult:
    """Read, answer and write one job; `keep()` is asked before uploading (a cancelled job writes nothing).
    Deferred predictions stay in `kept_parts(work, job_id)`."""
    fs = filesystem()
    staged = work / f"{job_id}.input.jsonl"
    parts: list[Path] = []
    published = False
    try:
        count = stage_input(fs, uris, staged)
        if count == 0:
            raise InputError(3, f"No instances found in the input {', '.join(uris)}.")
        check_size(model_name, count, staged.stat().st_size)
        parts = [work / f"{job_id}.part{i}.jsonl" for i in range(part_count(count))]
        ok, failed = answer_lines(model_name, staged, parts, job_id, clock, faults, parameters,
                                  lambda request: echo(request, reserialise=output.reserialise,
                                                       drop_labels=output.drop_labels))
        if keep() and not output.defer:
            upload(fs, parts, output_dir)
        published = output.defer and keep()
        return JobResult(count, ok, failed)
    except InputError as exc:
        return JobResult(error={"code": exc.code, "message": exc.message})
    except FileNotFoundError as exc:  # the output bucket does not exist
        return JobResult(error={"code": 5, "message": f"Failed to write the output to {output_dir}: {exc}"})
    finally:
        for path in (staged, *([] if published else parts)):
            path.unlink(missing_ok=True)


def check_size(model_name: str, rows: int, size: int) -> None:
    """An embedding job over its model's rows or bytes (Gemini embeddings: 1,000,000 rows and 1 GB; the legacy
    text-embedding models: 30,000 prompts) fails as a whole."""
    if not is_embedding_model(model_name):
        return
    limits = models.embedding_of(model_name)
    if rows > limits.vertex_rows:
        raise InputError(3, f"The input has {rows:,} rows; a batch job of {models.bare(model_name)} takes at most "
                            f"{limits.vertex_rows:,}.")
    if size > limits.vertex_bytes:
        raise InputError(3, f"The input is {size:,} bytes; a batch job of {models.bare(model_name)} takes at most "
                            f"{limits.vertex_bytes:,}.")


def stage_input(fs: Any, uris: list[str], dest: Path) -> int:
    """Copy the non-blank lines of every input object into `dest`, streamed; the number of lines."""
    fs.invalidate_cache()  # a glob must see objects written since the last listing
    count = 0
    with open(dest, "wb") as out:
        for uri in uris:
            for path in _expand(fs, uri):
                count += _copy_lines(fs, path, out)
    return count


def _expand(fs: Any, uri: str) -> list[str]:
    path = uri.removeprefix("gs://")
    if not _GLOB_CHARS.intersection(path):
        return [path]
    found = sorted(str(p) for p in fs.glob(path))
    if not found:
        raise InputError(5, f"No files match the input {uri}.")
    return found


def _copy_lines(fs: Any, path: str, out: Any) -> int:
    count = 0
    try:
        with fs.open(path, "rb") as src:
            for raw in _lines(src):
                if raw.strip():
                    out.write(raw.rstrip(b"\r\n") + b"\n")  # the last line of a file may lack its newline
                    count += 1
    except FileNotFoundError:
        raise InputError(5, f"Failed to read the input gs://{path}: no such object.") from None
    return count


def _lines(src: Any) -> Iterator[bytes]:
    """The lines of a binary stream, read in large chunks: a remote file's own readline is ~30x slower."""
    rest = b""
    while chunk := src.read(_READ_CHUNK):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def part_count(lines: int) -> int:
    """How many prediction files `lines` output lines are split into."""
    if lines < 2:
        return 1
    return min(MAX_PARTS, max(2, math.ceil(lines / LINES_PER_PART)))


def answer_lines(model_name: str, source: Path, parts: list[Path], seed: str, clock: Callable[[], float],
                 faults: LineFaults | None = None, parameters: Mapping[str, Any] | None = None,
                 echoed: Callable[[Any], Any] | None = None) -> tuple[int, int]:
    """Answer every line of `source` into the `parts` files, shuffled; (succeeded, failed).

    A fault plan's `faults` may replace a line's answer by an error, block or cut it, drop the line or write it
    twice; `echoed` gives what a line echoes of its request (default: the request as sent).
    """
    rng = random.Random(seed)  # a str seed is hashed with SHA-512: the same on every run and machine
    embed = is_embedding_model(model_name)
    model_id = model_name.rsplit("/", 1)[-1]
    ok = failed = dealt = 0
    window: list[bytes] = []
    with ExitStack() as stack:
        outs = [stack.enter_context(open(p, "wb")) for p in parts]

        def flush() -> None:
            nonlocal dealt
            rng.shuffle(window)
            for item in window:
                outs[dealt % len(outs)].write(item)
                dealt += 1
            window.clear()

        with open(source, "rb") as src:
            for n, raw in enumerate(src):
                line, good = answer_line(raw, model_id, embed, clock, parameters)
                fault = faults(_identity(line, n)) if faults is not None else None
                if fault is not None and fault.error is not None:
                    line, good = _with_error(line, fault.error), False
                elif "response" in line:
                    line["response"] = degrade(line["response"], fault)
                if echoed is not None and "request" in line:
                    line["request"] = echoed(line["request"])
                ok, failed = ok + good, failed + (not good)
                window.extend([orjson.dumps(line) + b"\n"] * (1 if fault is None else fault.copies))
                if len(window) >= _SHUFFLE_WINDOW:
                    flush()
        flush()
    return ok, failed


def upload(fs: Any, parts: list[Path], output_dir: str) -> None:
    """Write the prediction files under the output directory."""
    base = output_dir.removeprefix("gs://").rstrip("/")
    for i, part in enumerate(parts, start=1):
        size = part.stat().st_size
        if not size:  # a partial output may leave a file empty
            continue
        target = f"{base}/predictions_{i:05d}.jsonl"
        if size < _SIMPLE_UPLOAD:  # one request: gcsfs's put_file goes resumable over 5 MB, which a GCS
            fs.pipe_file(target, part.read_bytes())  # emulator may not speak (gcp-storage-emulator: 501)
        else:
            fs.put_file(str(part), target)


def answer_line(raw: bytes, model_id: str, embed: bool, clock: Callable[[], float],
                parameters: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
    """The output line for one input line and whether it succeeded; never raises for bad input."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return {"status": status_text(invalid_argument(f"Invalid JSON in input line: {exc}")),
                "processed_time": processed_time(clock())}, False
    if not isinstance(line, dict):
        return {"instance": line, "status": status_text(invalid_argument("Input line must be a JSON object"))}, False
    if embed and models.embedding_of(model_id).format == "request":
        return _gemini_embed_line(line, model_id, clock)
    if embed or ("request" not in line and "content" in line):
        return _embed_line(line, model_id, parameters or {})
    return _generate_line(line, model_id, clock)


def _identity(line: dict[str, Any], n: int) -> str:
    """What a line's fault is drawn by: the labels it carries (where batchflow puts its key), else its position."""
    labels = line.get("request", {}).get("labels") if isinstance(line.get("request"), dict) else None
    if isinstance(labels, dict) and labels:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"#{n}"


def _with_error(line: dict[str, Any], error: ApiError) -> dict[str, Any]:
    out = {k: v for k, v in line.items() if k not in ("response", "predictions")}
    out["status"] = status_text(error)
    return out


def _generate_line(line: dict[str, Any], model_id: str, clock: Callable[[], float]) -> tuple[dict[str, Any], bool]:
    # only `request` is echoed: whether the service copies other top-level fields is not documented
    out: dict[str, Any] = {"request": line["request"]} if "request" in line else {}
    try:
        if "request" not in line:
            raise invalid_argument('Each input line must be {"request": {...}}: no "request" found')
        proto_json.check("vertex", "generate", line["request"], "request")
        out["response"] = model.generate(line["request"], model_id, _MEDIA)
        out["status"] = ""
    except ApiError as exc:
        out["status"] = status_text(exc)
    out["processed_time"] = processed_time(clock())
    return out, out["status"] == ""


def _gemini_embed_line(line: dict[str, Any], model_id: str,
                       clock: Callable[[], float]) -> tuple[dict[str, Any], bool]:
    """A Gemini embedding line (``{"key", "request": {"content", "embed_content_config"}}``): the key and request
    echoed, the response an EmbedContentResponse (``embedding.values``, ``usageMetadata``, ``truncated``).
    Vectors below the model's full size are the full vector cut short, not normalised again, as the service's
    are (a Matryoshka embedding: "vectors below 3072 are not normalised")."""
    out: dict[str, Any] = {k: line[k] for k in ("key", "request") if k in line}
    try:
        out["response"] = gemini_embedding(line, model_id)
        out["status"] = ""
    except ApiError as exc:
        out["status"] = status_text(exc)
    out["processed_time"] = processed_time(clock())
    return out, out["status"] == ""


def gemini_embedding(line: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The response to one Gemini embedding line; ApiError(400) for a line not in that format, or a config the
    model does not take (gemini-embedding-2 has no task type or title: they belong in the text)."""
    request = line.get("request")
    if not isinstance(request, dict) or "content" not in request:
        raise invalid_argument(f"Invalid input line for {model_id}: expected {{\"request\": {{\"content\": "
                               "{\"parts\": [...]}, \"embed_content_config\": {...}}}, got keys "
                               f"{sorted(line)}")
    unknown = set(request) - {"content", "embed_content_config", "embedContentConfig"}
    if unknown:
        raise invalid_argument(f"Unknown field(s) in the request: {', '.join(sorted(unknown))}")
    config = field(request, "embedContentConfig") or {}
    if not isinstance(config, dict):
        raise invalid_argument("embed_content_config: expected an object")
    limits = models.embedding_of(model_id)
    told = [name for name in ("taskType", "title") if field(config, name) is not None]
    if told and limits.task_in_text:
        raise invalid_argument(f"{', '.join(told)} is not supported by {model_id}: write the task into the text")
    known = {"outputDimensionality", "taskType", "title", "autoTruncate"}
    extra = {k for k in config if camel_of(k) not in known}
    if extra:
        raise invalid_argument(f"Unknown field(s) in embed_content_config: {', '.join(sorted(extra))}")
    dims, full = field(config, "outputDimensionality"), limits.dimensions[2]
    check_dimensions(dims, limits.dimensions, model_id)
    check_embed_request({"content": request["content"],
                         **{k: v for k in ("taskType", "title") if (v := field(config, k)) is not None}})
    text = " ".join(text_of(request["content"]))
    media = model.embed_media(request["content"], model_id, _MEDIA)
    tokens, limit = model.tokens(text) + sum(m.tokens() for m in media), models.any_named(model_id)
    max_tokens = limit.input_tokens if limit is not None else _MAX_EMBED_TOKENS
    truncated = tokens > max_tokens
    if truncated and field(config, "autoTruncate") is False:
        raise invalid_argument(f"The input has {tokens} tokens, over {model_id}'s limit of {max_tokens}; "
                               "auto_truncate is false.")
    if truncated:
        text, tokens = text[: max_tokens * 4], max_tokens
    values = model.embedding(text, full, model.media_ids(media))[: int(dims or full)]
    return {"embedding": {"values": values}, "usageMetadata": {"promptTokenCount": tokens}, "truncated": truncated}


def camel_of(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _embed_line(line: dict[str, Any], model_id: str, parameters: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The text-embeddings seed format: the instance echoed, one prediction with statistics and values."""
    out: dict[str, Any] = {"instance": line}
    try:
        if "request" in line:
            raise invalid_argument(f"Invalid input line for {model_id}: expected a text-embedding instance "
                                   f"{{\"content\": \"...\"}}, got a \"request\" line")
        text, dims = _embed_instance(line, model_id, parameters)
        tokens = model.tokens(text)
        truncated = tokens > _MAX_EMBED_TOKENS
        if truncated:
            text, tokens = text[: _MAX_EMBED_TOKENS * 4], _MAX_EMBED_TOKENS
        out["predictions"] = [{"embeddings": {"statistics": {"token_count": tokens, "truncated": truncated},
                                              "values": model.embedding(text, dims)}}]
        out["status"] = ""
    except ApiError as exc:
        out["status"] = status_text(exc)
    return out, out["status"] == ""


def _embed_instance(line: dict[str, Any], model_id: str, parameters: Mapping[str, Any]) -> tuple[str, int]:
    """An instance's text and the embedding's size. The size is the job's ``modelParameters.outputDimensionality``
    (Vertex's parameters are per job, as the online API's ``parameters`` are per request); an instance holds only
    ``content``, ``task_type`` and ``title`` (Google's text-embeddings instance)."""
    content = line.get("content")
    if not isinstance(content, str) or not content.strip():
        raise invalid_argument('Each input line must be {"content": "<non-empty text>", ...}')
    title = line.get("title")
    if title is not None and not isinstance(title, str):
        raise invalid_argument("title must be a string")
    unknown = set(line) - {"content", "task_type", "taskType", "title"}
    if unknown:
        raise invalid_argument(f"Unknown field(s) in the instance: {', '.join(sorted(unknown))}")
    dims = field(parameters, "outputDimensionality")
    request = {"content": {"parts": [{"text": content}]}, "taskType": field(line, "taskType"),
               "outputDimensionality": dims}
    check_embed_request({k: v for k, v in request.items() if v is not None})
    default = next((d for prefix, d in _EMBED_DIMENSIONS.items() if model_id.startswith(prefix)),
                   model.DEFAULT_EMBED_DIMENSIONS)
    return content, int(dims or default)


def status_text(exc: ApiError) -> str:
    """A failed line's `status`: the error as text, the way the service writes it ("Bad Request: {...}")."""
    label = "Bad Request" if exc.code == 400 else exc.status
    return f"{label}: " + orjson.dumps({"error": {"code": exc.code, "message": exc.message,
                                                  "status": exc.status}}).decode()


def processed_time(epoch: float) -> str:
    """RFC 3339 with milliseconds and an explicit offset, as in the service's output lines."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
