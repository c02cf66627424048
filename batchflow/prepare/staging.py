"""Staging while preparing: each unit's input uploaded as soon as its file is whole, a few at a time.

Uploading spends nothing, so it need not wait for the rule that nothing is *created* before every record is rendered
and every shard written: ``run`` hands each shard to a small pool of uploads as the shard-writing thread closes
it, and the last upload ends soon after the last shard. A preparation that fails deletes what was staged; a run
killed while uploading leaves files that the next one reuses (same display name, which carries the content's
digest, and same size) or deletes (same generation, other content). An upload that fails is left to the runner's
own stage step, which retries and reports it as it always has.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Protocol

from batchflow import logs
from batchflow.backends.base import JobInfo
from batchflow.errors import BatchflowError, CallTimedOut
from batchflow.state import state as st
from batchflow.state.state import Job

log = logs.get_logger(__name__)

# Uploads in flight at once. Against a local emulator one to four ended within the noise of each other (the upload
# is CPU-bound there, and shares two cores with the preparation); over a real network, where each upload waits on
# round trips, a few at a time keep up with the shards being written.
UPLOADS = 3


class Stages(Protocol):
    """What staging needs of a backend (``backends.Backend`` has it)."""

    def stage(self, path: Path, display_name: str) -> str: ...

    def staged_files(self, prefix: str) -> dict[str, tuple[str, int]]: ...

    def delete_staged(self, staged: str) -> None: ...

    def find_many(self, display_names: set[str]) -> dict[str, JobInfo]: ...


class Stager:
    """Uploads on a bounded pool of threads; ``take`` gives the units what was staged, ``discard`` deletes it."""

    def __init__(self, backend: Stages, prefix: str, workers: int = UPLOADS) -> None:
        self._backend = backend
        self._prefix = prefix  # the display names of this generation: left-over files under it are its own
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="stage")
        self._uploads: dict[str, tuple[str, Future[str]]] = {}  # display name -> (digest, the upload)
        self._lock = threading.Lock()
        self._left_over: dict[str, tuple[str, int]] | None = None
        self._failed = False  # after one failed upload, the rest are left to the runner's stage step
        self.timed_out: CallTimedOut | None = None  # the first upload that timed out (the run's last line names it)

    def stage(self, path: Path, display_name: str, digest: str) -> None:
        """Start uploading a unit's input (called from the shard-writing thread; it does not wait)."""
        if display_name in self._uploads or self._failed:
            return  # the same content under the same name (a part that is also a unit), or uploads failing
        self._uploads[display_name] = (digest, self._pool.submit(self._upload, path, display_name))

    def take(self, jobs: list[Job]) -> int:
        """Wait for every upload; record each staged file on its job (status staged, as the runner's stage step
        does); delete what no job takes. Returns how many jobs were staged."""
        staged = self._finished()
        taken = 0
        for job in jobs:
            found = staged.pop(job.display_name, None)
            if found is not None and found[0] == job.digest:
                job.file, job.status = found[1], st.STAGED
                taken += 1
            elif found is not None:
                staged[job.display_name] = found
        self._delete(ref for _, ref in staged.values())
        self._delete_left_over()
        return taken

    def discard(self, wait_for_uploads: bool = True) -> None:
        """The preparation failed: stop, wait for the uploads under way, and delete everything staged. Interrupted
        (Ctrl-C, SIGTERM), it waits for nothing and deletes nothing: the next run finds what was staged by its
        display name, and reuses or deletes it."""
        self._failed = True
        for _, upload in self._uploads.values():
            upload.cancel()
        if not wait_for_uploads:
            self._pool.shutdown(wait=False, cancel_futures=True)
            return
        self._delete(ref for _, ref in self._finished().values())
        self._delete_left_over()

    def _finished(self) -> dict[str, tuple[str, str]]:
        """(digest, reference) of every upload that succeeded, by display name; the pool shut down."""
        wait([upload for _, upload in self._uploads.values()])
        self._pool.shutdown()
        done: dict[str, tuple[str, str]] = {}
        for name, (digest, upload) in self._uploads.items():
            if not upload.cancelled() and upload.exception() is None:
                done[name] = (digest, upload.result())
        return done

    def _upload(self, path: Path, display_name: str) -> str:
        try:
            return self._upload_or_reuse(path, display_name)
        finally:
            # httpx leaves each chunk it sent (8 MiB) in a reference cycle, and the preparation beside us collects
            # cycles rarely (hotloop.relaxed_gc): without this, a 1M-record run held 410 MB at its peak; ~110 with it
            gc.collect(1)

    def _upload_or_reuse(self, path: Path, display_name: str) -> str:
        try:
            reused = self._reuse(display_name, path.stat().st_size)
            return reused if reused is not None else self._backend.stage(path, display_name)
        except BatchflowError as exc:
            self._failed = True
            if isinstance(exc, CallTimedOut) and self.timed_out is None:
                self.timed_out = exc
            log.warning("upload failed while preparing; the job is staged before it is created", error=str(exc),
                        display_name=display_name)
            raise

    def _reuse(self, display_name: str, size: int) -> str | None:
        """A file a killed run staged under this display name, with this size: the same content."""
        with self._lock:
            if self._left_over is None:
                self._left_over = self._backend.staged_files(self._prefix)
            found = self._left_over.get(display_name)
            if found is None or found[1] != size:
                return None
            del self._left_over[display_name]
        log.info("staged file reused: a run before this one uploaded it", file=found[0], display_name=display_name)
        return found[0]

    def _delete_left_over(self) -> None:
        """Files a killed run staged for this generation that nothing reused (the input changed since). One that a
        job was created from is kept: a state lost with its jobs running makes this generation's names again. One
        this run staged again under its name is this run's (on vertex, the same object, written again)."""
        stale = {name: ref for name, (ref, _) in (self._left_over or {}).items() if name not in self._uploads}
        if not stale:
            return
        try:
            created = self._backend.find_many(set(stale))
        except BatchflowError as exc:
            log.warning("could not check left-over staged files; they are kept", error=str(exc))
            return
        self._delete(ref for name, ref in stale.items() if name not in created)

    def _delete(self, refs: Iterable[str]) -> None:
        for ref in list(refs):
            try:
                self._backend.delete_staged(ref)
            except BatchflowError as exc:  # the service drops unused files in time: a leftover is no harm
                log.warning("could not delete a staged file nothing will use", file=ref, error=str(exc))
