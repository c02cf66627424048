"""Keys on Vertex without a label per record: staging sends each distinct request once, and an output line, however
the service re-serialised its echo, answers every key that asked (issue 13). Local files stand in for gs://."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from batchflow.backends.base import JobInfo, Result
from batchflow.backends.vertex import KEY_LABEL, VertexBackend


def _request(text: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}],
            "generationConfig": {"temperature": 1.0, "maxOutputTokens": 64}}


def _sent(tmp_path: Path, texts: list[str]) -> Path:
    path = tmp_path / "sent.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"key": f"k{i}", "request": _request(t)}) + b"\n"
                              for i, t in enumerate(texts)))
    return path


def _texts(n: int, repeats: int) -> list[str]:
    """``n`` texts, ``repeats`` of them equal to an earlier one (the rest distinct)."""
    rng = random.Random(7)
    texts = [f"text {i}" for i in range(n)]
    for i in rng.sample(range(1, n), repeats):
        texts[i] = texts[rng.randrange(i)]
    return texts


def _stage(tmp_path: Path, sent: Path, key_labels: bool = False) -> tuple[VertexBackend, list[dict[str, Any]]]:
    backend = VertexBackend(None, str(tmp_path / "staging"), "generate", key_labels=key_labels)
    (tmp_path / "staging/job").mkdir(parents=True)
    staged = Path(backend.stage(sent, "job"))
    return backend, [orjson.loads(line) for line in staged.read_bytes().splitlines()]


def _reserialised(request: dict[str, Any], drop_labels: bool) -> dict[str, Any]:
    """The echo as Vertex writes it: snake_case, unset fields null, integral floats as integers, labels maybe gone."""
    parts = [{"file_data": None, "text": p["text"], "inline_data": None} for p in request["contents"][0]["parts"]]
    echo: dict[str, Any] = {"contents": [{"parts": parts, "role": "user"}], "system_instruction": None,
                            "generation_config": {"temperature": 1, "max_output_tokens": 64, "top_p": None}}
    if not drop_labels and "labels" in request:
        echo["labels"] = request["labels"]
    return echo


def _output(tmp_path: Path, staged: list[dict[str, Any]], drop_labels: bool, copies: int = 1) -> JobInfo:
    """Prediction files answering every staged line (shuffled, over two files), each answer naming its prompt."""
    lines = [{"status": "", "processed_time": "2025-01-01T00:00:00.000+00:00",
              "request": _reserialised(line["request"], drop_labels),
              "response": {"candidates": [{"content": {"parts": [
                  {"text": "re: " + line["request"]["contents"][0]["parts"][0]["text"]}]}}]}}
             for line in staged for _ in range(copies)]
    random.Random(3).shuffle(lines)
    out = tmp_path / "output"
    out.mkdir()
    for n, half in enumerate((lines[::2], lines[1::2]), start=1):
        (out / f"predictions_{n:05d}.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in half))
    return JobInfo("job", "job", "succeeded", output=str(out))


def _answers(results: list[Result]) -> dict[str | None, list[str]]:
    found: dict[str | None, list[str]] = {}
    for r in results:
        assert r.response is not None
        found.setdefault(r.key, []).append(r.response["candidates"][0]["content"]["parts"][0]["text"])
    return found


def test_identical_requests_are_staged_once_and_every_key_gets_the_one_answer(tmp_path: Path) -> None:
    texts = _texts(400, repeats=20)  # 5% of the records repeat another's request under their own key
    sent = _sent(tmp_path, texts)
    backend, staged = _stage(tmp_path, sent)
    assert len(staged) == len(set(texts)) < len(texts)
    assert all("labels" not in line["request"] for line in staged)
    answers = _answers(list(backend.results(_output(tmp_path, staged, drop_labels=True), tmp_path, sent)))
    assert answers == {f"k{i}": [f"re: {t}"] for i, t in enumerate(texts)}


def test_key_labels_put_each_key_in_its_request_and_match_even_when_the_echo_drops_them(tmp_path: Path) -> None:
    texts = _texts(200, repeats=10)
    sent = _sent(tmp_path, texts)
    backend, staged = _stage(tmp_path, sent, key_labels=True)
    assert [line["request"]["labels"][KEY_LABEL] for line in staged] == [f"k{i}" for i in range(200)]
    for drop_labels, run in ((False, "with"), (True, "without")):
        (tmp_path / run).mkdir()
        info = _output(tmp_path / run, staged, drop_labels)
        answers = _answers(list(backend.results(info, tmp_path, sent)))
        assert answers == {f"k{i}": [f"re: {t}"] for i, t in enumerate(texts)}, run


def test_a_line_the_service_wrote_twice_reaches_its_keys_twice_for_collect_to_refuse(tmp_path: Path) -> None:
    sent = _sent(tmp_path, ["a", "b", "a"])
    backend, staged = _stage(tmp_path, sent)
    results = list(backend.results(_output(tmp_path, staged, drop_labels=True, copies=2), tmp_path, sent))
    assert Counter(r.key for r in results) == {"k0": 2, "k1": 2, "k2": 2}


def test_a_line_of_a_request_the_job_did_not_send_has_no_key(tmp_path: Path) -> None:
    sent = _sent(tmp_path, ["a"])
    backend, _ = _stage(tmp_path, sent)
    info = _output(tmp_path, [{"request": _request("never sent")}], drop_labels=True)
    assert [r.key for r in backend.results(info, tmp_path, sent)] == [None]
