"""AIP-160 list filters: the grammar (`vertex/filter_parser.py`) and its binding to Vertex batch prediction jobs
(`vertex/job_filter.py`), checked on records, without a server."""

from __future__ import annotations

from datetime import datetime

import pytest

from batchflow.emulator.jobs.store import rfc3339
from batchflow.emulator.vertex.filter_parser import And, Not, Or, Restriction, parse, wildcard_match
from batchflow.emulator.vertex.job_filter import parse_filter
from batchflow.emulator.vertex.jobs import VertexJob
from batchflow.emulator.wire.errors import ApiError

A, B, C = (Restriction(name, "=", "1") for name in "abc")


def _job(display_name: str, *, created: str = "2024-01-01T00:00:00Z", labels: dict[str, str] | None = None,
         model: str = "publishers/google/models/gemini-2.5-flash") -> VertexJob:
    epoch = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    return VertexJob(id=display_name, seq=0, project="p", location="l", display_name=display_name, model=model,
                     input_config={}, output_config={}, output_dir="", create_time=epoch, due_time=epoch,
                     labels=labels)


JOBS = {
    "dc-1": (_job("dc-1", created="2021-05-17T23:59:59.5Z", labels={"team": "a"}), "SUCCEEDED"),
    "dc-2": (_job("dc-2", created="2021-05-18T00:00:00Z", labels={"team": "b", "keyB": ""}), "FAILED"),
    "other": (_job("other", created="2022-01-01T00:00:00+02:00", model="publishers/google/models/gemini-2.5-pro"),
              "RUNNING"),
}


def _kept(text: str) -> list[str]:
    keep = parse_filter(text)
    return sorted(name for name, (job, state) in JOBS.items() if keep(job, state))


@pytest.mark.parametrize(("text", "tree"), [
    ("a=1 AND b=1 OR c=1", And((A, Or((B, C))))),  # OR binds tighter than AND
    ("a=1 OR b=1 AND c=1", And((Or((A, B)), C))),
    ("(a=1 AND b=1) OR c=1", Or((And((A, B)), C))),
    ("a=1 b=1 OR c=1", And((A, Or((B, C))))),  # juxtaposition is an AND looser than OR
    ("NOT a=1 OR b=1", Or((Not(A), B))),  # NOT binds tightest
    ("-a=1 AND -(b=1 OR c=1)", And((Not(A), Not(Or((B, C)))))),
    ("NOT (a=1)", Not(A)),
    ('labels.k:*', Restriction("labels.k", ":", "*")),
    ('display_name != "x \\" y"', Restriction("display_name", "!=", 'x " y')),
    ("create_time>='2021-05-18T00:00:00Z'", Restriction("create_time", ">=", "2021-05-18T00:00:00Z")),
    ("   ", None),
])
def test_grammar_builds_the_tree_with_aip160_precedence(text: str, tree: object) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(("text", "why"), [
    ("a=", "unexpected end of filter"),
    ("a", "expected a comparator"),
    ("(a=1", "expected ')'"),
    ("a=1)", "unexpected ')'"),
    ("a=1 AND", "unexpected end of filter"),
    ("a=1 OR OR b=1", "unexpected 'OR'"),
    ('a="open', "unterminated string"),
    ("a!1", "unexpected '!'"),
    ("a==1", "expected a value"),
    ("1a=1", "is not a field name"),
    ("a=(b)", "expected a value"),
])
def test_malformed_filters_are_400_naming_the_position(text: str, why: str) -> None:
    with pytest.raises(ApiError) as info:
        parse(text)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert why in info.value.message and "at position" in info.value.message


def test_wildcards_match_any_run_and_nothing_else() -> None:
    assert wildcard_match("dc-*", "dc-") and wildcard_match("*-2", "dc-2") and wildcard_match("*", "")
    assert not wildcard_match("dc-*", "xdc-1") and not wildcard_match("d.-1", "dc-1")
    assert wildcard_match("a*b*c", "a-b-b-c") and not wildcard_match("a*b", "a-b-c")


@pytest.mark.parametrize(("text", "kept"), [
    ('state!="JOB_STATE_FAILED"', ["dc-1", "other"]),
    ("state=JOB_STATE_RUNNING", ["other"]),
    ('display_name:"dc-*"', ["dc-1", "dc-2"]),
    ('display_name:"dc"', []),  # `:` matches the whole value: without `*` it is equality
    ('NOT display_name="dc-1"', ["dc-2", "other"]),
    ('-display_name="dc-1"', ["dc-2", "other"]),
    ('state="JOB_STATE_SUCCEEDED" OR display_name="other"', ["dc-1", "other"]),
    ('display_name:"dc-*" AND state="JOB_STATE_FAILED" OR state="JOB_STATE_SUCCEEDED"', ["dc-1", "dc-2"]),
    ('(display_name:"dc-*" AND state="JOB_STATE_FAILED") OR display_name="other"', ["dc-2", "other"]),
    ('create_time>"2021-05-18T00:00:00Z"', ["other"]),
    ('create_time>="2021-05-18T00:00:00Z"', ["dc-2", "other"]),
    ('create_time<"2021-05-18T00:00:00.000000001Z"', ["dc-1", "dc-2"]),
    ('create_time="2021-05-18T02:00:00+02:00"', ["dc-2"]),  # times, not strings, are compared
    ('create_time!="2021-05-17T23:59:59.500Z"', ["dc-2", "other"]),
    ('create_time<="2021-12-31T22:00:00Z"', ["dc-1", "dc-2", "other"]),
    ("labels.team=a", ["dc-1"]),
    ('labels.team!="a"', ["dc-2", "other"]),
    ("labels.keyB:*", ["dc-2"]),  # set, even to ""
    ("labels.team:*", ["dc-1", "dc-2"]),
    ("labels:team", ["dc-1", "dc-2"]),
    ('model_display_name="gemini-2.5-pro"', ["other"]),
    ('model_display_name!="gemini-2.5-pro"', ["dc-1", "dc-2"]),
    ("", ["dc-1", "dc-2", "other"]),
])
def test_vertex_filters_keep_the_documented_matches(text: str, kept: list[str]) -> None:
    assert _kept(text) == kept


@pytest.mark.parametrize(("text", "why"), [
    ('displayName="x"', "Unsupported field 'displayName'"),
    ('model="publishers/google/models/gemini-2.5-flash"', "Unsupported field 'model'"),
    ('name="x"', "Unsupported field"),
    ('state<"JOB_STATE_FAILED"', "Unsupported comparator '<' for field 'state'"),
    ('display_name>"a"', "Unsupported comparator"),
    ('model_display_name:"gemini-*"', "Unsupported comparator ':'"),
    ("state=SUCCEEDED", "Invalid value 'SUCCEEDED' for state"),
    ('create_time>"2020"', "RFC 3339"),
    ('create_time>"2021-13-01T00:00:00Z"', "RFC 3339"),
    ("labels=a", "Unsupported comparator"),
])
def test_vertex_filters_refuse_undocumented_fields_and_comparators(text: str, why: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_filter(text)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT" and why in info.value.message


def test_create_time_equality_holds_for_the_time_the_resource_shows() -> None:
    job = _job("x")
    job.create_time = 1706933106.1234567  # finer than the microseconds `createTime` shows
    shown = rfc3339(job.create_time)
    assert parse_filter(f'create_time="{shown}"')(job, "PENDING")
    assert not parse_filter(f'create_time>"{shown}" OR create_time<"{shown}"')(job, "PENDING")
