"""A state that lives on GCS (``state.dir: gs://bucket/prefix``); the local state directory is only its cache.

- **The lock is a lease object**, ``<url>/lease.json`` (holder, host, pid, expiry), created with
  ``ifGenerationMatch=0`` and renewed every third of ``state.lease`` by a thread, each renewal a compare-and-swap
  on the object's generation. A lease past its expiry is taken over the same way; a live one ends the run with
  exit 75, naming its holder.
- **Every write of ``state.json`` is a compare-and-swap** on its generation, after the files it refers to are
  uploaded (those whose size or mtime changed since the last sync). A runner whose lease was taken over, or whose
  state was written by another, cannot overwrite it: it stops with exit 75, naming what happened.
- Both objects are written with a multipart upload (``upload_from_string``): GCS checks preconditions on every
  upload, fake-gcs-server (the tests' stand-in) only on multipart ones (docs/google-apis.md, "Traps").
- A run starts by bringing the cache up to date: ``state.json``, and every file whose GCS generation is not the
  one the cache last synced (recorded in the cache's ``.synced.json``); a cached file GCS no longer has is
  deleted. So a cache another host's run has since overtaken is never trusted for its sizes alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from batchflow import logs
from batchflow.errors import LockedError, SpecError
from batchflow.libs.deadlines import Deadlines, api_core_retry, bounded, deadlines, http_timeout, transfer_timeout
from batchflow.libs.storage import url_to_fs

log = logs.get_logger(__name__)

_LEASE, _STATE, _SYNCED = "lease.json", "state.json", ".synced.json"
_LOCAL_ONLY = ("lock", "lock.json", _STATE, _LEASE, _SYNCED)


class LeaseLost(LockedError):
    """Another run took the lease over, or wrote the state: this one stops without writing."""


class GcsState:
    """Pull, push and delete the files of one spec's state between ``url`` and the local cache ``local``."""

    def __init__(self, url: str, local: Path, lease_seconds: float) -> None:
        self.url = url.rstrip("/")
        self.local = local
        self.lease_seconds = lease_seconds
        self._fs, self._root = url_to_fs(self.url)
        bucket, _, self._prefix = self._root.partition("/")
        self._bucket = _bucket(bucket, self.url)
        self._generation = 0  # of state.json as this run last read or wrote it (0: there is none)
        # relative path -> [size, mtime_ns, GCS generation] of the cached file as last pulled or pushed
        self._synced: dict[str, list[int]] = {}
        self.lost: str | None = None  # why the lease is no longer ours
        self.lease_expires: float | None = None  # when the lease last written runs out (None: no lease held)
        self.deadlines = deadlines()
        # google-cloud-storage's timeout= (connect, read a byte) and retry= (its attempts ended within a bound);
        # every write here carries a generation precondition, so trying one again is safe
        self.call = {"timeout": http_timeout(self.deadlines), "retry": _retry(self.deadlines)}
        self.host = _host()

    def bounded(self, call: str) -> contextlib.AbstractContextManager[None]:
        """A timeout inside as the one line a run ends with: the call, on this state's URL, and GCS's host."""
        return bounded(f"{call} ({self.url})", self.host, self.deadlines)

    def _fs_call(self, size: int = 0) -> dict[str, float]:
        """fsspec's ``timeout=`` for one gcsfs call: its own attempts (six) bounded as a whole (libs/deadlines.py)."""
        return {"timeout": max(self.deadlines.worst_call, transfer_timeout(self.deadlines, size))}

    def _key(self, rel: str) -> str:
        return f"{self._prefix}/{rel}" if self._prefix else rel

    def pull(self) -> None:
        """The cache made current: state.json (its generation remembered) and every file that changed on GCS."""
        self.local.mkdir(parents=True, exist_ok=True)
        self._synced = self._load_synced()
        self._fs.invalidate_cache()  # gcsfs caches listings per instance: a second pull must see the bucket now
        remote: set[str] = set()
        with self.bounded("list the state"):
            listing = self._fs.find(self._root, detail=True, **self._fs_call())
        for path, info in listing.items():
            rel = path[len(self._root):].lstrip("/")
            if rel in _LOCAL_ONLY:
                continue
            remote.add(rel)
            generation, target = int(info.get("generation") or 0), self.local / rel
            known = self._synced.get(rel)
            if known and target.exists() and known[2] == generation and _stat(target) == known[:2]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.bounded(f"download {rel}"):
                self._fs.get_file(path, str(target), **self._fs_call(int(info.get("size") or 0)))
            self._synced[rel] = [*_stat(target), generation]
        for rel in [r for r in self._synced if r not in remote]:  # gone from GCS: gone from the cache
            (self.local / rel).unlink(missing_ok=True)
            del self._synced[rel]
        self._save_synced()
        with self.bounded("read state.json"):
            blob = self._bucket.get_blob(self._key(_STATE), **self.call)
        local_state = self.local / _STATE
        if blob is None:
            self._generation = 0
            local_state.unlink(missing_ok=True)  # the cache of a state that is no longer there
            return
        with self.bounded("read state.json"):
            data = blob.download_as_bytes(if_generation_match=blob.generation, **self.call)
        self._generation = int(blob.generation)
        tmp = local_state.with_suffix(".pulled")
        tmp.write_bytes(data)
        os.replace(tmp, local_state)

    def check_lease(self) -> None:
        """Before any write, and by the run between its steps: a lease lost, or past its expiry (its renewals
        failed, or this process was stopped for a while), ends the run without writing."""
        if not self.lost and self.lease_expires is not None and time.time() >= self.lease_expires:
            self.lost = "the lease expired without a renewal (another run may hold it now)"
        if self.lost:
            raise LeaseLost(f"{self.url}: {self.lost}; this run stops without writing the state")

    def push(self, state_json: bytes) -> None:
        """Upload what changed, then state.json if nobody else wrote it meanwhile (compare-and-swap)."""
        self.check_lease()
        for path in sorted(self.local.rglob("*")):
            rel = path.relative_to(self.local).as_posix()
            if (not path.is_file() or rel in _LOCAL_ONLY or ".tmp" in rel or rel.startswith(("old/", "."))
                    or "/." in rel):
                continue
            known = self._synced.get(rel)
            try:
                changed = known is None or _stat(path) != known[:2]
            except FileNotFoundError:  # replaced or removed since the listing (a collection writes beside us)
                continue
            if changed:
                self.check_lease()  # an upload may take a while: each file under a lease still held
                with self.bounded(f"upload {rel}"):
                    self._fs.put_file(str(path), f"{self._root}/{rel}", **self._fs_call(path.stat().st_size))
                    self._fs.invalidate_cache(f"{self._root}/{rel}")
                    info = self._fs.info(f"{self._root}/{rel}", **self._fs_call())
                self._synced[rel] = [*_stat(path), int(info.get("generation") or 0)]
        self._save_synced()
        from google.api_core import exceptions

        self.check_lease()
        blob = self._bucket.blob(self._key(_STATE))
        try:
            with self.bounded("write state.json"):
                blob.upload_from_string(state_json, content_type="application/json",
                                        if_generation_match=self._generation, **self.call)
        except exceptions.PreconditionFailed:
            self.lost = "another run wrote the state since this one read it (its lease was taken over)"
            raise LeaseLost(f"{self.url}: {self.lost}; this run stops without writing the state") from None
        self._generation = int(blob.generation)

    def delete(self, rel: str) -> None:
        """A file or a directory of the state, on GCS (the cache is the caller's)."""
        self.check_lease()
        target = f"{self._root}/{rel}"
        with self.bounded(f"delete {rel}"):
            if self._fs.exists(target, **self._fs_call()):
                self._fs.rm(target, recursive=True, **self._fs_call())
        self._synced = {k: v for k, v in self._synced.items() if k != rel and not k.startswith(f"{rel}/")}
        self._save_synced()

    def archive(self, old: Path, names: list[str]) -> None:
        """The archived cache ``old`` uploaded under ``old/<its name>/``, then the originals deleted."""
        self.check_lease()
        with self.bounded(f"archive {old.name}"):
            self._fs.put(str(old), f"{self._root}/old/{old.name}", recursive=True,
                         timeout=self.deadlines.worst_call * 10)  # many files, each bounded by gcsfs' own timeout
        for name in names:
            self.delete(name)
        self._delete_state()

    def _delete_state(self) -> None:
        from google.api_core import exceptions

        blob = self._bucket.blob(self._key(_STATE))
        with contextlib.suppress(exceptions.NotFound), self.bounded("delete state.json"):
            blob.delete(if_generation_match=self._generation or None, **self.call)
        self._generation = 0

    def _load_synced(self) -> dict[str, list[int]]:
        try:
            loaded: dict[str, list[int]] = json.loads((self.local / _SYNCED).read_text(encoding="utf-8"))
            return loaded
        except (OSError, ValueError):
            return {}

    def _save_synced(self) -> None:
        tmp = self.local / f"{_SYNCED}.tmp"
        tmp.write_text(json.dumps(self._synced), encoding="utf-8")
        os.replace(tmp, self.local / _SYNCED)

    def lease(self) -> Lease:
        return Lease(self)


