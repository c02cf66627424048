"""The bad-input corpus: every case is one clear line naming the place, the documented exit code, no traceback,
and the state left as it was (nothing planned, nothing submitted)."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.helpers import cli, write_jsonl, write_spec

Case = Callable[[Path], tuple[Path, str]]  # sets up tmp_path; returns the spec and a text the error must hold
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


def _data(tmp: Path, records: list[dict[str, Any]] | None = None) -> None:
    write_jsonl(tmp / "data/in.jsonl", records if records is not None else [{"id": "a", "text": "x"}])


def _raw_spec(tmp: Path, text: str) -> Path:
    _data(tmp)
    path = tmp / "t.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _spec(tmp: Path, records: list[dict[str, Any]] | None = None, **overrides: Any) -> Path:
    _data(tmp, records)
    return write_spec(tmp, **overrides)


# --- the spec file -----------------------------------------------------------------------------------------------
GOOD = "version: 1\nname: t\nmodel: gemini-2.5-flash\nsource: {type: files, path: data/in.jsonl}\n" \
       "prompt: '{{ text }}'\noutput: {type: files, path: out/x.jsonl}\n"

for name, text, expect in [
    ("yaml syntax", "version: 1\nname: [t\n", "t.yaml:3:1: invalid YAML"),
    ("yaml tab", "version: 1\n\tname: t\n", "t.yaml:2:1: invalid YAML"),
    ("empty file", "", "t.yaml"),
    ("top level list", "- 1\n- 2\n", "t.yaml:1:1"),
    ("version missing", GOOD.replace("version: 1\n", ""), "version"),
    ("version 2", GOOD.replace("version: 1", "version: 2"), "t.yaml:1:10: version: batchflow supports spec version 1"),
    ("unknown top key", GOOD + "promtp: x\n", "t.yaml:7:1: promtp: unknown key 'promtp'"),
    ("unknown nested key", GOOD.replace("path: data/in.jsonl}", "pth: data/in.jsonl}"), "t.yaml:4:"),
    ("wrong type", GOOD + "jobs: {max_requests: lots}\n", "t.yaml:7:22: jobs.max_requests: expected an integer"),
    ("negative concurrency", GOOD + "jobs: {max_concurrent: -1}\n", "jobs.max_concurrent"),
    ("bad name", GOOD.replace("name: t", "name: Bad_Name"), "t.yaml:2:7: name"),
    ("prompt and request", GOOD + "request: '{{ r }}'\n", "prompt"),
    ("neither prompt nor request", GOOD.replace("prompt: '{{ text }}'\n", ""), "prompt"),
    ("unset variable", GOOD.replace("model: gemini-2.5-flash", "model: ${BATCHFLOW_UNSET_FOR_TEST}"),
     "t.yaml:3:8: model: environment variable"),
    ("bad duration", GOOD + "jobs: {poll_interval: 30 parsecs}\n", "jobs.poll_interval"),
    ("bad size", GOOD + "jobs: {max_bytes: lots}\n", "jobs.max_bytes"),
    ("bad max_failed", GOOD.replace("x.jsonl}", "x.jsonl, max_failed: 'abc%'}"), "output.max_failed"),
    ("unknown backend", GOOD + "backend: {type: openai}\n", "backend.type"),
    ("unknown source type", GOOD.replace("type: files, path", "type: ftp, path"), "source.type"),
    ("a literal api key", GOOD + "backend: {type: gemini, api_key: sekrit}\n", "did you mean 'api_key_env'"),
    ("duplicate yaml key", GOOD + "model: n\n", "t.yaml:7:1: model"),
    ("template syntax in prompt", GOOD.replace("'{{ text }}'", "'{{ text '"), "t.yaml:5:9: prompt: template"),
    ("template syntax in key", GOOD + "key: '{% for %}'\n", "t.yaml:7:6: key: template"),
    ("over the backend limit", GOOD + "task: generate\nbackend: {type: vertex, project: p, location: l, "
     "staging: 'gs://b/s'}\njobs: {max_requests: 200001}\n", "200,000"),
    ("non-utf8 spec", b"version: 1\nname: \xff\xfe\n", "t.yaml"),
]:
    CASES[name] = (lambda t, e: lambda tmp: (_raw_spec(tmp, t), e))(text, expect)


SPEC_CASES = set(CASES)


@case("spec file missing")
def _(tmp: Path) -> tuple[Path, str]:
    return tmp / "nope.yaml", "nope.yaml: cannot read"


@case("spec path is a directory")
def _(tmp: Path) -> tuple[Path, str]:
    (tmp / "dir.yaml").mkdir()
    return tmp / "dir.yaml", "dir.yaml"


# --- the records -------------------------------------------------------------------------------------------------
@case("undefined field on record 5")
def _(tmp: Path) -> tuple[Path, str]:
    recs: list[dict[str, Any]] = [{"id": str(i), "text": "x"} for i in range(1, 8)]
    del recs[4]["text"]
    return _spec(tmp, recs), "data/in.jsonl:5: record 5 (key '5'): "


@case("malformed jsonl line")
def _(tmp: Path) -> tuple[Path, str]:
    spec = _spec(tmp)
    with open(tmp / "data/in.jsonl", "a") as fh:
        fh.write('{"id": "b", "text": \n')
    return spec, "data/in.jsonl:2: malformed JSON"


@case("a line that is not an object")
def _(tmp: Path) -> tuple[Path, str]:
    spec = _spec(tmp)
    with open(tmp / "data/in.jsonl", "a") as fh:
        fh.write("[1, 2]\n")
    return spec, "data/in.jsonl:2: expected an object"


@case("non-utf8 record")
def _(tmp: Path) -> tuple[Path, str]:
    spec = _spec(tmp)
    with open(tmp / "data/in.jsonl", "ab") as fh:
        fh.write(b'{"id": "b", "text": "\xff"}\n')
    return spec, "data/in.jsonl:2: "


@case("corrupt gzip")
def _(tmp: Path) -> tuple[Path, str]:
    (tmp / "data").mkdir()
    (tmp / "data/in.jsonl.gz").write_bytes(gzip.compress(b'{"id": "a"}\n')[:-6])
    return write_spec(tmp, source={"type": "files", "path": "data/in.jsonl.gz"}), "data/in.jsonl.gz"


@case("duplicate keys")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]), "duplicate key 'a' (record 1"


@case("empty source")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, []), "source: no records"


@case("no file matches")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, source={"type": "files", "path": "data/missing-*.jsonl"}), "no file matches"


@case("key renders empty")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, [{"id": " ", "text": "x"}]), "data/in.jsonl:1: record 1"


@case("a request larger than a whole job")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, [{"id": "a", "text": "x" * 500}], jobs={"max_bytes": 200}), \
        "data/in.jsonl:1: the request is"


@case("sandbox escape")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, prompt="{{ ''.__class__.__mro__[1].__subclasses__() }}"), "sandbox"


@case("csv row with too many fields")
def _(tmp: Path) -> tuple[Path, str]:
    (tmp / "data").mkdir()
    (tmp / "data/in.csv").write_text("id,text\na,x\nb,y,z\n")
    return write_spec(tmp, source={"type": "files", "path": "data/in.csv"}), "data/in.csv:3"


@case("malformed json array")
def _(tmp: Path) -> tuple[Path, str]:
    (tmp / "data").mkdir()
    (tmp / "data/in.json").write_text('[{"id": "a", "text": "x"}, {"id": ')
    return write_spec(tmp, source={"type": "files", "path": "data/in.json"}), "data/in.json"


@case("request that is not a mapping")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, [{"id": "a", "request": "hello"}], prompt=None, request="{{ request }}"), "record 1"


@case("typed leaf that is not JSON")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, prompt=None, request={"contents": "{{ range(3) }}"}), "record 1"


@case("division by zero in a template")
def _(tmp: Path) -> tuple[Path, str]:
    return _spec(tmp, prompt="{{ 1 / 0 }}"), "record 1"


# --- the state and the output ------------------------------------------------------------------------------------
def _state(tmp: Path, content: str) -> Path:
    spec = _spec(tmp)
    (tmp / ".batchflow/t").mkdir(parents=True)
    (tmp / ".batchflow/t/state.json").write_text(content)
    return spec


CASES["corrupt state"] = lambda tmp: (_state(tmp, "{not json"), "state.json:1:2: the state file is corrupt")
CASES["truncated state"] = lambda tmp: (_state(tmp, '{"format": 1, "shards": [{"index"'), "corrupt")
CASES["newer state"] = lambda tmp: (_state(tmp, '{"format": 9, "shards": []}'), "newer than this batchflow")
CASES["not a state"] = lambda tmp: (_state(tmp, "[]"), "not a batchflow state file")


@case("output path is a directory")
def _(tmp: Path) -> tuple[Path, str]:
    (tmp / "out/result.jsonl").mkdir(parents=True)
    return _spec(tmp), "out/result.jsonl: cannot write: it is a directory"


@case("output under a file")
def _(tmp: Path) -> tuple[Path, str]:
    (tmp / "out").write_text("a file")
    return _spec(tmp), "is not a directory"


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, but the run lock's (an empty file the lock is taken on, kept for the next run)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "lock"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_clear_line_with_exit_2_and_the_state_untouched(tmp_path: Path, name: str) -> None:
    spec, expected = CASES[name](tmp_path)
    before = _snapshot(tmp_path)
    result = cli("run", str(spec))
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    assert errors, lines
    assert any(expected in e for e in errors), errors
    if name in SPEC_CASES:  # a spec gets every problem reported, each on its own line naming its place
        assert all(e.startswith(str(spec)) for e in errors), errors
    else:
        assert len(errors) == 1, errors
    after = _snapshot(tmp_path)
    assert after == before, "nothing was written or changed"


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_a_skipped_bad_record_becomes_an_error_row_at_its_place(tmp_path: Path) -> None:
    spec = _spec(tmp_path, source={"type": "files", "path": "data/in.jsonl", "on_bad_record": "skip"})
    with open(tmp_path / "data/in.jsonl", "a") as fh:
        fh.write("not json\n")
        fh.write('{"id": "c", "text": "z"}\n')
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    assert "3 records: 2 ok, 1 failed (1 bad record skipped)" in result.stdout
    rows = [json.loads(r) for r in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [(r["key"], r["status"]) for r in rows] == [("a", "ok"), ("2", "error"), ("c", "ok")]
    assert rows[1]["error"]["message"].startswith(f"{tmp_path}/data/in.jsonl:2: malformed JSON")
    assert "1 rejected" in cli("status", str(spec)).stdout


def test_a_record_that_fails_to_render_under_skip_keeps_its_key_and_place(tmp_path: Path) -> None:
    spec = _spec(tmp_path, source={"type": "files", "path": "data/in.jsonl", "on_bad_record": "skip"})
    with open(tmp_path / "data/in.jsonl", "a") as fh:
        fh.write('{"id": "c"}\n')  # no `text`: the prompt cannot be rendered
        fh.write('{"id": "d", "text": "w"}\n')
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(r) for r in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [(r["key"], r["status"]) for r in rows] == [("a", "ok"), ("c", "error"), ("d", "ok")]
    assert f"{tmp_path}/data/in.jsonl:2" in rows[1]["error"]["message"] and "text" in rows[1]["error"]["message"]


def test_a_record_over_the_models_input_limit_keeps_its_record_and_counts_as_failed(tmp_path: Path) -> None:
    huge = "word " * 1_100_000  # ~5.5 MB: over gemini-2.5-flash's 1,048,576 input tokens at four bytes a token
    _data(tmp_path, [{"id": "a", "text": "fine"}, {"id": "big", "text": huge}])
    path = write_spec(tmp_path, output={"type": "files", "path": "out/result.jsonl", "max_failed": 0})
    result = cli("run", str(path))
    assert result.exit_code == 1
    assert "1 of 2 records failed (output.max_failed allows 0)" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [(r["key"], r["status"]) for r in rows] == [("a", "ok"), ("big", "error")]
    assert rows[1]["record"] == {"id": "big", "text": huge}
    assert set(rows[1]["error"]) == {"code", "message"} and "not sent" in rows[1]["error"]["message"]
    spec = path.read_text().replace("max_failed: 0", "max_failed: 1")
    path.write_text(spec)
    again = cli("run", str(path))
    assert again.exit_code == 0, again.stderr
    assert "skipped" not in again.output  # not a bad record skipped by choice: a failed one


# --- a place named once ------------------------------------------------------------------------------------------
_NATIVE = {"backend": {"type": "vertex", "project": "p", "location": "us-central1", "staging": "gs://b/s"},
           "source": {"type": "bigquery", "table": "p.d.t", "native": True},
           "output": {"type": "bigquery", "table": "p.d.out", "write": "truncate"}}
_ONCE: dict[str, dict[str, Any]] = {  # each reaches the user through a re-raise that once prefixed it again
    "a template's undefined variable": {"prompt": "{{ nope }}"},
    "a job size over the backend's limit": {"jobs": {"max_requests": 99_999_999}},
}
_ONCE_NATIVE: dict[str, tuple[dict[str, Any], str]] = {  # compiled to SQL by validate, with no network
    "a list of parts": ({"prompt": ["hi", {"media": "{{ p }}"}]}, "prompt: with source.native a list of parts"),
    "a templated number": ({"prompt": "hi", "generation_config": {"temperature": "{{ t }}"}},
                           "generation_config.temperature: expected a number, got '{{ t }}'"),
}


def _errors_naming(result: Any, spec: Path) -> list[str]:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return [line for line in lines if str(spec) in line]


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
@pytest.mark.parametrize("name", sorted(_ONCE))
def test_a_located_error_names_the_spec_once_alone_and_among_several(tmp_path: Path, command: str,
                                                                      name: str) -> None:
    bad = _spec(tmp_path, name="bad", **_ONCE[name])
    other = _spec(tmp_path, name="other", jobs={"max_requests": 99_999_999})
    for specs in ([bad], [bad, other]):
        result = cli(command, *map(str, specs))
        assert result.exit_code == 2, result.stderr
        errors = _errors_naming(result, bad)
        assert len(errors) == 1, result.stderr
        assert errors[0].count(str(bad)) == 1, errors[0]
        assert f"{bad}:" in errors[0] and f"{bad}: {bad}" not in errors[0], errors[0]


def test_among_several_specs_validate_names_the_spec_of_an_error_that_does_not(tmp_path: Path) -> None:
    bad = _spec(tmp_path, name="bad")
    (tmp_path / "data/in.jsonl").write_text('{"id": "a", "text": "x"}\n{bad\n', encoding="utf-8")
    other = _spec(tmp_path, name="other", jobs={"max_requests": 99_999_999})
    (tmp_path / "data/in.jsonl").write_text('{"id": "a", "text": "x"}\n{bad\n', encoding="utf-8")
    result = cli("validate", str(bad), str(other))
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0].startswith(f"error: {bad}: ") and "in.jsonl:2: malformed JSON" in errors[0]
    assert errors[1].startswith(f"error: {other}:") and errors[1].count(str(other)) == 1, errors


@pytest.mark.parametrize("name", sorted(_ONCE_NATIVE))
def test_a_native_spec_error_names_its_place_once(tmp_path: Path, name: str) -> None:
    overrides, message = _ONCE_NATIVE[name]
    spec = _spec(tmp_path, **{**_NATIVE, **overrides})
    result = cli("validate", str(spec))
    assert result.exit_code == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert re.match(rf"error: {re.escape(str(spec))}:\d+:\d+: {re.escape(message)}", line), line
    assert line.count(str(spec)) == 1, line


def test_bigquery_without_credentials_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))  # found at once, no net
    spec = _spec(tmp_path, **_NATIVE)
    result = cli("plan", str(spec))
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: BigQuery (project p): no usable credentials: "), line
    assert "no-such-key.json" in line
