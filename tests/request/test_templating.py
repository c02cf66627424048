from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from batchflow.errors import DataError
from batchflow.request.render import Renderer
from batchflow.spec.spec import InvalidSpec, Spec, load_spec

HEAD = """\
version: 1
name: t
model: gemini-2.5-flash
source: {type: inline, records: [{text: hi}]}
output: {path: out.jsonl}
"""


def spec(tmp_path: Path, body: str) -> Spec:
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + textwrap.dedent(body))
    return load_spec(path, environ={})


def render(tmp_path: Path, body: str, record: dict[str, Any], ordinal: int = 1) -> tuple[str, dict[str, Any]]:
    return Renderer(spec(tmp_path, body)).render(record, ordinal, f"in.jsonl:{ordinal}")


def data_error(tmp_path: Path, body: str, record: dict[str, Any], ordinal: int = 1) -> str:
    with pytest.raises(DataError) as info:
        render(tmp_path, body, record, ordinal)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_prompt_system_and_generation_config_shorthands(tmp_path: Path) -> None:
    body = """\
        key: "{{ id }}"
        prompt: "Rate: {{ text }}"
        system: You rate {{ kind }}.
        generation_config: {temperature: "{{ t }}", response_mime_type: application/json}
        """
    key, request = render(tmp_path, body, {"id": "r-1", "text": "ok", "kind": "reviews", "t": 0.5})
    assert key == "r-1"
    assert request == {  # as google-genai sends it (request_json)
        "contents": [{"role": "user", "parts": [{"text": "Rate: ok"}]}],
        "systemInstruction": {"parts": [{"text": "You rate reviews."}]},
        "generationConfig": {"temperature": 0.5, "responseMimeType": "application/json"},
    }


def test_a_single_expression_leaf_keeps_its_type(tmp_path: Path) -> None:
    body = """\
        request:
          contents: [{role: user, parts: [{text: "n={{ n }}"}]}]
          generation_config: {candidate_count: "{{ n }}", stop_sequences: " {{ stops }} ", seed: "{{ none }}"}
          safety_settings: "{{ [{'category': harm, 'threshold': 'BLOCK_NONE'}] }}"
        """
    _, request = render(tmp_path, body, {"n": 3, "stops": ["x"], "none": None, "harm": "HARM_CATEGORY_HARASSMENT"})
    assert request["contents"][0]["parts"][0]["text"] == "n=3"
    assert request["generationConfig"] == {"candidateCount": 3, "stopSequences": ["x"]}  # null: left out
    assert request["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]


def test_a_ready_made_request_passes_through_as_a_copy(tmp_path: Path) -> None:
    ready = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"topK": 2}}
    record = {"key": "k-9", "request": ready}
    key, request = render(tmp_path, 'key: "{{ key }}"\nrequest: "{{ request }}"\n', record)
    assert (key, request) == ("k-9", ready)
    request["contents"].append("mutated")
    assert len(ready["contents"]) == 1


def test_spec_system_and_config_only_fill_in_what_the_request_leaves_out(tmp_path: Path) -> None:
    body = """\
        request: "{{ request }}"
        system: spec system
        generation_config: {temperature: 0, top_k: 5, response_mime_type: application/json}
        """
    record = {"request": {"contents": [], "generationConfig": {"topK": 2}}}
    _, request = render(tmp_path, body, record)
    assert request == {
        "contents": [],
        "systemInstruction": {"parts": [{"text": "spec system"}]},
        "generationConfig": {"topK": 2, "temperature": 0, "responseMimeType": "application/json"},
    }
    record = {"request": {"contents": [], "system_instruction": {"parts": [{"text": "own"}]}}}
    _, request = render(tmp_path, body, record)
    assert request["systemInstruction"] == {"parts": [{"text": "own"}]}


def test_embed_request_shape(tmp_path: Path) -> None:
    body = """\
        task: embed
        content: "{{ title }}: {{ text }}"
        embed_config: {output_dimensionality: "{{ dim }}", task_type: RETRIEVAL_DOCUMENT, title: "{{ title }}"}
        """
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD.replace("gemini-2.5-flash", "gemini-embedding-001") + textwrap.dedent(body))
    _, request = Renderer(load_spec(path, environ={})).render({"title": "T", "text": "body", "dim": 256}, 1, "x:1")
    assert request == {
        "content": {"parts": [{"text": "T: body"}]},
        "outputDimensionality": 256,
        "taskType": "RETRIEVAL_DOCUMENT",
        "title": "T",
    }


def test_key_defaults_to_the_ordinal(tmp_path: Path) -> None:
    assert render(tmp_path, "prompt: hi\n", {}, ordinal=17)[0] == "17"


