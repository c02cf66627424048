"""``batchflow cleanup``: delete what a spec's runs left at the service that batchflow alone made and no job of
the spec still reads: media uploads (by content), the jobs' uploaded request lines and, on Vertex, the
predictions its jobs wrote to the staging bucket once their answers are collected.

A job still reads its files while it may run: staged (a later run creates it from its file), submitting, or
pending / running as the service says now. Its request lines are kept, and so are the media its lines name; a
job the service has that the state does not know (a lost state) keeps every media upload, since which it reads
cannot be told. Everything else goes: a later run uploads again what it needs. The Gemini API's own files (a
batch's output) are left to the service. Predictions (``Stored.holds_answers``) are the only copy of answers
not yet collected, so they go only once the state holds the job as collected (or it belongs to a generation
before the state's, which was settled before the next one was planned, and whose names no run adopts again);
with no state, or a job the state does not know, they are kept: a run may adopt that job and collect them. The
answers themselves live in the state (``answers/``), so a later run needs none of this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchflow import logs
from batchflow.backends.base import JobInfo, Stored
from batchflow.execute.path import JobClient
from batchflow.execute.runner import Runner
from batchflow.prepare.prepare import display_name_generation
from batchflow.spec.spec import Spec
from batchflow.state import state as st
from batchflow.state.state import Job, State

log = logs.get_logger(__name__)

_MAY_RUN = frozenset({st.STAGED, st.SUBMITTING, *st.REMOTE})  # a job of these may still read its inputs


@dataclass
class CleanupReport:
    """What ``cleanup`` deleted (or, ``dry_run``, would delete) and what it kept, with why."""

    dry_run: bool
    deleted: list[Stored] = field(default_factory=list)
    kept: list[tuple[Stored, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{verb} {s.ref} ({s.kind}{_what(s)})" for s in self.deleted]
        lines += [f"kept {s.ref} ({s.kind}{_what(s)}): {why}" for s, why in self.kept]
        size = sum(s.size or 0 for s in self.deleted)
        lines.append(f"{verb} {len(self.deleted)} file(s), {size:,} bytes; kept {len(self.kept)}")
        return "\n".join(lines)

    @property
    def data(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run,
                "deleted": [{"ref": s.ref, "kind": s.kind, "bytes": s.size} for s in self.deleted],
                "kept": [{"ref": s.ref, "kind": s.kind, "why": why} for s, why in self.kept]}


def cleanup(spec: Spec, dry_run: bool = False) -> CleanupReport:
    """Under the spec's lock (a live run holds it: exit 75, try again later), delete what no job reads."""
    runner = Runner(spec)
    with runner.store.lock():
        try:
            return clean(runner, dry_run)
        finally:
            runner.path.close()


def clean(runner: Runner, dry_run: bool) -> CleanupReport:
    backend = runner.path.jobs
    spec_name = runner.spec.name
    stored = [s for s in backend.stored(spec_name)
              if s.job is None or display_name_generation(spec_name, s.job) is not None]
    report = CleanupReport(dry_run)
    if not stored:
        return report
    state = runner.store.load()
    running = _running_jobs(backend, state, {s.job for s in stored if s.job})
    media_kept = _media_read(backend, runner.root, running)
    uncollected = _uncollected(state, spec_name, {s.job for s in stored if s.job and s.holds_answers})
    for item in stored:
        why = _why_kept(item, running, media_kept, uncollected)
        if why is not None:
            report.kept.append((item, why))
            continue
        if not dry_run:
            backend.delete_stored(item)
            log.info("deleted", file=item.ref, kind=item.kind)
        report.deleted.append(item)
    return report


def _running_jobs(backend: JobClient, state: State | None, names: set[str]) -> dict[str, Job | None]:
    """The jobs that may still read their files, by display name: the state's that may run (as the service says
    now), and those the service runs under this spec's names that the state does not know (None: no lines)."""
    known = {j.display_name: j for _, j in state.jobs()} if state is not None else {}
    maybe = {name: j for name, j in known.items() if j.status in _MAY_RUN}
    asked = (names - set(known)) | {n for n, j in maybe.items() if j.status != st.STAGED}
    service: dict[str, JobInfo] = backend.find_many(asked) if asked else {}
    running: dict[str, Job | None] = {}
    for name, job in maybe.items():
        info = service.get(name)
        if info is None or info.status not in st.FINISHED:
            running[name] = job  # staged, maybe created, or still pending / running
    for name in names - set(known):
        info = service.get(name)
        if info is not None and info.status not in st.FINISHED:
            running[name] = None
    return running


def _media_read(backend: JobClient, root: Path, running: dict[str, Job | None]) -> dict[str, str] | str:
    """The media contents running jobs read (content -> a job reading it), or, when one job's cannot be told,
    why every media upload is kept."""
    read: dict[str, str] = {}
    for name, job in running.items():
        try:
            contents = backend.media_read(root / job.input) if job is not None else None
        except OSError:
            contents = None
        if contents is None:
            return f"job {name} may run and which media it reads cannot be told; every media upload is kept"
        for content in contents:
            read.setdefault(content, name)
    return read


def _uncollected(state: State | None, spec_name: str, names: set[str]) -> dict[str, str]:
    """The jobs among ``names`` whose answers a run may still collect from their output, each with why."""
    if state is None:
        return {n: f"no state knows job {n}: a run may adopt it and collect its answers from here" for n in names}
    known = {j.display_name: j for _, j in state.jobs()}
    why: dict[str, str] = {}
    for name in names:
        job = known.get(name)
        if job is not None and job.status != st.COLLECTED:
            why[name] = f"the answers of job {name} are not collected yet: a run collects them from here first"
        elif job is None and (display_name_generation(spec_name, name) or 0) >= state.gen:
            why[name] = f"the state does not know job {name}: a run may adopt it and collect its answers from here"
    return why


def _why_kept(item: Stored, running: dict[str, Job | None], media: dict[str, str] | str,
              uncollected: dict[str, str]) -> str | None:
    if item.job is not None:
        if item.job in running:
            return f"its job {item.job} may still run and {'write' if item.holds_answers else 'read'} it"
        return uncollected.get(item.job) if item.holds_answers else None
    if isinstance(media, str):
        return media
    reader = media.get(item.content or "")
    return f"job {reader} may still run and read it" if reader is not None else None


def _what(item: Stored) -> str:
    if item.job is not None:
        return f" of job {item.job}"
    return f", sha256 {item.content[:12]}…" if item.content else ""
