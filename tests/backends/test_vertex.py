"""The vertex backend end to end: gs:// in, gs:// out, against `batchflow emulator` and a real GCS emulator."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.helpers import cli_process, write_spec

from batchflow.emulator import start_in_thread
from batchflow.emulator.model import deterministic as model

pytestmark = pytest.mark.gcs


@pytest.fixture
def vertex_emulator(tmp_path: Path, gcs_emulator: str) -> Iterator[str]:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.3) as running:
        yield running.base_url


def _vertex(base_url: str, bucket: str) -> dict[str, str]:
    return {"type": "vertex", "project": "p", "location": "us-central1", "staging": f"gs://{bucket}/staging",
            "base_url": base_url}


def _vertex_jobs(base_url: str, spec_name: str) -> dict[str, Any]:
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    client = genai.Client(vertexai=True, project="p", location="us-central1",
                          credentials=google.oauth2.credentials.Credentials(token="t"),
                          http_options=types.HttpOptions(base_url=base_url))
    return {j.display_name: j for j in client.batches.list()
            if (j.display_name or "").startswith(f"batchflow-{spec_name}-")}


@pytest.mark.slow
def test_65000_records_over_three_gcs_files_come_back_in_input_order(tmp_path: Path, fs: Any, bucket: str,
                                                                     vertex_emulator: str) -> None:
    keys = [f"Key/{i:05d}" for i in range(65_000)]
    for part in range(3):
        lines = (json.dumps({"id": k, "text": f"text {k}"}) for k in keys[part * 21_667:(part + 1) * 21_667])
        fs.pipe(f"{bucket}/in/records-{part}.jsonl", ("\n".join(lines) + "\n").encode())
    spec = write_spec(tmp_path, name="vx", backend=_vertex(vertex_emulator, bucket),
                      source={"type": "files", "path": f"gs://{bucket}/in/records-*.jsonl"},
                      output={"type": "files", "path": f"gs://{bucket}/out/out.jsonl", "include_record": False})
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    jobs = _vertex_jobs(vertex_emulator, "vx")
    assert sorted(int(j.completion_stats.successful_count) for j in jobs.values()) == [5_000, 30_000, 30_000]
    outputs = [fs.glob(j.output_info.gcs_output_directory.removeprefix("gs://") + "/predictions*.jsonl")
               for j in jobs.values()]
    assert all(len(files) > 1 for files in outputs), "the emulator split every job's output"
    rows = [json.loads(x) for x in fs.cat(f"{bucket}/out/out.jsonl").decode().splitlines()]
    assert [r["key"] for r in rows] == keys
    assert all(r["status"] == "ok" and r["text"] for r in rows)


def test_a_vertex_embed_spec_gives_embeddings_of_the_asked_dimension(tmp_path: Path, fs: Any, bucket: str,
                                                                     vertex_emulator: str) -> None:
    fs.pipe(f"{bucket}/in.jsonl", b"".join(json.dumps({"id": f"e{i}", "text": f"w{i % 4}"}).encode() + b"\n"
                                           for i in range(40)))
    spec = write_spec(tmp_path, name="vxe", backend=_vertex(vertex_emulator, bucket), model="text-embedding-005",
                      task="embed", prompt=None, content="{{ text }}", embed_config={"output_dimensionality": 32},
                      source={"type": "files", "path": f"gs://{bucket}/in.jsonl"})
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [f"e{i}" for i in range(40)]
    assert all(len(r["embedding"]) == 32 for r in rows)
    assert rows[0]["embedding"] == rows[4]["embedding"], "equal texts (w0) have equal embeddings"


def _faulty_emulator(tmp_path: Path, plan: dict[str, Any]) -> Any:
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(plan))
    return start_in_thread(tmp_path / "emulator", job_seconds=0.2, faults=path)


@pytest.mark.parametrize("backend", ["gemini", "vertex"])
def test_dropped_and_doubled_output_lines_are_caught_retried_and_never_merged_silently(
        tmp_path: Path, fs: Any, bucket: str, backend: str) -> None:
    with _faulty_emulator(tmp_path, {"seed": 3, "output": {"drop": 0.05, "duplicate": 0.05}}) as running:
        settings = _vertex(running.base_url, bucket) if backend == "vertex" else {
            "type": "gemini", "base_url": running.base_url}
        (tmp_path / "data").mkdir()
        (tmp_path / "data/in.jsonl").write_text("".join(json.dumps({"id": f"k{i}", "text": f"t{i}"}) + "\n"
                                                        for i in range(400)))
        spec = write_spec(tmp_path, name="lossy", backend=settings, retry={
            "request_attempts": 5, "backoff": {"initial": "0.05s", "max": "0.1s"}})
        done = cli_process("run", str(spec))
        stats = running.engine.stats()["faults"]
    assert stats.get("line_dropped", 0) > 0 and stats.get("line_duplicated", 0) > 0
    assert done.returncode == 0, done.stderr
    assert done.stderr.count('"duplicate result"') == stats["line_duplicated"]
    rows = [json.loads(x) for x in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [f"k{i}" for i in range(400)]
    assert all(r["status"] == "ok" for r in rows)
    retried = [r for r in rows if r["attempts"] > 1]
    assert len(retried) >= stats["line_dropped"], "every dropped line was asked for again"


def test_retries_exhausted_on_dropped_lines_report_them_by_key(tmp_path: Path, fs: Any, bucket: str) -> None:
    with _faulty_emulator(tmp_path, {"seed": 5, "output": {"drop": 0.1}}) as running:
        (tmp_path / "data").mkdir()
        (tmp_path / "data/in.jsonl").write_text("".join(json.dumps({"id": f"k{i}", "text": f"t{i}"}) + "\n"
                                                        for i in range(100)))  # distinct: one line each
        spec = write_spec(tmp_path, name="lossy1", backend=_vertex(running.base_url, bucket),
                          retry={"request_attempts": 1})
        done = cli_process("run", str(spec))
        dropped = running.engine.stats()["faults"]["line_dropped"]
    assert done.returncode == 1
    rows = [json.loads(x) for x in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    missing = [r for r in rows if r["status"] == "error"]
    assert len(rows) == 100 and len(missing) == dropped > 0
    assert all("no result in the output" in r["error"]["message"] for r in missing)


def _with_repeats(n: int, share: float) -> list[dict[str, str]]:
    """``n`` records, a ``share`` of them asking what an earlier record asks, under their own key."""
    rng = random.Random(11)
    texts = [f"t{i}" for i in range(n)]
    for i in sorted(rng.sample(range(1, n), int(n * share))):
        texts[i] = texts[rng.randrange(i)]
    return [{"id": f"k{i}", "text": t} for i, t in enumerate(texts)]


def _staged_jobs(fs: Any, bucket: str, name: str) -> list[list[dict[str, Any]]]:
    """The requests staged for each of the spec's jobs, in job order."""
    return [[json.loads(line)["request"] for line in fs.cat(path).decode().splitlines()]
            for path in sorted(fs.glob(f"{bucket}/staging/{name}/*/input.jsonl"))]


