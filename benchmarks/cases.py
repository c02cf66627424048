"""The benchmark's cases, each run alone in a fresh process: ``python -m benchmarks.cases CASE PARAMS``.

A case prints one JSON line: ``wall`` and ``cpu`` seconds of the measured work (imports and setup excluded,
alike for batchflow and its floor: the API cases import google-genai before the clock starts, as the others import
batchflow) and ``rss_mb``, the process's peak resident memory (its threads included).
The floors are what a careful user would write by hand with orjson; batchflow's cases run the code ``run`` runs.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from batchflow.execute.runner import NotFinished, Runner
from batchflow.state.shard_files import request_key
from batchflow.state.state import StateStore, state_store
from benchmarks import data as bench_data

_NL = orjson.OPT_APPEND_NEWLINE
_FLUSH = 1 << 20


def floor(p: dict[str, Any]) -> None:
    """Parse each line, build the request by hand, serialise it: one pass, large buffered writes."""
    make, loads, dumps, buf = bench_data.floor_request, orjson.loads, orjson.dumps, bytearray()
    kind = p["kind"]
    with open(p["data"], "rb") as src, open(Path(p["dir"]) / "floor.jsonl", "wb") as out:
        for line in src:
            buf += dumps(make(kind, loads(line)), option=_NL)
            if len(buf) > _FLUSH:
                out.write(buf)
                buf.clear()
        out.write(buf)


def naive(p: dict[str, Any]) -> None:
    """The script a user would write by hand: json, a Jinja2 ``Template.render`` per record, json.dumps."""
    import jinja2

    template = jinja2.Template(bench_data.PROMPT)
    with open(p["data"], encoding="utf-8") as src, open(Path(p["dir"]) / "naive.jsonl", "w") as out:
        for line in src:
            record = json.loads(line)
            request = {"contents": [{"role": "user", "parts": [{"text": template.render(**record)}]}]}
            out.write(json.dumps({"key": record["id"], "request": request}) + "\n")


def prep(p: dict[str, Any]) -> None:
    """Read -> render -> key -> shard files, exactly as ``batchflow run`` does before it submits anything."""
    Runner(bench_data.load(Path(p["spec"]))).load_or_prepare()


def _prep_setup(p: dict[str, Any]) -> None:
    shutil.rmtree(state_store(bench_data.load(Path(p["spec"]))).dir, ignore_errors=True)


def submitted(p: dict[str, Any]) -> dict[str, float]:
    """``run`` until every job is created (against an emulator whose jobs stay pending): prep, staging, creates.
    Also when the preparation returned (``prepared``: staged too, where the version measured stages meanwhile).

    ``--no-wait`` ends the run there, after one poll of the jobs it created (one paged list)."""
    start, marks = time.perf_counter(), {}
    runner = Runner(bench_data.load(Path(p["spec"])))
    prepare = runner.path.prepare

    def timed(*args: Any, **kwargs: Any) -> Any:
        state = prepare(*args, **kwargs)
        marks["prepared"] = time.perf_counter() - start
        return state

    setattr(runner.path, "prepare", timed)  # noqa: B010 (mypy refuses assigning to a method)
    with contextlib.suppress(NotFinished):
        runner.run(wait=False)
    return marks


def upload_floor(p: dict[str, Any]) -> None:
    """The same shard files through google-genai's ``files.upload``, one after another: the floor of staging."""
    from google.genai import types

    client = genai_client(p["url"])
    for path in sorted(Path(p["shards"]).glob("shard-?????.jsonl")):
        client.files.upload(file=str(path), config=types.UploadFileConfig(mime_type="jsonl", display_name=path.name))


def _sdk_setup(p: dict[str, Any]) -> None:
    """google-genai imported before the clock starts (about 0.6 s here, as long for a run of ten records as of a
    million): imported inside the case, it was charged to batchflow's run and the raw upload, not the prep alone."""
    from google import genai  # noqa: F401
    from google.genai import batches, files, types  # noqa: F401


def _and_sdk(setup: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def both(p: dict[str, Any]) -> None:
        setup(p)
        _sdk_setup(p)

    return both


def genai_client(url: str) -> Any:
    """A google-genai client of the emulator at ``url`` (google-genai imported when it is used, as batchflow does)."""
    from google import genai
    from google.genai import types

    return genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=url))


