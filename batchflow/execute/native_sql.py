"""The SQL of the BigQuery-native path (``source.native: true``): pure functions of the spec, no I/O.

On this path the requests are built *inside* BigQuery, so a template can only be what SQL can do for every row
alike: text with columns put into it (``"Review: {{ text }}"``, ``{{ item.title }}`` for a STRUCT's field). A
filter, a condition, a loop or arithmetic is refused at ``validate`` with the reason and the template's place.
A NULL column becomes empty text. Every template leaf is a JSON string in the request; the spec's constants
(numbers, booleans, ``response_schema``) are written into the SQL as JSON text once.

Tables (all in the output's dataset, named ``_bf_<spec name>_…``): ``requests`` (key, request, partition),
one ``p<N>`` per partition of at most ``jobs.max_requests`` rows (each one Vertex job), ``p<N>_j<M>`` for a
retry's subset, and ``p<N>_j<M>_out`` for what each job wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from batchflow.errors import SpecError
from batchflow.libs.bigquery import TableId, quote_name
from batchflow.request.compiled import templated
from batchflow.request.wire import RequestBuilder, RequestProblems
from batchflow.spec.spec import Spec

KEY = "batchflow_key"
_ENV = ImmutableSandboxedEnvironment()


def sql_string(text: str) -> str:
    """A Standard SQL string literal."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return "'" + escaped + "'"


def _column(node: nodes.Node, dotted: str) -> str:
    if isinstance(node, nodes.Name):
        return quote_name(node.name)
    if isinstance(node, nodes.Getattr):
        return f"{_column(node.node, dotted)}.{quote_name(node.attr)}"
    what = type(node).__name__.lower()
    raise SpecError(f"{dotted}: with source.native the requests are built in SQL, where a template may only put "
                    f"columns into text ({{{{ column }}}}); this one uses a {what}")


def text_sql(template: str, dotted: str) -> str:
    """A template of text and ``{{ column }}`` as a SQL STRING expression (NULL columns as empty text)."""
    try:
        body = _ENV.parse(template).body
    except TemplateSyntaxError as exc:
        raise SpecError(f"{dotted}: template syntax error: {exc.message}") from None
    parts: list[str] = []
    for node in body:
        if not isinstance(node, nodes.Output):
            raise SpecError(f"{dotted}: with source.native the requests are built in SQL, where a template may "
                            f"only put columns into text; a {{% {type(node).__name__.lower()} %}} block cannot be")
        for item in node.nodes:
            if isinstance(item, nodes.TemplateData):
                parts.append(sql_string(item.data))
            else:
                parts.append(f"IFNULL(CAST({_column(item, dotted)} AS STRING), '')")
    if not parts:
        return "''"
    return parts[0] if len(parts) == 1 else f"CONCAT({', '.join(parts)})"


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def json_sql(value: Any, dotted: str) -> str:
    """A request tree (template strings at its leaves) as a SQL expression of its JSON text."""
    parts: list[str | tuple[str]] = []  # a str is JSON text; a 1-tuple a SQL expression of a JSON string

    def walk(item: Any, path: str) -> None:
        if isinstance(item, Mapping):
            parts.append("{")
            for i, (k, v) in enumerate(item.items()):
                parts.append(("," if i else "") + orjson.dumps(str(k)).decode() + ":")
                walk(v, f"{path}.{k}")
            parts.append("}")
        elif isinstance(item, list | tuple):
            parts.append("[")
            for i, v in enumerate(item):
                parts.append("," if i else "")
                walk(v, f"{path}.{i}")
            parts.append("]")
        elif isinstance(item, str) and _is_template(item):
            parts.append((f"TO_JSON_STRING({text_sql(item, path)})",))
        else:
            parts.append(orjson.dumps(item).decode())

    walk(value, dotted)
    merged: list[str] = []
    text = ""
    for part in parts:
        if isinstance(part, str):
            text += part
            continue
        if text:
            merged.append(sql_string(text))
            text = ""
        merged.append(part[0])
    if text:
        merged.append(sql_string(text))
    return merged[0] if len(merged) == 1 else f"CONCAT({', '.join(merged)})"


