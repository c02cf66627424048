"""A state that lives on GCS (``state.dir: gs://bucket/prefix``); the local state directory is only its cache.

- **The lock is a lease object**, ``<url>/lease.json`` (holder, host, pid, expiry), created with
  ``ifGenerationMatch=0`` and renewed every third of ``state.lease`` by a thread, each renewal a compare-and-swap
  on the object's generation. A lease past its expiry is taken over the same way; a live one ends the run with
  exit 75, naming its holder.
- **Files are content-addressed objects**, ``<url>/objects/<sha256 of the bytes>``, written once and never
  changed: a generation whose parts hold the same bytes as the one before (an input that grew at its end, a
  re-run) names the same objects and uploads nothing for them. A file is hashed only when its size or mtime
  changed since it was last synced, and uploaded only when no object of that hash is known to exist.
- **``<url>/state.json`` is the manifest**, ``{"format": 4, "files": {path: [sha256, size]}, "retired": {sha256:
  generation}, "state": …}``: the state and every file of it, committed by one compare-and-swap on its
  generation, after every object it names is uploaded. A runner whose lease was taken over, or whose state was
  written by another, cannot overwrite it: it stops with exit 75, naming what happened. A crash before the commit
  leaves objects nothing names, and the manifest before, whole.
- **Garbage**: an object the manifest stops naming is *retired* with the state's generation then, and deleted
  once a later generation's manifest is committed; so the objects of the last committed manifest of the
  generation before stay readable (a ``plan`` or ``status`` reading without the lease, which also reads the
  manifest again when an object it names is gone). Deletions happen only under the lease, after the commit,
  of objects the committed manifest neither names nor keeps retired; the first commit of a run also deletes the
  objects a crashed run uploaded and never committed, and the files of the earlier layout (one object per path).
- Not uploaded: the answers' index by key (``answers/index/``, when stamped as made from the parts), rebuilt
  from the parts where it is missing (``answers/keep.py``): it is rewritten whole each generation, so it would
  cost about the input's size again.
- Both control objects are written with a multipart upload (``upload_from_string``): GCS checks preconditions on
  every upload, fake-gcs-server (the tests' stand-in) only on multipart ones (docs/google-apis.md, "Traps").
- A run starts by bringing the cache up to date from the manifest: a file whose cached bytes have another hash is
  fetched (copied from a cached file of that hash when there is one, else downloaded); a cached file the
  manifest no longer names is deleted. A state of the earlier layout is read as it is, and rewritten in this one
  by its next commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batchflow import logs
from batchflow.errors import CallTimedOut, LockedError, SpecError, StateError
from batchflow.libs.deadlines import Deadlines, api_core_retry, bounded, deadlines, http_timeout, transfer_timeout
from batchflow.libs.storage import url_to_fs

log = logs.get_logger(__name__)

_LEASE, _STATE, _SYNCED, _OBJECTS = "lease.json", "state.json", ".synced.json", "objects"
_LOCAL_ONLY = ("lock", "lock.json", _STATE, _LEASE, _SYNCED)
_DERIVED = "/answers/index/"  # rebuilt from the parts where it is missing (answers/keep.py) ...
DERIVED_STAMP = ".made-from"  # ... when it holds this stamp: then never uploaded (an index of answers kept
#                               without digests cannot be made again, and is uploaded as any file)
MANIFEST_FORMAT = 4  # of state.json on GCS; batchflow before it reads "state format 4 is newer ...; upgrade"
RETIRED_GENERATIONS = 1  # generations an object outlives the last manifest that named it (then deleted)
_PULL_ATTEMPTS = 3  # manifests read in turn when objects one names were collected under a reader


class LeaseLost(LockedError):
    """Another run took the lease over, or wrote the state: this one stops without writing."""


class GcsState:
    """Pull, push and delete the files of one spec's state between ``url`` and the local cache ``local``."""

    def __init__(self, url: str, local: Path, lease_seconds: float, limits: Deadlines | None = None) -> None:
        self.url = url.rstrip("/")
        self.local = local
        self.lease_seconds = lease_seconds
        self._fs, self._root = url_to_fs(self.url)
        bucket, _, self._prefix = self._root.partition("/")
        self._bucket = _bucket(bucket, self.url)
        self._generation = 0  # of state.json as this run last read or wrote it (0: there is none)
        # relative path -> [size, mtime_ns, sha256] of the cached file as last pulled or pushed (a GCS
        # generation for the third, in a cache of the earlier layout)
        self._synced: dict[str, list[Any]] = {}
        self._committed: dict[str, list[Any]] = {}  # the files the manifest last read or written names
        self._retired: dict[str, int] = {}  # objects it keeps though it names them no more, by generation
        self._swept = False  # objects nothing names were looked for since this process first committed
        self.lost: str | None = None  # why the lease is no longer ours
        self.lease_expires: float | None = None  # when the lease last written runs out (None: no lease held)
        self.hung = False  # the last call to GCS timed out, past its attempts
        self.deadlines = limits or deadlines()  # the spec's call policy (retry.call_attempts), as every remote call
        # google-cloud-storage's timeout= (connect, read a byte) and retry= (its attempts ended within a bound);
        # every write here carries a generation precondition, so trying one again is safe
        self.call = {"timeout": http_timeout(self.deadlines), "retry": _retry(self.deadlines)}
        self.host = _host()

    @contextlib.contextmanager
    def bounded(self, call: str) -> Iterator[None]:
        """A timeout inside as the one line a run ends with: the call, on this state's URL, and GCS's host. Whether
        it timed out is remembered (``hung``): a run ending then asks nothing more of GCS (``Lease.__exit__``)."""
        try:
            with bounded(f"{call} ({self.url})", self.host, self.deadlines):
                yield
        except CallTimedOut:
            self.hung = True
            raise
        self.hung = False

    def _fs_call(self, size: int = 0) -> dict[str, float]:
        """fsspec's ``timeout=`` for one gcsfs call: its own attempts (six) bounded as a whole (libs/deadlines.py)."""
        return {"timeout": max(self.deadlines.worst_call, transfer_timeout(self.deadlines, size))}

    def _key(self, rel: str) -> str:
        return f"{self._prefix}/{rel}" if self._prefix else rel

    def pull(self) -> None:
        """The cache made current from the manifest: state.json, and every file it names that the cache lacks."""
        self.local.mkdir(parents=True, exist_ok=True)
        self._synced = self._load_synced()
        for attempt in range(_PULL_ATTEMPTS):
            data = self._read_state()
            body = _manifest(data)
            if data is not None and body is None:  # the earlier layout: a file per object, state.json alone
                self._pull_loose()
                self._write_local_state(data)
                return
            try:
                self._pull_objects(body or {})
            except FileNotFoundError as exc:  # collected under a reader without the lease: the manifest moved on
                if attempt + 1 == _PULL_ATTEMPTS:  # a run is writing it, faster than this reads: later, then
                    raise LockedError(f"{self.url}: an object the state names is gone ({exc}): a run is writing "
                                      "the state; try again when it ends") from None
                log.info("an object of the state was collected meanwhile; reading the state again", state=self.url)
                continue
            self._write_local_state(None if body is None else orjson.dumps(
                body["state"], option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            return

    def _read_state(self) -> bytes | None:
        """state.json's bytes (its generation remembered), or None when there is none."""
        with self.bounded("read state.json"):
            blob = self._bucket.get_blob(self._key(_STATE), **self.call)
        if blob is None:
            self._generation = 0
            return None
        with self.bounded("read state.json"):
            data: bytes = blob.download_as_bytes(if_generation_match=blob.generation, **self.call)
        self._generation = int(blob.generation)
        return data

    def _write_local_state(self, data: bytes | None) -> None:
        local_state = self.local / _STATE
        if data is None:
            local_state.unlink(missing_ok=True)  # the cache of a state that is no longer there
            return
        tmp = local_state.with_suffix(".pulled")
        tmp.write_bytes(data)
        os.replace(tmp, local_state)

    def _pull_objects(self, body: dict[str, Any]) -> None:
        files: dict[str, list[Any]] = body.get("files", {})
        self._committed, self._retired = files, dict(body.get("retired", {}))
        cached = {entry[2]: rel for rel, entry in self._synced.items() if _hashed(entry)}
        for rel, (digest, size) in files.items():
            target = self.local / rel
            known = self._synced.get(rel)
            if known and _hashed(known) and known[2] == digest and target.exists() and _stat(target) == known[:2]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.pulled")
            source = cached.get(digest)
            if source is not None and self._holds(source, digest):
                shutil.copyfile(self.local / source, tmp)  # the same bytes under another name: no download
            else:
                with self.bounded(f"download {rel}"):
                    self._fs.get_file(self._object(digest), str(tmp), **self._fs_call(int(size)))
                if _sha256(tmp) != digest:  # an object is its bytes' hash: another is never taken for it
                    tmp.unlink()
                    raise StateError(f"{self._object(digest)} ({rel}): the object's bytes are not those its name "
                                     "says; delete it and run again (it is uploaded anew from a cache that has it)")
            os.replace(tmp, target)
            self._synced[rel] = [*_stat(target), digest]
            cached[digest] = rel
        for rel in [r for r in self._synced if r not in files]:  # no longer named: gone from the cache
            (self.local / rel).unlink(missing_ok=True)
            del self._synced[rel]
        self._save_synced()

    def _holds(self, rel: str, digest: str) -> bool:
        known = self._synced.get(rel)
        path = self.local / rel
        return bool(known and known[2] == digest and path.exists() and _stat(path) == known[:2])

    def _pull_loose(self) -> None:
        """A state of the earlier layout: every file whose GCS generation is not the one last synced."""
        self._committed, self._retired = {}, {}
        self._fs.invalidate_cache()  # gcsfs caches listings per instance: a second pull must see the bucket now
        remote: set[str] = set()
        with self.bounded("list the state"):
            listing = self._fs.find(self._root, detail=True, **self._fs_call())
        for path, info in listing.items():
            rel = path[len(self._root):].lstrip("/")
            if rel in _LOCAL_ONLY or rel.startswith((f"{_OBJECTS}/", "old/")):
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

    def check_lease(self) -> None:
        """Before any write, and by the run between its steps: a lease lost, or past its expiry (its renewals
        failed, or this process was stopped for a while), ends the run without writing."""
        if not self.lost and self.lease_expires is not None and time.time() >= self.lease_expires:
            self.lost = "the lease expired without a renewal (another run may hold it now)"
        if self.lost:
            raise LeaseLost(f"{self.url}: {self.lost}; this run stops without writing the state")

    def push(self, state_json: bytes) -> None:
        """Upload the objects no manifest has yet, then the manifest if nobody else wrote it meanwhile
        (compare-and-swap), then delete what no manifest keeps."""
        self.check_lease()
        files = self._upload_files()
        gen = int(orjson.loads(state_json).get("gen") or 0)
        retired = self._retire(files, gen)
        body = b'{"format":%d,"files":%s,"retired":%s,"state":%s}' % (
            MANIFEST_FORMAT, orjson.dumps(files), orjson.dumps(retired), state_json)
        from google.api_core import exceptions

        self.check_lease()
        blob = self._bucket.blob(self._key(_STATE))
        try:
            with self.bounded("write state.json"):
                blob.upload_from_string(body, content_type="application/json",
                                        if_generation_match=self._generation, **self.call)
        except exceptions.PreconditionFailed:
            self.lost = "another run wrote the state since this one read it (its lease was taken over)"
            raise LeaseLost(f"{self.url}: {self.lost}; this run stops without writing the state") from None
        self._generation = int(blob.generation)
        due = not self._swept or any(g + RETIRED_GENERATIONS <= gen for g in self._retired.values())
        self._committed, self._retired = files, retired
        if due:
            self._collect_garbage()

    def _upload_files(self) -> dict[str, list[Any]]:
        """Every file of the cache as the manifest names it, ``path -> [sha256, size]``, each one's object
        uploaded unless it is known to be there."""
        files: dict[str, list[Any]] = {}
        present = self._present()
        for path in sorted(self.local.rglob("*")):
            rel = path.relative_to(self.local).as_posix()
            if not _synced_file(path, rel):
                continue
            try:
                stat = _stat(path)
            except FileNotFoundError:  # replaced or removed since the listing (a collection writes beside us)
                continue
            known = self._synced.get(rel)
            if known and _hashed(known) and stat == known[:2]:
                files[rel] = [known[2], stat[0]]
                continue
            digest = _sha256(path)
            if digest not in present:
                self.check_lease()  # an upload may take a while: each file under a lease still held
                with self.bounded(f"upload {rel}"):
                    self._fs.put_file(str(path), self._object(digest), **self._fs_call(stat[0]))
                present.add(digest)
            try:
                changed = _stat(path) != stat
            except FileNotFoundError:
                changed = True
            if changed:  # rewritten while it was read: named as it was before, if at all, and read again next time
                if rel in self._committed:
                    files[rel] = self._committed[rel]
                continue
            self._synced[rel] = [*stat, digest]
            files[rel] = [digest, stat[0]]
        self._save_synced()
        return files

    def _present(self) -> set[str]:
        """The objects known to exist: those the last manifest names or keeps retired, and those uploaded since."""
        return ({entry[0] for entry in self._committed.values()} | set(self._retired)
                | {entry[2] for entry in self._synced.values() if _hashed(entry)})

    def _retire(self, files: dict[str, list[Any]], gen: int) -> dict[str, int]:
        """The objects kept though no longer named: those the manifest stops naming now, and those retired
        during this generation (earlier ones are dropped: deleted once this manifest is committed)."""
        named = {entry[0] for entry in files.values()}
        retired = {digest: g for digest, g in self._retired.items()
                   if g + RETIRED_GENERATIONS > gen and digest not in named}
        for entry in self._committed.values():
            if entry[0] not in named:
                retired.setdefault(entry[0], gen)
        return retired

    def _collect_garbage(self) -> None:
        """Under the lease, after the commit: every object the manifest neither names nor keeps retired, and
        every file of the earlier layout (the lease, the manifest and ``old/`` stay)."""
        self.check_lease()
        keep = {entry[0] for entry in self._committed.values()} | set(self._retired)
        self._fs.invalidate_cache()
        with self.bounded("list the state"):
            listing = self._fs.find(self._root, **self._fs_call())
        garbage = []
        for path in listing:
            rel = path[len(self._root):].lstrip("/")
            if rel in (_STATE, _LEASE) or rel.startswith("old/"):
                continue
            if rel.startswith(f"{_OBJECTS}/") and rel[len(_OBJECTS) + 1:] in keep:
                continue
            garbage.append(path)
        if garbage:
            self.check_lease()
            with self.bounded(f"delete {len(garbage)} unused object(s)"):
                self._fs.rm(garbage, **self._fs_call())
            log.info("unused objects deleted", state=self.url, objects=len(garbage))
        self._swept = True

    def _object(self, digest: str) -> str:
        return f"{self._root}/{_OBJECTS}/{digest}"

    def delete(self, rel: str) -> None:
        """A file or a directory of the state: no longer synced, so the next manifest names it no more (its
        objects are collected after that; the cache is the caller's)."""
        self.check_lease()
        self._synced = {k: v for k, v in self._synced.items() if k != rel and not k.startswith(f"{rel}/")}
        self._save_synced()

    def archive(self, old: Path, names: list[str]) -> None:
        """The archived cache ``old`` uploaded under ``old/<its name>/`` (a file per path), then the state
        deleted; its objects are collected by the next commit."""
        self.check_lease()
        with self.bounded(f"archive {old.name}"):
            self._fs.put(str(old), f"{self._root}/old/{old.name}", recursive=True,
                         timeout=self.deadlines.worst_call * 10)  # many files, each bounded by gcsfs' own timeout
        for name in names:
            self.delete(name)
        self._delete_state()
        self._committed, self._retired, self._swept = {}, {}, False

    def _delete_state(self) -> None:
        from google.api_core import exceptions

        blob = self._bucket.blob(self._key(_STATE))
        with contextlib.suppress(exceptions.NotFound), self.bounded("delete state.json"):
            blob.delete(if_generation_match=self._generation or None, **self.call)
        self._generation = 0

    def _load_synced(self) -> dict[str, list[Any]]:
        try:
            loaded: dict[str, list[Any]] = json.loads((self.local / _SYNCED).read_text(encoding="utf-8"))
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
            self._write(0, "take the lease")
        except exceptions.PreconditionFailed:
            with self._state.bounded("read the lease"):
                current = self._state._bucket.get_blob(self._blob.name, **self._state.call)
                info = json.loads(current.download_as_bytes(**self._state.call)) if current else {}
            if current is not None and float(info.get("expires", 0)) > time.time():
                raise LockedError(f"{self._state.url}: another run holds the lease ({_holder(info)}); "
                                  "try again when it ends") from None
            try:  # expired (its holder died): taken over, unless another run takes it first
                self._write(int(current.generation) if current is not None else 0, "take the expired lease over")
            except exceptions.PreconditionFailed:
                raise LockedError(f"{self._state.url}: another run took the expired lease just now; "
                                  "try again later") from None
            log.warning("lease taken over: its holder did not renew it", state=self._state.url, was=_holder(info))
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """The lease given back, unless it is lost or GCS just timed out: a run ends within its deadline plus one
        call's bound, so it waits on GCS for nothing more (neither the renewal under way, bounded by its own
        timeout, nor a release): the lease runs out by itself."""
        self._stop.set()
        if not self._state.hung and self._thread is not None:
            self._thread.join()
        if self._state.lost:
            return
        if self._state.hung:
            log.warning("the lease is left to run out: GCS did not answer", state=self._state.url,
                        expires=_when(self._state.lease_expires))
            return
        self._release()

    def _release(self) -> None:
        """The lease deleted if it is still this run's; a release that fails only leaves a lease that runs out, so
        it is a warning, never the run's outcome."""
        from google.api_core import exceptions

        try:
            with self._state.bounded("give the lease back"):
                self._blob.delete(if_generation_match=self._generation, **self._state.call)
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            pass
        except Exception as exc:  # any failure: the lease runs out by itself
            log.warning("the lease was not given back; it runs out by itself", state=self._state.url,
                        error=str(exc), expires=_when(self._state.lease_expires))

    def _write(self, generation: int, call: str = "renew the lease") -> None:
        sent = time.time()  # the expiry counts from before the call: the lease is never thought longer than it is
        info = {"holder": self._holder, "host": socket.gethostname(), "pid": os.getpid(),
                "expires": sent + self._state.lease_seconds, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with self._state.bounded(call):
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


def _manifest(data: bytes | None) -> dict[str, Any] | None:
    """The manifest in state.json's bytes; None for a state of the earlier layout (or bytes that are no JSON: the
    state's reader says what is wrong with them)."""
    if data is None:
        return None
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) and "files" in body and "state" in body else None


def _synced_file(path: Path, rel: str) -> bool:
    """Whether a path of the cache belongs on GCS: not the local lock, the manifest's own copy, a temporary or
    hidden file, the archive (uploaded on its own) or the derived index."""
    if rel in _LOCAL_ONLY or ".tmp" in rel or rel.startswith(("old/", ".")) or "/." in rel:
        return False
    if _DERIVED in f"/{rel}" and (path.parent / DERIVED_STAMP).exists():
        return False
    return path.is_file()


def _hashed(entry: list[Any]) -> bool:
    return len(entry) == 3 and isinstance(entry[2], str)


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _when(expires: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(expires)) if expires is not None else "?"


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
    # google-cloud-storage >= 3.17 reads a bucket's metadata (for OpenTelemetry span attributes) on a thread of
    # its own at the first call, with its own 10 s timeout and two minutes of retries: a call batchflow does not
    # bound nor need (docs/google-apis.md, "Traps"); the client checks this attribute before each such fetch
    client._bucket_metadata_cache = None
    return client.bucket(name)
