"""The Gemini Developer API through google-genai: Files API upload, ``batches.create(src="files/…")``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from batchflow.backends import JobInfo, Result, job_status
from batchflow.errors import BackendError, SpecError, TransientError
from batchflow.spec import Spec

_TRANSIENT_CODES = frozenset({408, 429, 500, 502, 503, 504})
_LIST_PAGE = 100
_GETS_BEFORE_LIST = 3  # polling more jobs than this costs one paged ``list`` instead of a ``get`` each


@contextmanager
def api_errors(call: str) -> Iterator[None]:
    """Sort the SDK's and the transport's exceptions into transient and terminal ones."""
    from google.genai import errors

    try:
        yield
    except errors.APIError as exc:
        where = f"{call}: HTTP {exc.code} {exc.status or ''}: {exc.message or ''}".strip()
        raise (TransientError if exc.code in _TRANSIENT_CODES else BackendError)(where) from exc
    except Exception as exc:
        if _is_transport_error(exc):
            raise TransientError(f"{call}: {type(exc).__name__}: {exc}") from exc
        raise


def _is_transport_error(exc: Exception) -> bool:
    if isinstance(exc, OSError):
        return True
    # httpx and its fork httpx2 both name their base class TransportError; google-genai uses either.
    return any(cls.__name__ in {"TransportError", "TimeoutException"} for cls in type(exc).__mro__)


class GeminiBackend:
    """Shards are uploaded as ``{"key","request"}`` lines; results come from the job's output file."""

    poll_interval_cap: float | None = None

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_spec(cls, spec: Spec) -> GeminiBackend:
        env = spec.backend.api_key_env or "GEMINI_API_KEY"
        key = os.environ.get(env)
        if not key and not spec.backend.base_url:
            raise SpecError(f"{spec.where('backend')}: backend: the environment variable {env} "
                            "(backend.api_key_env) is not set")
        return cls(make_client(key or "emulator", spec.backend.base_url))

    def stage(self, path: Path, display_name: str) -> str:
        from google.genai import types

        with api_errors(f"upload {path.name}"):
            f = self.client.files.upload(file=str(path), config=types.UploadFileConfig(
                mime_type="jsonl", display_name=display_name))
        return str(f.name)

    def create(self, model: str, task: str, staged: str, display_name: str) -> JobInfo:
        from google.genai import types

        config = types.CreateBatchJobConfig(display_name=display_name)
        with api_errors(f"create {display_name}"):
            if task == "embed":
                with warnings.catch_warnings():  # create_embeddings is marked experimental
                    warnings.simplefilter("ignore")
                    job = self.client.batches.create_embeddings(model=model, src={"file_name": staged},
                                                                config=config)
            else:
                job = self.client.batches.create(model=model, src=staged, config=config)
        return _info(job)

    def find(self, display_name: str) -> JobInfo | None:
        from google.genai import types

        with api_errors(f"list (looking for {display_name})"):
            for job in self.client.batches.list(config=types.ListBatchJobsConfig(page_size=_LIST_PAGE)):
                if job.display_name == display_name:
                    return _info(job)
        return None

    def poll(self, names: Sequence[str]) -> dict[str, JobInfo]:
        if len(names) <= _GETS_BEFORE_LIST:
            return {name: self._get(name) for name in names}
        return self._list_until(set(names))

    def results(self, job: JobInfo, workdir: Path) -> Iterator[Result]:
        if not job.output:
            return
        raw = workdir / f"{job.name.replace('/', '-')}.download"
        with api_errors(f"download {job.output}"):
            self.client.files.download(file=job.output, destination=str(raw))
        try:
            yield from read_result_lines(raw)
        finally:
            raw.unlink(missing_ok=True)

    def cancel(self, name: str) -> None:
        with api_errors(f"cancel {name}"):
            self.client.batches.cancel(name=name)

    def close(self) -> None:
        self.client.close()

    def _get(self, name: str) -> JobInfo:
        with api_errors(f"get {name}"):
            return _info(self.client.batches.get(name=name))

    def _list_until(self, wanted: set[str]) -> dict[str, JobInfo]:
        from google.genai import types

        found: dict[str, JobInfo] = {}
        with api_errors("list"):
            for job in self.client.batches.list(config=types.ListBatchJobsConfig(page_size=_LIST_PAGE)):
                if job.name in wanted:
                    found[job.name] = _info(job)
                    if len(found) == len(wanted):
                        break
        for name in wanted - found.keys():  # older than the pages we read: ask for it alone
            found[name] = self._get(name)
        return found


def make_client(api_key: str, base_url: str | None) -> Any:
    """A google-genai client for the Developer API, pointed at ``base_url`` when one is given."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=base_url) if base_url else None
    return genai.Client(api_key=api_key, http_options=options)


def read_result_lines(path: Path) -> Iterator[Result]:
    """Result lines of an output file: ``{"key", "response"}`` or ``{"key", "error" | "status"}``."""
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BackendError(f"{path.name}:{n}: the backend wrote a malformed result line: {exc}") from exc
            key = item.get("key")
            if key is None and isinstance(item.get("metadata"), dict):
                key = item["metadata"].get("key")
            error = item.get("error") or item.get("status") or None
            yield Result(None if key is None else str(key), item.get("response"), _error(error))


def _error(error: Any) -> dict[str, Any] | None:
    if error is None or error == "":
        return None
    if isinstance(error, dict):
        return {"code": error.get("code"), "message": error.get("message") or str(error)}
    return {"code": None, "message": str(error)}


def _info(job: Any) -> JobInfo:
    state = job.state.name if hasattr(job.state, "name") else str(job.state)
    error = None
    if job.error is not None:
        error = f"{job.error.code or ''} {job.error.message or ''}".strip() or None
    output = job.dest.file_name if job.dest is not None else None
    return JobInfo(str(job.name), job.display_name, job_status(state), error, output)