class Lease:
    """One run at a time over a GCS state: the lease object, held and renewed while the run lives."""

    def __init__(self, state: GcsState) -> None:
        self._state = state
        self._blob = state._bucket.blob(state._key(_LEASE))
        self._generation = 0
        self._holder = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        from google.api_core import exceptions

        try:
            self._write(0)
        except exceptions.PreconditionFailed:
            with self._state.bounded("read the lease"):
                current = self._state._bucket.get_blob(self._blob.name, **self._state.call)
                info = json.loads(current.download_as_bytes(**self._state.call)) if current else {}
            if current is not None and float(info.get("expires", 0)) > time.time():
                raise LockedError(f"{self._state.url}: another run holds the lease ({_holder(info)}); "
                                  "try again when it ends") from None
            try:  # expired (its holder died): taken over, unless another run takes it first
                self._write(int(current.generation) if current is not None else 0)
            except exceptions.PreconditionFailed:
                raise LockedError(f"{self._state.url}: another run took the expired lease just now; "
                                  "try again later") from None
            log.warning("lease taken over: its holder did not renew it", state=self._state.url, was=_holder(info))
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from google.api_core import exceptions

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self._state.lost:
            with contextlib.suppress(exceptions.PreconditionFailed, exceptions.NotFound):
                self._blob.delete(if_generation_match=self._generation, **self._state.call)

    def _write(self, generation: int) -> None:
        sent = time.time()  # the expiry counts from before the call: the lease is never thought longer than it is
        info = {"holder": self._holder, "host": socket.gethostname(), "pid": os.getpid(),
                "expires": sent + self._state.lease_seconds, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with self._state.bounded("renew the lease"):
            self._blob.upload_from_string(json.dumps(info), content_type="application/json",
                                          if_generation_match=generation, **self._state.call)
        self._generation = int(self._blob.generation)
        self._state.lease_expires = float(info["expires"])  # type: ignore[arg-type]

    def _renew(self) -> None:
        """Every third of the lease: renewed. A renewal that meets a passing trouble is tried again at the next
        turn while the lease still holds; one refused (another run took it) or a lease run out is lost."""
        from google.api_core import exceptions

        while not self._stop.wait(self._state.lease_seconds / 3):
            try:
                self._write(self._generation)
            except exceptions.PreconditionFailed:
                self._lose("the lease was taken over by another run")
                return
            except Exception as exc:  # any failure: the lease may hold until its expiry
                if self._state.lease_expires is None or time.time() >= self._state.lease_expires:
                    self._lose(f"the lease could not be renewed before it expired ({type(exc).__name__}: {exc})")
                    return
                log.warning("the lease could not be renewed; trying again", state=self._state.url, error=str(exc))

    def _lose(self, why: str) -> None:
        self._state.lost = why
        log.error("lease lost", state=self._state.url, reason=why)


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _holder(info: dict[str, Any]) -> str:
    until = time.strftime("%H:%M:%S", time.localtime(float(info.get("expires", 0))))
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, until {until} unless renewed"


def _retry(d: Deadlines) -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    return api_core_retry(d, DEFAULT_RETRY)


def _host() -> str:
    """The host GCS calls go to: the emulator named by STORAGE_EMULATOR_HOST, else Google's."""
    named = os.environ.get("STORAGE_EMULATOR_HOST", "")
    return named.split("://", 1)[-1].rstrip("/") or "storage.googleapis.com"


def _bucket(name: str, url: str) -> Any:
    try:
        from google.cloud import storage  # type: ignore[attr-defined]
    except ImportError:
        raise SpecError(f"state.dir {url!r}: a gs:// state needs google-cloud-storage: "
                        "pip install 'batchflow[gcs]'") from None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="batchflow", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    else:
        client = storage.Client()
    return client.bucket(name)
