from __future__ import annotations

import json
import os
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchflow.errors import SpecError
from batchflow.spec.spec import SCHEMA_PATH, InvalidSpec, Spec, load_spec, spec_schema
from batchflow.spec.units import DURATION_PATTERN, SIZE_PATTERN, parse_duration, parse_share, parse_size

DATA = Path(__file__).parents[1] / "data" / "specs"

MINIMAL = """\
version: 1
name: t
model: gemini-2.5-flash
source: {type: inline, records: [{text: hi}]}
prompt: "Say {{ text }}"
output: {path: out.jsonl}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(InvalidSpec) as info:
        load_spec(path, environ={} if environ is None else environ)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_design_example_loads() -> None:
    spec = load_spec(DATA / "design-example.yaml", environ={})
    assert (spec.name, spec.backend.type, spec.task, spec.model) == (
        "review-sentiment",
        "local",
        "generate",
        "gemini-2.5-flash",
    )
    assert spec.source.path == str(DATA / "data" / "reviews-*.jsonl")
    assert spec.output.path == str(DATA / "out" / "review-sentiment.jsonl")
    assert spec.state_dir == DATA / ".batchflow"
    assert spec.jobs.max_bytes == 500_000_000
    assert spec.jobs.poll_interval == 30.0
    assert (spec.retry.backoff.initial, spec.retry.backoff.max, spec.retry.backoff.multiplier) == (30, 600, 2)
    assert spec.output.parse == "json" and spec.output.max_failed == 0
    assert spec.generation_config is not None and spec.generation_config["temperature"] == 0
    assert spec.where("prompt") == f"{DATA / 'design-example.yaml'}:18:9"


def test_misspelt_key_wrong_type_and_unset_variable_are_all_reported_with_positions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + """\
        promtp: hi
        jobs:
          max_requests: 3x
        backend:
          type: gemini
          base_url: ${EMULATOR_URL}/v1
        """.replace("        ", ""),
    )
    assert problems(path) == [
        f"{path}:7:1: promtp: unknown key 'promtp' (did you mean 'prompt'?)",
        f"{path}:9:17: jobs.max_requests: expected an integer, got string '3x'",
        f"{path}:12:13: backend.base_url: environment variable EMULATOR_URL is not set",
    ]


def test_missing_required_key_points_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("output: {path: out.jsonl}", "output:\n  format: jsonl"))
    assert problems(path) == [f"{path}:6:1: output: missing required key 'path'"]


def test_missing_top_level_key_points_at_the_document(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("model: gemini-2.5-flash\n", ""))
    assert problems(path) == [f"{path}:1:1: missing required key 'model'"]


def test_other_versions_get_one_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("version: 1", "version: 2") + "bogus: 1\n")
    assert problems(path) == [f"{path}:1:10: version: batchflow supports spec version 1, got 2"]
    path = write(tmp_path, MINIMAL.replace("version: 1\n", ""))
    assert problems(path) == [f"{path}:1:1: version: batchflow supports spec version 1, got no version"]


def test_yaml_syntax_error_has_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nname: t\nsource: {type: inline\nmodel: gemini-2.5-flash\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4:6: invalid YAML: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the spec must be a mapping of keys to values, got an empty file"),
        ("- 1\n", "the spec must be a mapping of keys to values, got a list"),
    ],
)
def test_a_spec_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:1:1: {message}"]


def test_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read: No such file"):
        load_spec(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_spec_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "specs").mkdir()
    text = MINIMAL.replace("{type: inline, records: [{text: hi}]}", "{type: files, path: ../data/*.jsonl}")
    path = write(tmp_path / "specs", text + "state: {dir: state}\n")
    monkeypatch.chdir("/")
    spec = load_spec(os.path.relpath(path, "/"), environ={})
    assert spec.path == path
    assert spec.source.path == str(tmp_path / "data" / "*.jsonl")
    assert spec.output.path == str(tmp_path / "specs" / "out.jsonl")
    assert spec.state_dir == tmp_path / "specs" / "state"


def test_urls_and_absolute_paths_are_left_alone(tmp_path: Path) -> None:
    text = MINIMAL.replace("{type: inline, records: [{text: hi}]}", "{type: files, path: 'gs://b/in/*.jsonl'}")
    spec = load_spec(write(tmp_path, text.replace("out.jsonl", "/abs/out.jsonl")), environ={})
    assert (spec.source.path, spec.output.path) == ("gs://b/in/*.jsonl", "/abs/out.jsonl")
    assert spec.state_dir == tmp_path / ".batchflow"


@pytest.mark.parametrize(("written", "loaded"), [("'1%'", 0.01), ("0.5%", 0.005), ("7", 7), ("'100%'", 1.0)])
def test_max_failed_is_a_count_or_a_share(tmp_path: Path, written: str, loaded: float) -> None:
    text = MINIMAL.replace("{path: out.jsonl}", f"{{path: out.jsonl, max_failed: {written}}}")
    failed = load_spec(write(tmp_path, text), environ={}).output.max_failed
    assert failed == loaded and type(failed) is type(loaded)


def test_variables_are_expanded_and_a_plain_one_keeps_its_type(tmp_path: Path) -> None:
    text = MINIMAL + "jobs:\n  max_concurrent: ${N}\nsystem: '${WHO} costs $${PRICE}'\n"
    spec = load_spec(write(tmp_path, text), environ={"N": "8", "WHO": "you"})
    assert spec.jobs.max_concurrent == 8
    assert spec.system == "you costs ${PRICE}"
    assert spec.raw["system"] == "you costs ${PRICE}"


@pytest.mark.parametrize(("environ", "model"), [({}, "gemini-2.5-flash"), ({"MODEL": ""}, "gemini-2.5-flash"),
                                                ({"MODEL": "gemini-2.5-pro"}, "gemini-2.5-pro")])
def test_a_default_stands_in_for_an_unset_or_empty_variable(tmp_path: Path, environ: dict[str, str],
                                                            model: str) -> None:
    text = MINIMAL.replace("gemini-2.5-flash", "${MODEL:-gemini-2.5-flash}") + "jobs:\n  max_concurrent: ${N:-2}\n"
    spec = load_spec(write(tmp_path, text), environ=environ)
    assert spec.model == model
    assert spec.jobs.max_concurrent == 2  # a plain default keeps its type, as a plain ${N} does


def test_a_plain_variable_set_empty_stays_empty(tmp_path: Path) -> None:
    text = MINIMAL + "system: 'Be ${TONE}brief'\n"
    assert load_spec(write(tmp_path, text), environ={"TONE": ""}).system == "Be brief"


@pytest.mark.parametrize("environ", [{}, {"MODEL": ""}])
def test_a_required_variable_unset_or_empty_is_an_error_at_its_place_with_the_message(
        tmp_path: Path, environ: dict[str, str]) -> None:
    path = write(tmp_path, MINIMAL.replace("gemini-2.5-flash", "${MODEL:?set MODEL to a batch model}"))
    assert problems(path, environ) == [
        f"{path}:3:8: model: environment variable MODEL is not set or empty: set MODEL to a batch model"]


def test_a_required_variable_without_a_message_says_what_is_missing(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("gemini-2.5-flash", "${MODEL:?}"))
    assert problems(path) == [f"{path}:3:8: model: environment variable MODEL is not set or empty"]
    assert load_spec(path, environ={"MODEL": "m"}).model == "m"


def test_durations_and_sizes_are_parsed(tmp_path: Path) -> None:
    text = MINIMAL + "jobs: {poll_interval: 1h30m, max_bytes: 1GiB}\nretry: {backoff: {initial: 1.5, max: 2m}}\n"
    spec = load_spec(write(tmp_path, text), environ={})
    assert (spec.jobs.poll_interval, spec.jobs.max_bytes) == (5400.0, 2**30)
    assert (spec.retry.backoff.initial, spec.retry.backoff.max) == (1.5, 120.0)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), (" 250ms ", 0.25), (5, 5)])
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("500MB", 500 * 10**6), ("2GB", 2 * 10**9), ("1GiB", 2**30), ("64 KiB", 65536), (1000, 1000), ("12", 12)],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["3x", "", "1 parsec", "1hh"])
def test_units_refuse_what_the_schema_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)
    with pytest.raises(ValueError):
        parse_size(bad)
    with pytest.raises(ValueError):
        parse_share(bad)


def test_schema_patterns_are_the_units_patterns() -> None:
    defs = spec_schema()["$defs"]
    assert defs["duration"]["anyOf"][1]["pattern"] == DURATION_PATTERN
    assert defs["size"]["anyOf"][1]["pattern"] == SIZE_PATTERN


def test_schemas_dir_links_to_the_packaged_schema(repo_root: Path) -> None:
    link = repo_root / "schemas" / "spec.schema.json"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == SCHEMA_PATH.resolve()


def test_every_property_has_a_description() -> None:
    def walk(node: Any, where: str) -> list[str]:
        if isinstance(node, list):
            return [m for i, item in enumerate(node) for m in walk(item, f"{where}/{i}")]
        if not isinstance(node, dict):
            return []
        missing = [
            f"{where}/{k}"
            for k, v in node.get("properties", {}).items()
            if "description" not in v and v.get("not") is None
        ]
        conditions = ("allOf", "anyOf", "if", "then", "else", "not")  # conditions restate properties; skip them
        return missing + [m for k, v in node.items() if k not in conditions for m in walk(v, f"{where}/{k}")]

    assert walk(json.loads(SCHEMA_PATH.read_text()), "#") == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("request: {contents: []}\n", ":1:1: give either 'prompt' or 'request' (exactly one)"),
        ("task: embed\n", ":1:1: missing required key 'content'"),
        ("content: x\n", ":7:1: content: 'content' is not used by task generate"),
        (
            "backend: {type: gemini, api_key_env: AIzaSyXXX}\n",
            ":7:38: backend.api_key_env: expected the NAME of an environment variable",
        ),
        ("backend: {type: gemini, api_key: k}\n", ":7:25: backend.api_key: unknown key 'api_key' (did you mean"),
        ("backend: {type: vertex, project: p, location: l}\n", ":7:1: backend: missing required key 'staging'"),
        ("backend: {type: local, project: p}\n", ":7:24: backend.project: 'project' is not used by backend type local"),
        ("backend: {type: gemini, key_labels: true}\n",
         ":7:25: backend.key_labels: 'key_labels' is not used by backend type gemini (labels are a Vertex AI field)"),
        ("prompt: again\n", ":7:1: prompt: duplicate key 'prompt' (first on line 5)"),
        ("name: x\n", ":7:1: name: duplicate key 'name' (first on line 2)"),
        ("task: embd\n", ":7:7: task: expected one of generate, embed; got string 'embd' (did you mean 'embed'?)"),
    ],
)
def test_schema_rules(tmp_path: Path, extra: str, expected: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    assert any(p.startswith(f"{path}{expected}") for p in problems(path)), problems(path)


def test_vertex_with_bigquery_in_and_out_needs_no_staging(tmp_path: Path) -> None:
    text = MINIMAL.replace("{type: inline, records: [{text: hi}]}", "{type: bigquery, table: p.d.t, native: true}")
    text = text.replace("{path: out.jsonl}", "{type: bigquery, table: p.d.out, write: truncate}")
    spec = load_spec(write(tmp_path, text + "backend: {type: vertex, project: p, location: l}\n"), environ={})
    assert (spec.backend.type, spec.source.table, spec.output.table) == ("vertex", "p.d.t", "p.d.out")


def test_locations_name_every_nested_path(tmp_path: Path) -> None:
    text = MINIMAL.replace('prompt: "Say {{ text }}"\n', "request:\n  contents:\n    - parts:\n        - text: hi\n")
    spec = load_spec(write(tmp_path, text), environ={})
    assert spec.locations["request.contents.0.parts.0.text"] == f"{tmp_path / 'spec.yaml'}:8:17"
    assert spec.where("request.contents.0.parts.0.text.nope") == spec.locations["request.contents.0.parts.0.text"]


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = MINIMAL + "jobs: &j {max_requests: 10, max_concurrent: 2}\nretry: {job_attempts: *j}\n"
    assert any("retry.job_attempts: expected an integer, got a mapping" in p for p in problems(write(tmp_path, text)))
    text = MINIMAL + "x-base: &b {temperature: 0, top_k: 3}\n"
    assert any("unknown key 'x-base'" in p for p in problems(write(tmp_path, text)))
    text = MINIMAL + "generation_config:\n  <<: {temperature: 0, top_k: 3}\n  top_k: 5\n"
    assert load_spec(write(tmp_path, text), environ={}).generation_config == {"temperature": 0, "top_k": 5}


def test_a_self_referring_alias_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "generation_config: &a {x: *a}\n")
    assert problems(path) == [f"{path}:7:20: generation_config.x: an alias refers to itself"]


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(InvalidSpec, match="too large"):
        load_spec(write(tmp_path, "\n".join(lines) + "\n"), environ={})


FRAGMENTS = st.sampled_from(
    [
        "version: 1\n",
        "name: t\n",
        "model: gemini-2.5-flash\n",
        "source:\n",
        "  type: files\n",
        "  path: x\n",
        "output:\n",
        "  max_failed: 1%\n",
        "prompt: '{{ a }}'\n",
        "request: {a: [1, 2]}\n",
        "jobs: {max_bytes: 1x}\n",
        "- a\n",
        "  - b\n",
        "&a x: *a\n",
        "<<: *a\n",
        "key: ${HOME}\n",
        "task: embed\n",
        "? [a]\n: b\n",
        "!!binary x\n",
        "x: !foo 1\n",
        "{",
        "}",
        ": ",
        "\t",
        '"',
        "'",
        "\\",
        "%YAML 1.1\n",
        "---\n",
        "...\n",
        "\x00",
        "2024-13-45",
    ]
)


@settings(
    max_examples=int(os.environ.get("SPEC_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.one_of(st.lists(FRAGMENTS).map("".join), st.text(), st.binary()))
def test_any_input_gives_a_spec_or_a_spec_error(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        try:
            assert isinstance(load_spec(path, environ={}), Spec)
        except SpecError as exc:
            assert str(exc)