def _answer(request: dict[str, Any]) -> str:
    text: str = model.generate(request, "gemini-2.5-flash")["candidates"][0]["content"]["parts"][0]["text"]
    return text


@pytest.mark.parametrize("key_labels", [False, True])
def test_identical_requests_are_sent_once_and_answer_every_key(tmp_path: Path, fs: Any, bucket: str,
                                                               vertex_emulator: str, key_labels: bool) -> None:
    records = _with_repeats(400, share=0.05)
    fs.pipe(f"{bucket}/in.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    name = f"rep{int(key_labels)}"
    spec = write_spec(tmp_path, name=name, backend={**_vertex(vertex_emulator, bucket), "key_labels": key_labels},
                      source={"type": "files", "path": f"gs://{bucket}/in.jsonl"})
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    staged = [request for job in _staged_jobs(fs, bucket, name) for request in job]
    distinct = len({r["text"] for r in records})
    assert distinct == 380 and len(staged) == (len(records) if key_labels else distinct)
    assert all(("labels" in r) == key_labels for r in staged)
    rows = [json.loads(x) for x in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [r["id"] for r in records]
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in rows)
    if not key_labels:  # each key has the answer to its own request
        answers = {r["contents"][0]["parts"][0]["text"]: _answer(r) for r in staged}
        assert [r["text"] for r in rows] == [answers[f"Say something about {x['text']}"] for x in records]


@pytest.mark.slow
def test_50000_records_with_5_percent_repeats_each_sent_once(tmp_path: Path, fs: Any, bucket: str,
                                                             vertex_emulator: str) -> None:
    records = _with_repeats(50_000, share=0.05)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = write_spec(tmp_path, name="rep50k", backend=_vertex(vertex_emulator, bucket),
                      output={"type": "files", "path": "out/result.jsonl", "include_record": False})
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    jobs = [[r["contents"][0]["parts"][0]["text"] for r in job] for job in _staged_jobs(fs, bucket, "rep50k")]
    texts = [f"Say something about {r['text']}" for r in records]
    assert [sorted(job) for job in jobs] == [sorted(set(texts[:30_000])), sorted(set(texts[30_000:]))]
    rows = [json.loads(x) for x in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [r["id"] for r in records]
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in rows)


@pytest.mark.parametrize(("backend", "billed"), [("vertex", 4), ("gemini", 40)])
def test_plan_counts_and_prices_the_requests_each_service_bills(tmp_path: Path, fs: Any, bucket: str,
                                                                vertex_emulator: str, backend: str,
                                                                billed: int) -> None:
    """Vertex stages identical requests once (one answer, one charge); the Gemini API answers every key."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/in.jsonl").write_text("".join(json.dumps({"id": f"k{i}", "text": f"t{i % 4}"}) + "\n"
                                                    for i in range(40)))
    settings = _vertex(vertex_emulator, bucket) if backend == "vertex" else {"type": "gemini",
                                                                             "base_url": vertex_emulator}
    spec = write_spec(tmp_path, name=f"dup{backend}", backend=settings, generation_config={"max_output_tokens": 10})
    done = cli_process("plan", "--json", str(spec))
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["requests"], plan["billed_requests"]) == (40, billed)
    assert plan["cost"]["planned_tokens"]["output"] == billed * 10
    text = cli_process("plan", str(spec)).stdout
    assert ("(40 requests (4 distinct, as vertex answers and bills them)" in text) == (backend == "vertex")
