"""The fast path renders exactly what Jinja renders: the same request bytes, or the same one-line error."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batchflow.errors import DataError
from batchflow.request.render import Renderer
from batchflow.spec.spec import InvalidSpec, Spec, load_spec

NAMES = ["text", "id", "u", "n", "x_1", "record", "ordinal", "self", "range", "items", "loop"]
ATTRS = ["a", "b", "items", "keys", "_p"]

scalars = st.one_of(
    st.text(alphabet=st.sampled_from("ab %s{}#\r\n\t\"'\\é😀<>&"), max_size=8),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
values = st.one_of(scalars, st.dictionaries(st.sampled_from(ATTRS), scalars, max_size=3),
                   st.lists(scalars, max_size=2))
inner = st.fixed_dictionaries({}, optional={a: scalars for a in ATTRS})
nested = st.fixed_dictionaries({"a": scalars, "b": st.fixed_dictionaries({"a": scalars}, optional={"b": scalars})},
                               optional={a: st.one_of(scalars, inner) for a in ATTRS[2:]})
# Most records have the fields most templates name, so most records take the fast path (and some miss)
good_id = st.one_of(st.integers(-(2**63), 2**63 - 1),
                    st.text(alphabet="ab-1 ", min_size=1, max_size=4).filter(str.strip))
records = st.builds(lambda common, extra: {**extra, **common},
                    st.fixed_dictionaries({"text": values, "id": st.one_of(good_id, good_id, good_id, scalars),
                                           "u": nested}),
                    st.dictionaries(st.sampled_from(NAMES), values, max_size=3))

name = st.one_of(*[st.sampled_from(["text", "id", "u"])] * 4, st.sampled_from(NAMES))
attr = st.sampled_from(ATTRS)
# mostly paths every record has (so most records take the fast path), some that some records miss
likely = st.sampled_from(["text", "id", "u.a", "u.b.a", "record.text", "ordinal", "u.b", "record.u.a",
                          "self", "loop"])
path = st.one_of(likely, likely, likely, likely, likely, likely, name,
                 st.builds(lambda n, a: f"{n}.{a}", name, attr), attr.map(lambda a: f"u.{a}"),
                 st.builds(lambda a, b: f"u.{a}.{b}", attr, attr), attr.map(lambda a: f"record.u.{a}"))
outside = st.sampled_from(["{{ text|upper }}", "{{ text ~ 'x' }}", "{{ 1 }}", "{{ none }}", "{{ u['a'] }}",
                           "{% if text %}y{% endif %}", "{{ range(2)|list }}", "{{ n + 1 }}", "{{ self }}"])
expression = st.one_of(
    *[path.map(lambda p: "{{ " + p + " }}")] * 6,
    path.map(lambda p: "{{- " + p + " -}}"),
    path.map(lambda p: "{{" + p + "}}"),
    outside,
)
literal = st.text(alphabet=st.sampled_from("ab %s{}#\r\n\t-é"), max_size=6).filter(
    lambda t: not any(m in t for m in ("{{", "{%", "{#", "#}", "%}", "}}")))
comment = st.just("{# note #}")
templates = st.lists(st.one_of(literal, expression, comment), min_size=1, max_size=5).map("".join).filter(
    lambda t: not any(m in t for m in ("{{{", "{{%", "{{#", "{%{", "{#{")))
typed = st.one_of(path.map(lambda p: "{{ " + p + " }}"), path.map(lambda p: " {{" + p + "}} "), templates)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"version": 1, "name": "t", "model": "gemini-2.5-flash",
                            "source": {"type": "inline", "records": [{"a": 1}]}, "output": {"path": "o.jsonl"}}
    usual = st.sampled_from([None, "{{ id }}", " {{id}} ", "k-{{ id }}", "{{ record.id }}", "{{ ordinal }}"])
    key = draw(usual if draw(st.integers(0, 9)) < 8 else typed)
    if key is not None:
        spec["key"] = key
    if draw(st.booleans()):
        spec["prompt"] = draw(templates)
        if draw(st.booleans()):
            spec["system"] = draw(templates)
        if draw(st.booleans()):
            spec["generation_config"] = {"temperature": 0, "seed": draw(typed)}
    else:
        spec["request"] = {"contents": [{"role": "user", "parts": [{"text": draw(templates)}]}],
                           "labels": {"v": draw(typed)},
                           "generation_config": {"response_schema": {"type": "object"}, "candidate_count": 1}}
    return spec


def _load(tmp: Path, body: dict[str, Any]) -> Spec:
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return load_spec(path, environ={})


def _outcome(render: Any, record: dict[str, Any], ordinal: int) -> tuple[str, Any]:
    try:
        key, request = render(record, ordinal)
    except DataError as exc:
        return "error", str(exc)
    return "ok", orjson.dumps({"key": key, "request": request}, option=orjson.OPT_NON_STR_KEYS)


def _fast_then_render(renderer: Renderer) -> Any:
    """What prepare does: the fast function, and ``render`` for whatever it raises on."""
    def render(record: dict[str, Any], ordinal: int) -> Any:
        try:
            assert renderer.fast is not None
            return renderer.fast(record, ordinal)
        except Exception:
            return renderer.render(record, ordinal, "in.jsonl:7")

    return render


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=specs(), batch=st.lists(records, min_size=1, max_size=4), ordinal=st.integers(1, 10**6))
def test_the_fast_path_renders_what_jinja_renders(body: dict[str, Any], batch: list[dict[str, Any]],
                                                  ordinal: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            spec = _load(Path(tmp), body)
            jinja, fast = Renderer(spec, fast=False), Renderer(spec)
        except InvalidSpec:
            assume(False)  # the schema's own rules (a blank prompt, ...), or pieces joined into a bad tag
    assert jinja.fast is None
    for record in batch:
        expected = _outcome(lambda r, o: jinja.render(r, o, "in.jsonl:7"), record, ordinal)
        assert _outcome(lambda r, o: fast.render(r, o, "in.jsonl:7"), record, ordinal) == expected
        if fast.fast is not None:
            assert _outcome(_fast_then_render(fast), record, ordinal) == expected


def _spec(tmp_path: Path, **fields: Any) -> Spec:
    body = {"version": 1, "name": "t", "model": "gemini-2.5-flash", "source": {"type": "inline", "records": [{"a": 1}]},
            "output": {"path": "o.jsonl"}, **fields}
    return _load(tmp_path, body)


def test_simple_templates_take_the_fast_path(tmp_path: Path) -> None:
    spec = _spec(tmp_path, key="{{ id }}", prompt="Review {{ text }} by {{ user.name }} ({{ ordinal }})\n",
                 system="Be brief.", generation_config={"temperature": 0, "seed": "{{ n }}"})
    renderer = Renderer(spec)
    assert renderer.fast is not None
    record = {"id": 7, "text": "50% off", "user": {"name": None}, "n": 3}
    assert renderer.fast(record, 2) == ("7", {
        "contents": [{"role": "user", "parts": [{"text": "Review 50% off by None (2)\n"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0, "seed": 3}})


@pytest.mark.parametrize("record", [{"id": "a"}, {"id": "a", "text": {"x": 1}}, {"id": " ", "text": "t"},
                                    {"id": True, "text": "t"}])
def test_a_record_the_fast_path_cannot_render_fails_as_jinja_fails(tmp_path: Path, record: dict[str, Any]) -> None:
    spec = _spec(tmp_path, key="{{ id }}", prompt="{{ text.x.y }}")
    with pytest.raises(DataError) as jinja:
        Renderer(spec, fast=False).render(record, 3, "in.jsonl:3")
    with pytest.raises(DataError) as fast:
        Renderer(spec).render(record, 3, "in.jsonl:3")
    assert str(fast.value) == str(jinja.value)
    assert str(fast.value).startswith("in.jsonl:3: record 3")


def test_a_template_outside_the_subset_still_renders_through_jinja(tmp_path: Path) -> None:
    spec = _spec(tmp_path, key="{{ id }}", prompt="{{ text|upper }} {{ range(2)|list }}")
    renderer = Renderer(spec)
    assert renderer.fast is not None, "the key and the request's shape still compile; the prompt calls Jinja"
    assert renderer.fast({"id": 1, "text": "hi"}, 1)[1]["contents"][0]["parts"][0]["text"] == "HI [0, 1]"


subset = st.lists(st.one_of(literal, comment, likely.map(lambda p: "{{ " + p + " }}"),
                            likely.map(lambda p: "{{- " + p + " -}}")), min_size=1, max_size=6).map("".join).filter(
    lambda t: t.strip() and not any(m in t for m in ("{{{", "{{%", "{{#", "{%{", "{#{")))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=subset, system=st.one_of(st.none(), subset), seed=likely,
       key=st.sampled_from([None, "{{ id }}", " {{id}} ", "k-{{ id }}", "{{ record.id }}", "{{ ordinal }}"]),
       batch=st.lists(records.map(lambda r: {**r, "self": 1, "loop": 2}), min_size=1, max_size=4),
       ids=st.lists(good_id, min_size=4, max_size=4), ordinal=st.integers(1, 10**6))
def test_templates_in_the_subset_render_without_jinja_as_jinja_does(
        prompt: str, system: str | None, seed: str, key: str | None, batch: list[dict[str, Any]],
        ids: list[Any], ordinal: int) -> None:
    body: dict[str, Any] = {"version": 1, "name": "t", "model": "gemini-2.5-flash", "output": {"path": "o.jsonl"},
                            "source": {"type": "inline", "records": [{"a": 1}]}, "prompt": prompt,
                            "generation_config": {"seed": "{{ " + seed + " }}"}}
    body.update({k: v for k, v in (("key", key), ("system", system)) if v is not None})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            spec = _load(Path(tmp), body)
            jinja, fast = Renderer(spec, fast=False), Renderer(spec)
        except InvalidSpec:
            assume(False)
    assert fast.fast is not None
    for record, id_ in zip(batch, ids, strict=False):
        record["id"] = id_
        expected = _outcome(lambda r, o: jinja.render(r, o, "in.jsonl:7"), record, ordinal)
        if expected[0] == "ok":
            key_, request = fast.fast(record, ordinal)  # no fallback: it must render this record itself
            assert orjson.dumps({"key": key_, "request": request}, option=orjson.OPT_NON_STR_KEYS) == expected[1]
        else:
            assert _outcome(_fast_then_render(fast), record, ordinal) == expected