def outputs(client: Any, spec_name: str) -> list[str] | None:
    """The output files of a spec's jobs (one paged ``batches.list``) once every job has SUCCEEDED with its file;
    None before."""
    from google.genai import types

    jobs = [job for job in client.batches.list(config=types.ListBatchJobsConfig(page_size=100))
            if str(job.display_name).startswith(f"batchflow-{spec_name}-")]
    if not jobs or any(job.state != types.JobState.JOB_STATE_SUCCEEDED or not (job.dest and job.dest.file_name)
                       for job in jobs):
        return None
    return [str(job.dest.file_name) for job in jobs]


class _Collected(Exception):
    """Ends the ``collected`` case's run at its keep step."""


def collected(p: dict[str, Any]) -> dict[str, float]:
    """``run`` on a state whose jobs have all succeeded at the service, until every job is collected and every unit
    settled (a poll, then each output downloaded and read into results); ``collected``: when that was.

    The stop is ``ExecutionPath.keep``, which the runner calls once every unit is settled, before the rest of a
    run's end, however it collects (one job after another, or in parallel, streaming)."""
    start, marks = time.perf_counter(), {}
    runner = Runner(bench_data.load(Path(p["spec"])))

    def stop(*_args: Any, **_kwargs: Any) -> Any:
        marks["collected"] = time.perf_counter() - start
        raise _Collected

    setattr(runner.path, "keep", stop)  # noqa: B010 (mypy refuses assigning to a method)
    with contextlib.suppress(_Collected):
        runner.run()
    if not marks:
        raise RuntimeError("the run ended without reaching its keep step: the case measures nothing")
    return marks


def _collected_setup(p: dict[str, Any]) -> None:
    """The state set aside (``set_aside``) put back: jobs created and succeeded, none collected."""
    root = state_store(bench_data.load(Path(p["spec"]))).dir
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(_aside(Path(p["spec"])), root, copy_function=_link_or_copy)
    os.sync()  # what the copy wrote is not written back while the case runs


def set_aside(spec_path: Path) -> None:
    """A copy of the spec's state beside it, for ``collected`` to start each repetition from."""
    aside = _aside(spec_path)
    shutil.rmtree(aside, ignore_errors=True)
    shutil.copytree(state_store(bench_data.load(spec_path)).dir, aside, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns("lock", "lock.json"))


def _aside(spec_path: Path) -> Path:
    return spec_path.with_name(f"{spec_path.stem}.submitted")


def _link_or_copy(src: str, dst: str) -> None:
    # The rendered shard files, most of a state's bytes, are only read once prepared: linked, not copied, so a
    # restore writes little. Every other file is copied: a run may rewrite it.
    if Path(src).parent.name == "shards":
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def download_floor(p: dict[str, Any]) -> dict[str, float]:
    """Each job's output file through google-genai's ``files.download``, one after another, to local files: the
    floor of collecting. The names come from one ``batches.list``, as a script that polls its jobs has them."""
    start = time.perf_counter()
    client = genai_client(p["url"])
    names = outputs(client, p["spec_name"])
    if names is None:
        raise RuntimeError(f"the jobs of {p['spec_name']} have not all succeeded")
    files = [Path(p["dir"]) / name.replace("/", "-") for name in names]
    for name, path in zip(names, files, strict=True):
        client.files.download(file=name, destination=str(path))
    downloaded = time.perf_counter() - start
    for path in files:  # what any reader of the outputs does next: each line parsed (``wall`` includes it)
        with open(path, "rb") as fh:
            for line in fh:
                orjson.loads(line)
    return {"jobs": len(names), "downloaded": downloaded}


def _download_setup(p: dict[str, Any]) -> None:
    shutil.rmtree(p["dir"], ignore_errors=True)
    Path(p["dir"]).mkdir(parents=True)