def test_key_is_stripped_and_may_be_a_number(tmp_path: Path) -> None:
    assert render(tmp_path, 'key: " {{ id }}-x "\nprompt: hi\n', {"id": 4})[0] == "4-x"
    assert render(tmp_path, 'key: "{{ id }}"\nprompt: hi\n', {"id": 4})[0] == "4"


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("  ", "the key is empty"),
        ([1], "the key must be a string or a number, got a list"),
        (None, "the key must be a string or a number, got null"),
    ],
)
def test_bad_keys_are_data_errors(tmp_path: Path, value: Any, what: str) -> None:
    message = data_error(tmp_path, 'key: "{{ id }}"\nprompt: hi\n', {"id": value}, ordinal=5)
    assert message == f"in.jsonl:5: record 5: {tmp_path / 'spec.yaml'}:6:6: key: {what}"


def test_undefined_variable_names_the_record_and_the_template(tmp_path: Path) -> None:
    message = data_error(tmp_path, 'key: "{{ id }}"\nprompt: |\n  Review: {{ text }}\n', {"id": "r-40"}, 40001)
    where = f"{tmp_path / 'spec.yaml'}:7:9"
    assert message == f"in.jsonl:40001: record 40001 (key 'r-40'): {where}: prompt: 'text' is undefined"


def test_an_error_deep_in_a_request_names_its_leaf(tmp_path: Path) -> None:
    body = 'request:\n  contents:\n    - parts:\n        - text: "{{ 1 / n }}"\n'
    message = data_error(tmp_path, body, {"n": 0})
    assert message == (
        f"in.jsonl:1: record 1: {tmp_path / 'spec.yaml'}:9:17: request.contents.0.parts.0.text: "
        "ZeroDivisionError: division by zero"
    )


@pytest.mark.parametrize(
    "body",
    [
        "prompt: \"{{ ''.__class__.__mro__ }}\"\n",
        "request: {contents: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"}\n",
        "request: {contents: \"{{ [''.__class__] }}\"}\n",
        'prompt: "{{ cycler.__init__.__globals__ }}"\n',
        'prompt: "{{ lipsum.__globals__ }}"\n',
    ],
)
def test_sandbox_escapes_are_refused(tmp_path: Path, body: str) -> None:
    assert ": refused by the sandbox: access to attribute '__" in data_error(tmp_path, body, {})


def test_records_cannot_be_mutated_by_a_template(tmp_path: Path) -> None:
    record = {"items": [1]}
    assert "refused by the sandbox" in data_error(tmp_path, 'prompt: "{{ items.append(2) }}"\n', record)
    assert record == {"items": [1]}


def test_a_value_json_cannot_hold_is_a_data_error(tmp_path: Path) -> None:
    message = data_error(tmp_path, 'request: {contents: "{{ range(3) }}"}\n', {})
    assert message.endswith("request.contents: gives a range, which JSON cannot hold (a list needs '| list')")


def test_a_request_that_is_not_a_mapping_is_a_data_error(tmp_path: Path) -> None:
    assert data_error(tmp_path, 'request: "{{ request }}"\n', {"request": [1]}).endswith(
        "request: expected the request to be a mapping, got a list"
    )


def test_record_and_ordinal_are_variables_unless_the_record_has_them(tmp_path: Path) -> None:
    body = 'request: {contents: [], generation_config: {seed: "{{ ordinal }}", top_k: "{{ record.x }}"}}\n'
    assert render(tmp_path, body, {"x": 1}, ordinal=9)[1]["generationConfig"] == {"seed": 9, "topK": 1}
    assert render(tmp_path, body, {"x": 2, "ordinal": 3})[1]["generationConfig"] == {"seed": 3, "topK": 2}
    body = 'request: {contents: [{parts: [{text: "r={{ record }}"}]}]}\n'
    assert render(tmp_path, body, {"x": 1})[1] == {"contents": [{"parts": [{"text": "r={'x': 1}"}]}]}


def test_text_leaves_keep_yaml_trailing_newline(tmp_path: Path) -> None:
    _, request = render(tmp_path, "prompt: |\n  line {{ n }}\n", {"n": 1})
    assert request["contents"][0]["parts"][0]["text"] == "line 1\n"


def test_template_syntax_errors_are_spec_errors_at_load(tmp_path: Path) -> None:
    loaded = spec(tmp_path, 'prompt: "{{ text"\nkey: "{{ a b }}"\n')
    with pytest.raises(InvalidSpec) as info:
        Renderer(loaded)
    assert info.value.problems == [
        f"{tmp_path / 'spec.yaml'}:7:6: key: template syntax error: chunk after expression",
        f"{tmp_path / 'spec.yaml'}:6:9: prompt: template syntax error: "
        "unexpected end of template, expected 'end of print statement'.",
    ]


def test_a_record_that_is_not_an_object_is_a_data_error(tmp_path: Path) -> None:
    renderer = Renderer(spec(tmp_path, "prompt: hi\n"))
    with pytest.raises(DataError, match=r"^in\.jsonl:3: record 3: expected the record to be an object, got a list$"):
        renderer.render([1], 3, "in.jsonl:3")  # type: ignore[arg-type]