def request_tree(spec: Spec) -> dict[str, Any]:
    """The request with its templates still in the leaves (the shapes ``templating`` renders)."""
    if spec.task != "generate":
        raise SpecError(f"{spec.where('task')}: task: source.native supports task generate only")
    if isinstance(spec.request, str):
        raise SpecError(f"{spec.where('request')}: request: with source.native the request is built in SQL from a "
                        "mapping; a single \"{{ expression }}\" request is not supported")
    for name, parts in (("prompt", spec.prompt_parts), ("system", spec.system_parts)):
        if parts is not None:  # rendered in SQL, a list of parts would lose its media (and be sent empty)
            raise SpecError(f"{spec.where(name)}: {name}: with source.native a list of parts is not supported yet; "
                            "write one text template")
    if spec.request is not None:
        tree = dict(spec.request)
    else:
        tree = {"contents": [{"role": "user", "parts": [{"text": spec.prompt or ""}]}]}
    if spec.system and "system_instruction" not in tree and "systemInstruction" not in tree:
        tree["system_instruction"] = {"parts": [{"text": spec.system}]}
    if spec.generation_config:
        config = dict(tree.get("generation_config") or tree.get("generationConfig") or {})
        tree.pop("generationConfig", None)
        tree["generation_config"] = {**spec.generation_config, **config}
    return _wire(spec, tree)


