"""The Gemini Developer API through google-genai: Files API upload, ``batches.create(src="files/…")``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import orjson

from batchflow.backends.base import JobInfo, MediaStaging, Result, Stored
from batchflow.backends.gemini_media import GeminiMedia, contents_read, media_content
from batchflow.backends.sdk import SdkBackend, api_errors
from batchflow.errors import BackendError, OutputMissing, SpecError, TransientError
from batchflow.libs.deadlines import Deadlines, deadlines, genai_http_options, genai_once
from batchflow.request.media import may_have_media
from batchflow.spec.limits import MEDIA_PROJECT_MAX_BYTES
from batchflow.spec.spec import Spec

_FILES_PAGE = 100
_JOBS_PREFIX = "batchflow-{spec}-g"  # what a job's display name begins with (prepare.py: generation_prefix)


class GeminiBackend(SdkBackend):
    """Shards are uploaded as ``{"key","request"}`` lines; results come from the job's output file."""

    @classmethod
    def from_spec(cls, spec: Spec) -> GeminiBackend:
        env = spec.backend.api_key_env or "GEMINI_API_KEY"
        key = os.environ.get(env)
        # google-genai itself reads GOOGLE_GEMINI_BASE_URL: a stand-in named either way needs no real key
        base_url = spec.backend.base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL")
        if not key and not base_url:
            raise SpecError(f"{spec.where('backend')}: backend: the environment variable {env} "
                            "(backend.api_key_env) is not set")
        limits = deadlines(spec.retry.call_attempts)
        return cls(make_client(key or "emulator", base_url, limits), limits).with_media(spec)

    media: GeminiMedia | None = None  # set for a spec whose requests may name local files

    def with_media(self, spec: Spec) -> Self:
        """The backend, staging the local media files its spec's requests name (when they may name any)."""
        if may_have_media(spec):
            quota = spec.jobs.max_media_bytes
            self.media = GeminiMedia(self.client, owner=spec.name,
                                     max_bytes=MEDIA_PROJECT_MAX_BYTES if quota is None else quota)
        return self

    def media_staging(self, contents: dict[str, tuple[str, int]]) -> MediaStaging:
        """Inline up to the threshold, else uploaded unless an earlier upload will outlive a job made now (one
        paged ``files.list``)."""
        return self.media.staging(contents) if self.media is not None else super().media_staging(contents)

    def job_media_done(self, display_name: str) -> int:
        """The job of that display name is collected: its media uploads that no other staged job reads go."""
        return self.media.collected(display_name) if self.media is not None else 0

    def release_media(self) -> int:
        """Delete the spec's Files API media uploads (this run's and earlier runs'): every job reading them is
        collected, and a later run uploads again what it needs."""
        return self.media.release() if self.media is not None else 0

    def stage(self, path: Path, display_name: str) -> str:
        from google.genai import types

        staged = self.media.rewritten(path, display_name) if self.media is not None else None
        try:
            with api_errors(f"upload {path.name}"):
                f = self.client.files.upload(file=str(staged or path), config=types.UploadFileConfig(
                    mime_type="jsonl", display_name=display_name))
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        return str(f.name)

    def staged_files(self, prefix: str) -> dict[str, tuple[str, int]]:
        """Uploaded files that are ready, by display name (a run killed while uploading left them): one paged list.

        A file's display name is its job's, which carries the digest of its content; with the same size it holds
        the same request lines."""
        from google.genai import types

        found: dict[str, tuple[str, int]] = {}
        with api_errors("list files"):
            for f in self.client.files.list(config=types.ListFilesConfig(page_size=_FILES_PAGE)):
                if f.display_name and f.display_name.startswith(prefix) and f.name and \
                        _state(f.state) in ("ACTIVE", "STATE_UNSPECIFIED"):
                    found.setdefault(f.display_name, (f.name, int(f.size_bytes or 0)))
        return found

    def delete_staged(self, staged: str) -> None:
        with api_errors(f"delete {staged}"):
            self.client.files.delete(name=staged)

    def stored(self, spec_name: str) -> list[Stored]:
        """The files this spec's runs uploaded that the Files API still keeps (one paged list): request lines,
        by their job's display name, and media, by the content their display name carries. A batch's output
        file (GENERATED) is the service's, and a registered one names no spec: neither is listed."""
        from google.genai import types

        jobs = _JOBS_PREFIX.format(spec=spec_name[:56])
        found: list[Stored] = []
        with api_errors("list files"):
            for f in self.client.files.list(config=types.ListFilesConfig(page_size=_FILES_PAGE)):
                name, size = f.display_name or "", int(f.size_bytes or 0)
                if not f.name or _state(f.source) not in ("UPLOADED", "SOURCE_UNSPECIFIED"):
                    continue
                content = media_content(name, spec_name)
                if content is not None:
                    found.append(Stored(str(f.name), "media", content=content, size=size))
                elif name.startswith(jobs):
                    found.append(Stored(str(f.name), "request lines", job=name, size=size))
        return found

    def media_read(self, path: Path) -> set[str] | None:
        """The uploads a unit's lines name, by the sha256 digits in their display names (gemini_media.py)."""
        return contents_read(path)

    def delete_stored(self, stored: Stored) -> None:
        try:
            with api_errors(f"delete {stored.ref}"):
                self.client.files.delete(name=stored.ref)
        except BackendError as exc:
            if "HTTP 404" not in str(exc):  # gone already (deleted 48 h after its upload): what was asked
                raise

    def create(self, model: str, task: str, staged: str, display_name: str) -> JobInfo:
        from google.genai import types

        config = types.CreateBatchJobConfig(display_name=display_name, http_options=genai_once(self.deadlines))
        with api_errors(f"create {display_name}"):
            if task == "embed":
                with warnings.catch_warnings():  # create_embeddings is marked experimental
                    warnings.simplefilter("ignore")
                    job = self.client.batches.create_embeddings(model=model, src={"file_name": staged},
                                                                config=config)
            else:
                job = self.client.batches.create(model=model, src=staged, config=config)
        return self._info(job)

    def results(self, job: JobInfo, workdir: Path, sent: Path) -> Iterator[Result]:
        if not job.output:
            if job.status == "succeeded":
                raise OutputMissing(f"job {job.name} succeeded but names no output file yet")
            return
        raw = workdir / f".{job.name.replace('/', '-')}.download"  # a dot file: never pushed to a gs:// state
        try:
            with api_errors(f"download {job.output}"):
                self.client.files.download(file=job.output, destination=str(raw))
        except BackendError as exc:
            if "HTTP 404" in str(exc):
                raise OutputMissing(f"job {job.name}: its output {job.output} is not there (404)") from exc
            raise
        try:
            media = self.media
            for result in read_result_lines(raw):
                if result.error is not None and media is not None and media.gone(result.error):
                    result = result._replace(error={**result.error, "restage": True})
                yield result
        finally:
            raw.unlink(missing_ok=True)

    def _output(self, job: Any) -> str | None:
        return job.dest.file_name if job.dest is not None else None

    def _info(self, job: Any) -> JobInfo:
        info = super()._info(job)
        if info.status in ("failed", "expired") and info.error is None:
            info = replace(info, error=self._raw_error(info.name))
        return info

    def _raw_error(self, name: str) -> str | None:
        """Why a job failed: google-genai drops the Operation's ``error`` for this API, the raw resource keeps it."""
        try:
            with api_errors(f"get {name}"):
                raw = orjson.loads(self.client._api_client.request("get", name, {}).body or b"{}")
        except (TransientError, BackendError, orjson.JSONDecodeError):
            return None  # the reason is a nicety; the job's state is what counts
        error = raw.get("error") or {}
        return f"{error.get('code', '')} {error.get('message', '')}".strip() or None


