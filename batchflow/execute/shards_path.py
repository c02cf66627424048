"""The default execution path: records read and rendered by batchflow into shard files, jobs staged through a
backend, results collected into the state dir and merged locally into the output, in input order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchflow import logs
from batchflow.answers.collect import collect, collect_lost, outcomes, redo_of, subset
from batchflow.answers.earlier import Earlier
from batchflow.answers.keep import keep
from batchflow.answers.merge import Tally, rows
from batchflow.backends.base import Backend, JobInfo
from batchflow.backends.registry import BackendFactory, open_backend
from batchflow.destinations.registry import open_destination
from batchflow.errors import BatchflowError, CallTimedOut, DataError
from batchflow.execute.path import NextJob
from batchflow.prepare.prepare import fingerprint, generation_prefix, prepare
from batchflow.prepare.staging import Stager
from batchflow.sources.registry import open_source
from batchflow.spec.spec import Spec
from batchflow.state.state import Job, Shard, State

log = logs.get_logger(__name__)


class ShardsPath:
    """Parts and units in ``<state dir>/gen-N``, one backend by ``backend.type``; answers kept per record."""

    recurring = True

    def __init__(self, spec: Spec, root: Path, backends: BackendFactory = open_backend) -> None:
        self.spec = spec
        self.root = root
        self._backends = backends
        self._backend: Backend | None = None
        self.staging_timed_out: CallTimedOut | None = None

    @property
    def jobs(self) -> Backend:
        if self._backend is None:
            self._backend = self._backends(self.spec, self.root)
        return self._backend

    def fingerprint(self) -> str:
        return fingerprint(self.spec)

    def source_stat(self) -> str:
        return open_source(self.spec.source).fingerprint()

    def check_output(self) -> None:
        try:
            open_destination(self.spec.output).check()
        except BatchflowError as exc:  # found before anything is spent: the user fixes the spec or the disk
            raise DataError(f"{exc} ({self.spec.where('output.path')})") from exc

    def prepare(self, root: Path, gen: int, earlier: Earlier | None, retry_errors: bool,
                stage: bool = False) -> State:
        stager = Stager(self.jobs, generation_prefix(self.spec.name, gen)) if stage else None
        state = prepare(self.spec, root, gen, earlier, retry_errors, stager)
        self.staging_timed_out = stager.timed_out if stager is not None else None
        return state

    def keep(self, state: State) -> dict[str, Any]:
        return keep(self.spec, state, self.root)

    def stage(self, job: Job) -> str:
        return self.jobs.stage(self.root / job.input, job.display_name)

    def create(self, shard: Shard, job: Job) -> JobInfo:
        return self.jobs.create(self.spec.model, self.spec.task, str(job.file), job.display_name)

    def collect(self, shard: Shard, job: Job) -> None:
        info = JobInfo(str(job.name), job.display_name, job.status, job.error, job.output)
        job.results = str(collect(self.jobs, self.root, shard, job, info).relative_to(self.root))
        freed = self.jobs.job_media_done(job.display_name)
        if freed:
            log.info("media of a collected job deleted", job=job.name, files=freed)

    def collect_lost(self, shard: Shard, job: Job, message: str) -> None:
        job.results = str(collect_lost(self.root, shard, job, message).relative_to(self.root))

    def next_job(self, shard: Shard, n: int) -> NextJob | None:
        retry, redo = self.spec.retry, redo_of(self.spec)
        if redo is None and shard.jobs[-1].failed == 0:
            return None  # the last job answered every request it sent: the rest were answered, or out of attempts
        keys = {k for k, o in outcomes(self.root, shard, redo).items()
                if not o.ok and o.attempts < retry.request_attempts and o.job_failures < retry.job_attempts}
        if not keys:
            return None
        rel, count, digest = subset(self.root, shard, keys, n, self._jobs_dir(shard))
        return NextJob(rel, count, digest)

    def _jobs_dir(self, shard: Shard) -> str:
        """Retry inputs go beside the generation's units."""
        return str(Path(shard.requests).parent.parent / "jobs")

    def merge(self, state: State) -> tuple[int, int]:
        tally = Tally()
        open_destination(self.spec.output).write(lambda: rows(self.spec, state, self.root, tally))
        return tally.rows, tally.ok

    def output_name(self) -> str:
        return self.spec.output.path or self.spec.output.table or "?"

    def output_exists(self) -> bool:
        path = self.spec.output.path
        if not path or "://" in path:
            return True  # not worth a network call on every cycle
        return Path(path).exists()

    def finished(self) -> None:
        if self._backend is not None:
            released = self._backend.release_media()
            if released:
                log.info("media released: every job reading them is collected", files=released)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