def _wire(spec: Spec, tree: dict[str, Any]) -> dict[str, Any]:
    """The request tree in the SDK's wire form (``request_json``): its templates, all text here, stand in for
    themselves through the conversion as markers, put back after it."""
    templates: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, str) and templated(value):
            templates.append(value)
            return f"\x00bf{len(templates) - 1}\x00"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        return [mark(v) for v in value] if isinstance(value, list) else value

    try:
        wire = RequestBuilder(spec.backend.type, spec.task, spec.model, spec.backend.project or "project",
                              spec.backend.location or "global").build(mark(tree))
    except RequestProblems as exc:
        raise SpecError(f"{spec.where('request' if spec.request is not None else 'generation_config')}: {exc}") \
            from None
    placed: set[int] = set()

    def unmark(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("\x00bf") and value.endswith("\x00"):
            index = int(value[3:-1])
            placed.add(index)
            return templates[index]
        if isinstance(value, dict):
            return {k: unmark(v) for k, v in value.items()}
        return [unmark(v) for v in value] if isinstance(value, list) else value

    result: dict[str, Any] = unmark(wire)
    missing = [t for i, t in enumerate(templates) if i not in placed]
    if missing:
        raise SpecError(f"{spec.where('request')}: with source.native a template must give text; "
                        f"{missing[0]!r} is at a place that is not text")
    return result


@dataclass(frozen=True)
class NativeSql:
    """Everything the native path runs in BigQuery, as text."""

    source: str  # a FROM item: the table or the query in parentheses
    key: str  # a SQL STRING expression of a source row's key
    request: str  # a SQL STRING expression of a source row's request JSON


def compile_spec(spec: Spec) -> NativeSql:
    """The spec's templates as SQL; ``SpecError`` at the template's place when one cannot be SQL."""
    src = spec.source
    source = TableId.parse(src.table).sql if src.table else f"(\n{(src.query or '').strip().rstrip(';')}\n)"
    if spec.key:
        key = _at(spec, "key", lambda: text_sql(str(spec.key), "key"))
    elif src.order_by:
        key = f"CAST(ROW_NUMBER() OVER (ORDER BY {src.order_by}) AS STRING)"
    else:
        raise SpecError(f"{spec.where('key')}: key: source.native joins the results back by key: give a key "
                        "(or source.order_by, to number the rows)")
    request = _at(spec, "prompt", lambda: json_sql(request_tree(spec), "request"))
    return NativeSql(source, key, request)


def _at(spec: Spec, fallback: str, make: Any) -> str:
    try:
        return str(make())
    except SpecError as exc:
        dotted = str(exc).split(":", 1)[0]
        where = spec.where(dotted if dotted in spec.locations else fallback)
        raise SpecError(f"{where}: {exc}") from None


def requests_sql(sql: NativeSql, table: TableId, per_job: int) -> str:
    """Build the request table: key, request (JSON), and the partition (one Vertex job each)."""
    return (f"CREATE OR REPLACE TABLE {table.sql} AS\n"
            f"SELECT {KEY}, PARSE_JSON(request) AS request, "
            f"CAST(FLOOR((ROW_NUMBER() OVER (ORDER BY {KEY}) - 1) / {per_job}) AS INT64) AS batchflow_part\n"
            f"FROM (SELECT {sql.key} AS {KEY}, {sql.request} AS request FROM {sql.source} AS src)")


def check_sql(table: TableId) -> str:
    """One row: how many requests, how many distinct keys, how many partitions."""
    return (f"SELECT COUNT(*) AS n, COUNT(DISTINCT {KEY}) AS keys, COUNTIF({KEY} IS NULL) AS null_keys, "
            f"IFNULL(MAX(batchflow_part) + 1, 0) AS parts FROM {table.sql}")


def partition_sql(requests: TableId, part: TableId, index: int) -> str:
    """One partition's requests as the table its Vertex job reads (key as a passthrough column)."""
    return (f"CREATE OR REPLACE TABLE {part.sql} AS SELECT {KEY}, request FROM {requests.sql} "
            f"WHERE batchflow_part = {index}")


def counts_sql(predictions: TableId) -> str:
    """One row: the lines a job answered well (``status`` empty) and all its lines."""
    return f"SELECT COUNTIF(status = '') AS ok, COUNT(*) AS n FROM {predictions.sql}"


def _union(predictions: list[tuple[TableId, int]]) -> str:
    return "\n  UNION ALL ".join(f"SELECT {KEY}, response, status, {n} AS attempt FROM {t.sql}"
                                 for t, n in predictions)


def retry_sql(part: TableId, predictions: list[tuple[TableId, int]], dest: TableId, attempts: int) -> str:
    """The partition's requests with no good answer yet and attempts left, as a new job's input table."""
    tried = (f"LEFT JOIN (SELECT {KEY}, COUNTIF(status = '') AS ok, COUNT(*) AS tries FROM (\n  {_union(predictions)})"
             f" GROUP BY {KEY}) p USING ({KEY})") if predictions else ""
    where = "WHERE IFNULL(p.ok, 0) = 0 AND IFNULL(p.tries, 0) < " + str(attempts) if predictions else ""
    return f"CREATE OR REPLACE TABLE {dest.sql} AS SELECT r.{KEY}, r.request FROM {part.sql} r {tried} {where}"


def output_sql(sql: NativeSql, requests: TableId, predictions: list[tuple[TableId, int]], parse_json: bool,
               include_response: bool, include_record: bool) -> str:
    """One output row per request: its best answer (a good one, else the last), joined to its source record."""
    preds = _union(predictions) if predictions else \
        f"SELECT CAST(NULL AS STRING) AS {KEY}, JSON 'null' AS response, '' AS status, 0 AS attempt"
    text = "JSON_VALUE(b.response, '$.candidates[0].content.parts[0].text')"
    usage = ", ".join(f"CAST(JSON_VALUE(b.response, '$.usageMetadata.{field}') AS INT64) AS {name}" for name, field in
                      (("prompt_tokens", "promptTokenCount"), ("output_tokens", "candidatesTokenCount"),
                       ("total_tokens", "totalTokenCount")))
    ok = "IF(SAFE.PARSE_JSON(t.text) IS NULL, 'parse_error', 'ok')" if parse_json else "'ok'"
    cols = [f"t.{KEY} AS key", f"CASE WHEN t.good THEN {ok} ELSE 'error' END AS status", "t.text"]
    cols += ["SAFE.PARSE_JSON(t.text) AS parsed"] if parse_json else []
    cols += ["t.finish_reason", "t.usage", "t.attempts", "t.error"]
    cols += ["t.response"] if include_response else []
    cols += ["t.record"] if include_record else []
    record = (f",\nsrc AS (SELECT {sql.key} AS {KEY}, TO_JSON(src) AS record FROM {sql.source} AS src)"
              if include_record else "")
    return (f"WITH preds AS (\n  {preds}\n),\n"
            f"best AS (SELECT *, COUNT(*) OVER (PARTITION BY {KEY}) AS tries FROM preds\n"
            f"  QUALIFY ROW_NUMBER() OVER (PARTITION BY {KEY} ORDER BY IF(status = '', 0, 1), attempt DESC) = 1)"
            f"{record}\n"
            f"SELECT {', '.join(cols)} FROM (\n"
            f"  SELECT r.{KEY}, IFNULL(b.status = '', FALSE) AS good, {text} AS text,\n"
            f"    JSON_VALUE(b.response, '$.candidates[0].finishReason') AS finish_reason,\n"
            f"    STRUCT({usage}) AS usage, IFNULL(b.tries, 0) AS attempts,\n"
            f"    IF(IFNULL(b.status = '', FALSE), NULL, STRUCT(CAST(NULL AS INT64) AS code,\n"
            f"      IFNULL(NULLIF(b.status, ''), 'no result for this request') AS message)) AS error,\n"
            f"    b.response{', s.record' if include_record else ''}\n"
            f"  FROM {requests.sql} r LEFT JOIN best b USING ({KEY})"
            f"{f' LEFT JOIN src s USING ({KEY})' if include_record else ''}\n) t")