def _state(state: Any) -> str:
    return str(getattr(state, "name", state) or "STATE_UNSPECIFIED")


def make_client(api_key: str, base_url: str | None, limits: Deadlines | None = None) -> Any:
    """A google-genai client for the Developer API, pointed at ``base_url`` when one is given, every call bounded
    (libs/deadlines.py)."""
    from google import genai

    return genai.Client(api_key=api_key, http_options=genai_http_options(limits or deadlines(), base_url))


def read_result_lines(path: Path) -> Iterator[Result]:
    """Result lines of an output file: ``{"key", "response"}`` or ``{"key", "error" | "status"}``."""
    loads, dumps = orjson.loads, orjson.dumps  # locals: this loop runs once per line
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            try:
                item = loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.strip():  # a blank line: looked for only when a line is not JSON (no copy of each)
                    continue
                raise BackendError(f"{path.name}:{n}: the backend wrote a malformed result line: {exc}") from exc
            key = item.get("key")
            if type(key) is str and len(item) == 2:
                key_json = dumps(key)
                if line.startswith(b'{"key":%b,"response":' % key_json):
                    # the usual line, {"key":K,"response":…} written as orjson writes it: kept as it came
                    yield Result(key, item["response"], None, line if line.endswith(b"\n") else line + b"\n", key_json)
                    continue
            if key is None and isinstance(item.get("metadata"), dict):
                key = item["metadata"].get("key")
            yield Result(None if key is None else str(key), item.get("response"),
                         line_error(item.get("error") or item.get("status")))


def line_error(error: Any) -> dict[str, Any] | None:
    """A result line's error as ``{code, message}``, from an object or a bare string; None when empty."""
    if error is None or error == "":
        return None
    if isinstance(error, dict):
        return {"code": error.get("code"), "message": error.get("message") or str(error)}
    return {"code": None, "message": str(error)}