def merge_floor(p: dict[str, Any]) -> None:
    """Per shard: the results into a dict by key, then each record joined to its result (found by the key of its
    request line, read as cheaply as batchflow reads it) and written."""
    root = Path(p["root"]) / "gen-1"
    loads, dumps, key_of, buf = orjson.loads, orjson.dumps, request_key, bytearray()
    with open(Path(p["dir"]) / "merge-floor.jsonl", "wb") as out:
        for shard in sorted((root / "shards").glob("*.manifest.jsonl")):
            results = {}
            with open(root / "results" / shard.name.replace(".manifest", "-j1"), "rb") as fh:
                for line in fh:
                    item = loads(line)
                    results[item["key"]] = item["response"]
            with open(root / "shards" / shard.name.replace(".manifest", ""), "rb") as requests, \
                    open(shard, "rb") as records:
                for line, record in zip(requests, records, strict=True):
                    key = key_of(line)
                    response = results[key]
                    first, meta = response["candidates"][0], response["usageMetadata"]
                    buf += dumps({"key": key, "status": "ok", "text": first["content"]["parts"][0]["text"],
                                  "finish_reason": first["finishReason"],
                                  "usage": {"prompt_tokens": meta["promptTokenCount"],
                                            "output_tokens": meta["candidatesTokenCount"],
                                            "total_tokens": meta["totalTokenCount"]},
                                  "attempts": 1, "record": loads(record)}, option=_NL)
                    if len(buf) > _FLUSH:
                        out.write(buf)
                        buf.clear()
        out.write(buf)


def merge(p: dict[str, Any]) -> None:
    """A finished, collected state merged into the output: ``batchflow run``'s last steps (no API call): every
    record's answer kept (the answers and their index, for the next run), then the output rows."""
    Runner(bench_data.load(Path(p["spec"]))).run()


def _merge_setup(p: dict[str, Any]) -> None:
    spec = bench_data.load(Path(p["spec"]))
    store = state_store(spec)
    state = store.load()
    assert state is not None and state.done, "merge needs a finished state (bench prepares one)"
    state.merged = state.answers = None
    store.save(state)
    Path(str(spec.output.path)).unlink(missing_ok=True)


def incremental(p: dict[str, Any]) -> None:
    """A finished state's input grown: read it all (its content digest on the way), render, compare every record
    with the kept answers, and write the units of what is new -- what ``run`` does before it submits."""
    Runner(bench_data.load(Path(p["spec"]))).load_or_prepare()


def _incremental_setup(p: dict[str, Any]) -> None:
    root = state_store(bench_data.load(Path(p["spec"]))).dir
    shutil.copyfile(root / "state.json.finished", root / "state.json")
    for name in ("gen-2", "gen-2.tmp"):
        shutil.rmtree(root / name, ignore_errors=True)


def grown(spec_path: Path, data: Path, records: int, more: int) -> None:
    """A finished, kept state over ``records`` records, then the input grown by ``more`` (the incremental case)."""
    finish(spec_path)
    merge({"spec": spec_path})
    bench_data.write_records(data, records + more)
    root = state_store(bench_data.load(spec_path)).dir
    shutil.copyfile(root / "state.json", root / "state.json.finished")


CASES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, float] | None],
                       Callable[[dict[str, Any]], None] | None]] = {
    "floor": (floor, None),
    "naive": (naive, None),
    "prep": (prep, _prep_setup),
    "submitted": (submitted, _and_sdk(_prep_setup)),
    "upload-floor": (upload_floor, _sdk_setup),
    "collected": (collected, _and_sdk(_collected_setup)),
    "download-floor": (download_floor, _and_sdk(_download_setup)),
    "merge-floor": (merge_floor, None),
    "merge": (merge, _merge_setup),
    "incremental": (incremental, _incremental_setup),
}


def finish(spec_path: Path) -> Path:
    """Prepare ``spec_path`` and fake every job done with a result line per request; returns the state dir."""
    spec = bench_data.load(spec_path)
    store = state_store(spec)
    shutil.rmtree(store.dir, ignore_errors=True)
    state = Runner(spec).load_or_prepare()
    bench_data.finish_state(spec, state)
    return StateStore(store.dir).dir


def peak_rss_mb() -> float:
    """This process's own peak resident memory: ``VmHWM``, the high-water mark of its address space.

    Not ``ru_maxrss``: Linux carries that across ``exec``, so a case started by the benchmark would report the
    benchmark's own peak whenever it was higher (measured: a child of a 160 MB parent reports 160 MB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: the best there is


def main() -> None:
    case, params = sys.argv[1], json.loads(sys.argv[2])
    run, setup = CASES[case]
    if setup:
        setup(params)
    if case in ("floor", "merge-floor"):
        # The floors get what batchflow's loops get (hotloop): without it a floor holding a shard's results in a
        # dict spends half its time in the garbage collector, and would flatter batchflow's ratio.
        gc.set_threshold(1_000_000, 10, 10)
    wall, cpu = time.perf_counter(), time.process_time()
    extra = run(params) or {}
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_mb": peak_rss_mb(), **extra}))


if __name__ == "__main__":
    main()
