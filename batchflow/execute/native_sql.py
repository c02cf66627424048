"""The SQL of the BigQuery-native path (``source.native: true``): pure functions of the spec, no I/O.

On this path the requests are built *inside* BigQuery, so a template can only be what SQL can do for every row
alike: text with columns put into it (``"Review: {{ text }}"``, ``{{ item.title }}`` for a STRUCT's field). A
filter, a condition, a loop or arithmetic is refused at ``validate`` with the reason and the template's place.
A NULL column becomes ``None``, as on the runner path (below). Every template leaf is a JSON string in the
request; the spec's constants (numbers, booleans, ``response_schema``) are written into the SQL as JSON text once.

Each request's *digest* is computed in SQL from the same text the runner path digests for the same row: the
salt (``answers.request_salt``) and the line ``{"key":…,"request":…}`` as orjson writes it, hashed with SHA-256
(``answers.request_digest``). So the request text is built as orjson spells JSON (strings escaped by ``json_text``,
not ``TO_JSON_STRING``, whose escapes differ between engines), and a column goes into text as Python's ``str``
gives the value the runner reads: a NULL as ``None``, a BOOL as ``True``/``False``, an INT64, a DATE or a STRING
as BigQuery writes them. A column whose text BigQuery cannot give that way (a FLOAT64, BigQuery writing it only
approximately; NUMERIC, TIMESTAMP, BYTES …; a whole STRUCT, ARRAY or JSON value) is refused when the run plans,
with the advice to format it in ``source.query``: a digest computed wrongly would re-pay or, worse, keep a stale
answer.

An embedding (``task: embed``, a legacy text-embedding model: the only ones whose Vertex jobs read BigQuery) is
the runner path's embed request built the same way, and digested the same way; its job's table holds the
text-embedding instance's columns (``content``, ``task_type``, ``title``) taken from that request, its size is the
job's ``modelParameters``, and its ``predictions`` are kept as the runner path keeps a vector.

Tables (all in the output's dataset, named ``_bf_<spec name>_…``): ``requests`` (key, request, digest: the
source as it is now), ``kept`` (one answer per key with the digest of the request it answers: the kept answers),
``g<G>_send`` (generation G's requests that have no kept answer, and their partition), one ``g<G>_p<N>`` per
partition of at most ``jobs.max_requests`` distinct requests (each one Vertex job; identical requests of several keys
are one row, as the runner path stages them once on Vertex), ``g<G>_p<N>_j<M>`` for a retry's subset, and
``g<G>_p<N>_j<M>_out`` for what each job wrote (the request's identity, ``REQUEST``, passing through).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from batchflow.answers import request_salt
from batchflow.errors import SpecError
from batchflow.libs.bigquery import TableId, quote_name
from batchflow.request.compiled import templated
from batchflow.request.wire import RequestBuilder, RequestProblems
from batchflow.request.wire import dotted as dotted_path
from batchflow.spec.models import CHARS_PER_TOKEN, bare, embedding_of
from batchflow.spec.spec import Spec

KEY = "batchflow_key"
DIGEST = "batchflow_digest"
REQUEST = "batchflow_request"  # a request's identity without its key: identical requests share it, and one job row
BYTES = "batchflow_bytes"  # a request's line, in bytes: what the runner path estimates its input tokens from
PART = "batchflow_part"
WORK_TABLE_DAYS = 7  # a work table left behind (a run that never got to its merge) expires after this many days
EXPIRES = (f"OPTIONS (expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {WORK_TABLE_DAYS} DAY))")
_ENV = ImmutableSandboxedEnvironment()

Columns = Mapping[tuple[str, ...], str]
"""A source's columns by lower-cased path (``("item", "title")``) -> BigQuery type (``ARRAY`` when repeated)."""

_BOOL = "CASE {} WHEN TRUE THEN 'True' WHEN FALSE THEN 'False' END"  # NULL stays NULL (IF(NULL, …) is false)
# How a column of each type goes into text, as Python's str() writes the value the runner path reads.
_TEXT_OF = {"STRING": "{}", "INT64": "CAST({} AS STRING)", "INTEGER": "CAST({} AS STRING)",
            "BOOL": _BOOL, "BOOLEAN": _BOOL, "DATE": "CAST({} AS STRING)"}
_WHY_NOT = {"FLOAT64": "BigQuery writes a FLOAT64 as text only approximately",
            "FLOAT": "BigQuery writes a FLOAT64 as text only approximately",
            "RECORD": "a whole STRUCT has no text form", "STRUCT": "a whole STRUCT has no text form",
            "ARRAY": "an ARRAY has no text form", "JSON": "a JSON value has no text form"}
# orjson's escapes of a string (the backslash first); every other control character orjson writes \u00xx.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_RARE = "'[\\\\x01-\\\\x07\\\\x0b\\\\x0e-\\\\x1f]'"  # the other control characters (NUL aside), as a regex
_HEX_CASE = [f"\\u00{c:02X}" for c in (0x0B, 0x0E, 0x0F, *range(0x1A, 0x20))]  # hex digits that have a case


def columns_of(schema: Iterable[Any], parent: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """A table's or query's schema (google-cloud-bigquery ``SchemaField`` s) as ``Columns``."""
    found: dict[tuple[str, ...], str] = {}
    for field in schema:
        path = (*parent, field.name.lower())
        found[path] = "ARRAY" if field.mode == "REPEATED" else str(field.field_type).upper()
        if field.fields and field.mode != "REPEATED":
            found.update(columns_of(field.fields, path))
    return found


def sql_string(text: str) -> str:
    """A Standard SQL string literal."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return "'" + escaped + "'"


def json_text(expr: str) -> str:
    """A SQL STRING expression as the JSON string orjson writes for it (escapes as orjson's, UTF-8 as it is).

    The common escapes are a chain of REPLACEs. Text with another control character (rare) goes through
    ``TO_JSON_STRING`` instead, its hex digits put in lower case as orjson writes them (engines differ there: the
    emulator writes ``\\u001F``): one REPLACE each would nest the expression too deep for some SQL parsers."""
    common = expr
    for char, escape in _ESCAPES.items():
        quote = char == '"'
        found = "CHR(34)" if quote else sql_string(char) if char.isprintable() else f"CHR({ord(char)})"
        common = f"REPLACE({common}, {found}, {_QUOTED_QUOTE if quote else sql_string(escape)})"
    rare = f"TO_JSON_STRING({expr})"
    for upper in _HEX_CASE:
        rare = f"REPLACE({rare}, {sql_string(upper)}, {sql_string(upper.lower())})"
    return f"IF(REGEXP_CONTAINS({expr}, {_RARE}), {rare}, CONCAT(CHR(34), {common}, CHR(34)))"


# A double quote alone in a literal ('"') throws the BigQuery emulator's table-name rewriting off (it pairs double
# quotes across the statement); CHR(34) says the same in both.
_QUOTED_QUOTE = "CONCAT(CHR(92), CHR(34))"


def _path(node: nodes.Node, dotted: str) -> tuple[str, ...]:
    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        return (*_path(node.node, dotted), node.attr)
    what = type(node).__name__.lower()
    raise SpecError(f"{dotted}: with source.native the requests are built in SQL, where a template may only put "
                    f"columns into text ({{{{ column }}}}); this one uses a {what}")


def column_text(path: tuple[str, ...], dotted: str, columns: Columns | None, null: str | None = "None") -> str:
    """A column as text, as the runner path renders the value it reads (``None`` for a NULL); ``columns``
    None (``validate``: no schema read yet) casts whatever the type."""
    expr = ".".join(quote_name(name) for name in path)
    kind = None if columns is None else columns.get(tuple(name.lower() for name in path))
    if columns is not None and kind is None:
        raise SpecError(f"{dotted}: the source has no column {'.'.join(path)!r}")
    pattern = "CAST({} AS STRING)" if kind is None else _TEXT_OF.get(kind)
    if pattern is None:
        why = _WHY_NOT.get(str(kind), f"BigQuery does not write a {kind} as the runner path does")
        raise SpecError(f"{dotted}: with source.native column {'.'.join(path)!r} ({kind}) cannot be put into text: "
                        f"{why}, so its request could not be named by the digest the runner path gives it; make it "
                        f"a STRING in source.query (e.g. FORMAT('%g', {path[-1]}) AS {path[-1]})")
    text = pattern.format(expr)
    return text if null is None else f"IFNULL({text}, {sql_string(null)})"


def text_sql(template: str, dotted: str, columns: Columns | None = None, key: bool = False) -> str:
    """A template of text and ``{{ column }}`` as a SQL STRING expression (a NULL column as ``None``; a ``key``
    that is one column alone stays NULL, as the runner path refuses it)."""
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
                parts.append(column_text(_path(item, dotted), dotted, columns, None if key else "None"))
    if not parts:
        return "''"
    if key and len(parts) > 1:
        parts = [p if p.startswith("'") else f"IFNULL({p}, 'None')" for p in parts]
    text = parts[0] if len(parts) == 1 else f"CONCAT({', '.join(parts)})"
    return f"NULLIF(REGEXP_REPLACE({text}, {_OUTER_SPACE}, ''), '')" if key else text


# What Python's str.strip() strips (str.isspace: \t-\r, \x1c-\x1f, space, \x85 and Unicode's Z categories), as an
# RE2 pattern for both ends: the runner path strips a key so, and refuses one left empty (here NULL, refused too).
_SPACE = "[\\\\t-\\\\r\\\\x1c-\\\\x20\\\\x85\\\\p{Z}]"
_OUTER_SPACE = f"'^{_SPACE}+|{_SPACE}+$'"


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def json_sql(value: Any, dotted: str, columns: Columns | None = None) -> str:
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
            parts.append((json_text(text_sql(item, path, columns)),))
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
    """The request with its templates still in the leaves (the shapes ``templating`` renders), in wire form."""
    if spec.task == "embed":
        return _embed_tree(spec)
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
    return _wire(spec, tree, "request" if spec.request is not None else "generation_config")


def _embed_tree(spec: Spec) -> dict[str, Any]:
    """An embed request as the runner path renders it (``{"content": …, **embed_config}``, wire form), for a model
    whose Vertex batch job reads a BigQuery table (the legacy text-embedding models: their ``content`` column)."""
    if embedding_of(spec.model).format != "instance":  # the spec's own check says so first, at source.native
        raise SpecError(f"{spec.where('source')}: source.native: {bare(spec.model)} reads no BigQuery table on "
                        "Vertex (JSONL on Cloud Storage only): leave out source.native")
    if spec.content_parts is not None:
        raise SpecError(f"{spec.where('content')}: content: with source.native the text is built in SQL from one "
                        "text template; give one, not a list of parts")
    if spec.output.normalize:
        raise SpecError(f"{spec.where('output.normalize')}: output.normalize: with source.native the vectors stay in "
                        "BigQuery, which has no FLOAT32 to round them to as the default path does; leave it out "
                        "(and normalise in SQL), or leave out source.native")
    config = dict(spec.embed_config or {})
    for name, value in config.items():
        if name != "title" and isinstance(value, str) and templated(value):  # the title is text: SQL may make it
            raise SpecError(f"{spec.where(f'embed_config.{name}')}: embed_config.{name}: with source.native it is "
                            "one value for every row (a template may only make content and title)")
    return _wire(spec, {"content": {"parts": [{"text": spec.content or ""}]}, **config}, "embed_config")


_INSTANCE = (("content", "$.content.parts[0].text"), ("task_type", "$.taskType"), ("title", "$.title"))
"""A text-embedding job's columns (Google's "Get batch text embeddings", read 2026-12-07: ``content``, and
``task_type`` and ``title`` as the JSONL instance has them), each taken from the wire request at its path."""


def job_columns(spec: Spec, wire: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(column, SQL over the JSON ``request``) of what a job's table holds: the request itself (generate), or a
    text-embedding instance's columns, those the request has (``vertex.embed_instance`` on the runner path)."""
    if spec.task != "embed":
        return (("request", "request"),)
    present = {"content", *(name for name, path in _INSTANCE[1:] if path[2:] in wire)}
    return tuple((name, f"JSON_VALUE(request, '{path}')") for name, path in _INSTANCE if name in present)


def _wire(spec: Spec, tree: dict[str, Any], where: str) -> dict[str, Any]:
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
        raise SpecError(spec.at(_problem_place(spec, exc, where), _unmarked(str(exc), templates))) from None
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


def _problem_place(spec: Spec, exc: RequestProblems, fallback: str) -> str:
    """Where in the spec the first problem of the request was written: under ``request:`` when the spec gives
    one, else at the shorthand's key (``generation_config.temperature``); the request as a whole if neither."""
    path = dotted_path(exc.problems[0].path) if exc.problems else ""
    written = f"request.{path}" if spec.request is not None else path
    if path and written.split(".", 1)[0] in spec.locations:
        return written
    return fallback


_MARKER = re.compile(r"(?:\x00|\\x00)bf(\d+)(?:\x00|\\x00)")


def _unmarked(message: str, templates: list[str]) -> str:
    """A problem's message with the templates back where ``_wire`` put markers (raw, or as ``repr`` wrote them)."""
    return _MARKER.sub(lambda m: templates[int(m.group(1))], message)


@dataclass(frozen=True)
class NativeSql:
    """Everything the native path runs in BigQuery, as text."""

    source: str  # a FROM item: the table or the query in parentheses
    key: str  # a SQL STRING expression of a source row's key
    request: str  # a SQL STRING expression of a source row's request JSON, as orjson writes it
    digest: str  # a SQL STRING expression, over the columns KEY and ``request``, of ``answers.request_digest``
    bytes: str = ""  # a SQL INT64 expression, over the same columns, of the bytes of the runner path's line
    job: tuple[tuple[str, str], ...] = (("request", "request"),)  # a job table's columns (``job_columns``)
    embed: bool = False  # task embed: a job writes ``predictions``, and the output has vectors


def source_sql(spec: Spec) -> str:
    """The source as a FROM item: the table, or the query in parentheses."""
    src = spec.source
    return TableId.parse(src.table).sql if src.table else f"(\n{(src.query or '').strip().rstrip(';')}\n)"


def compile_spec(spec: Spec, columns: Columns | None = None) -> NativeSql:
    """The spec's templates as SQL; ``SpecError`` at the template's place when one cannot be SQL, or (given the
    source's ``columns``) puts a column into text that BigQuery cannot write as the runner path does."""
    src = spec.source
    if spec.key:
        key = _at(spec, "key", lambda: text_sql(str(spec.key), "key", columns, key=True))
    elif src.order_by:
        key = f"CAST(ROW_NUMBER() OVER (ORDER BY {src.order_by}) AS STRING)"
    else:
        raise SpecError(f"{spec.where('key')}: key: source.native joins the results back by key: give a key "
                        "(or source.order_by, to number the rows)")
    tree = request_tree(spec)
    request = _at(spec, "content" if spec.task == "embed" else "prompt", lambda: json_sql(tree, "request", columns))
    return NativeSql(source_sql(spec), key, request, digest_sql(request_salt(spec)), f"BYTE_LENGTH({_LINE})",
                     job_columns(spec, tree), spec.task == "embed")


def _text_literal(text: str) -> str:
    """Any text as a SQL expression: printable runs as literals, other characters as ``CHR``."""
    pieces = [sql_string(c) if c.isprintable() else f"CHR({ord(c)})" for c in text]
    return pieces[0] if len(pieces) == 1 else f"CONCAT({', '.join(pieces)})"


_LINE = f"CONCAT('{{\"key\":', {json_text(KEY)}, ',\"request\":', request, '}}', CHR(10))"
"""The line ``{"key":<key>,"request":<request>}`` and a newline, as the runner path writes it to a job's file (its
digest, and its bytes for the input-token estimate), over the columns KEY and ``request``."""


def digest_sql(salt: bytes) -> str:
    """``answers.request_digest(salt, line)`` in SQL: the first 32 hex digits of the SHA-256 of the salt and the
    runner path's line (``_LINE``), as the runner path digests it."""
    return f"SUBSTR(TO_HEX(SHA256(CONCAT({_text_literal(salt.decode())}, {_LINE}))), 1, 32)"


def _at(spec: Spec, fallback: str, make: Any) -> str:
    try:
        return str(make())
    except SpecError as exc:
        dotted, rest = str(exc).split(":", 1) if ":" in str(exc) else (str(exc), "")
        if spec.task == "embed":  # the request's places as the spec names them: content, embed_config.title
            dotted = "content" if dotted.startswith("request.content") else dotted.replace("request.",
                                                                                           "embed_config.", 1)
        raise SpecError(spec.at(dotted if dotted in spec.locations else fallback, f"{dotted}:{rest}")) from None


_REQUEST_ID = "SUBSTR(TO_HEX(SHA256(request)), 1, 32)"
"""A request's identity, over the column ``request`` (its JSON text) alone: the same for identical requests of
different keys, which Vertex is asked, answers and bills once (as the runner path stages them on Vertex). Every
request of a spec is the same tree with other texts in its leaves, so equal text is an equal request."""


def requests_sql(sql: NativeSql, table: TableId) -> str:
    """The source as it is now: each row's key, request (JSON), request digest, line bytes and request identity."""
    return (f"CREATE OR REPLACE TABLE {table.sql} AS\n"
            f"SELECT {KEY}, PARSE_JSON(request) AS request, {sql.digest} AS {DIGEST}, {sql.bytes} AS {BYTES}, "
            f"{_REQUEST_ID} AS {REQUEST}\n"
            f"FROM (SELECT {sql.key} AS {KEY}, {sql.request} AS request FROM {sql.source} AS src)")


KEPT_COLUMNS = (f"{KEY} STRING, {DIGEST} STRING, flag STRING, response JSON, status STRING, attempts INT64, "
                "model STRING, kept_at TIMESTAMP")
"""A kept answer: the key, the digest of the request it answers, whether it is final (``answers.OK``,
``PERMANENT``) or to send again (``RETRY``), Vertex's response and status, the attempts, the model and when."""


def kept_table_sql(kept: TableId, fresh: bool) -> str:
    """The kept answers' table: made if missing; emptied when ``fresh`` (a first run, or ``--restart``)."""
    create = "CREATE OR REPLACE TABLE" if fresh else "CREATE TABLE IF NOT EXISTS"
    return f"{create} {kept.sql} ({KEPT_COLUMNS})"


def _final(retry_errors: bool) -> str:
    """The flags of a kept answer that is not sent again: an answer, and (not under --retry-errors) a failure
    that would come back the same."""
    return "('o')" if retry_errors else "('o', 'p')"


def diff_sql(requests: str, kept: str, retry_errors: bool) -> str:
    """One row: the requests, their keys (to check them), and how they stand against the kept answers: new (key not
    kept), changed (kept for another request), kept, failed (kept as a failure to send again), removed (kept, but
    the key is gone from the source); ``content``, an order-free sum of the (key, digest) pairs. ``requests`` and
    ``kept`` are FROM items (a table, or a query in parentheses)."""
    final = _final(retry_errors)
    return (f"SELECT COUNT(*) AS n, COUNT(DISTINCT r.{KEY}) AS keys, COUNTIF(r.{KEY} IS NULL) AS null_keys,\n"
            f"  COUNTIF(k.{KEY} IS NULL) AS new, COUNTIF(k.{DIGEST} != r.{DIGEST}) AS changed,\n"
            f"  COUNTIF(k.{DIGEST} = r.{DIGEST} AND k.flag IN {final}) AS kept,\n"
            f"  COUNTIF(k.{DIGEST} = r.{DIGEST} AND k.flag NOT IN {final}) AS failed,\n"
            f"  (SELECT COUNT(*) FROM {kept} g WHERE NOT EXISTS (SELECT 1 FROM {requests} q "
            f"WHERE q.{KEY} = g.{KEY})) AS removed,\n"
            f"  BIT_XOR(FARM_FINGERPRINT(CONCAT(IFNULL(r.{KEY}, ''), ':', IFNULL(r.{DIGEST}, '')))) AS content\n"
            f"FROM {requests} r LEFT JOIN {kept} k ON k.{KEY} = r.{KEY}")


def source_requests(sql: NativeSql) -> str:
    """The source's keys, request digests, line bytes and request identities as a FROM item, computed where they
    stand (``plan``: no table made)."""
    return (f"(SELECT {KEY}, {sql.digest} AS {DIGEST}, {sql.bytes} AS {BYTES}, {_REQUEST_ID} AS {REQUEST} FROM "
            f"(SELECT {sql.key} AS {KEY}, {sql.request} AS request FROM {sql.source} AS src))")


NO_KEPT = f"(SELECT CAST(NULL AS STRING) AS {KEY}, CAST(NULL AS STRING) AS {DIGEST}, CAST(NULL AS STRING) AS flag " \
          "LIMIT 0)"
"""No kept answers, as a FROM item (a first run, or ``--restart``)."""


def to_send(requests: str, kept: str, per_job: int, retry_errors: bool, columns: str) -> str:
    """The ``columns`` of the requests with no kept answer for their (key, digest), each with the partition it
    goes in (one Vertex job each): an anti-join on the kept answers. A partition holds at most ``per_job`` distinct
    requests, and every key of one request (so the job asks it once). ``requests`` and ``kept`` are FROM items:
    the tables (``run``), or the source and the kept answers as they stand (``plan``)."""
    return (f"SELECT {columns}, CAST(FLOOR((DENSE_RANK() OVER (ORDER BY {REQUEST}) - 1) / {per_job}) AS INT64) "
            f"AS {PART}\n"
            f"FROM {requests} r WHERE NOT EXISTS (SELECT 1 FROM {kept} k WHERE k.{KEY} = r.{KEY} "
            f"AND k.{DIGEST} = r.{DIGEST} AND k.flag IN {_final(retry_errors)})")


def send_sql(requests: TableId, kept: TableId, send: TableId, per_job: int, retry_errors: bool) -> list[str]:
    """``to_send`` into a new table: one ``INSERT … SELECT``."""
    columns = f"{KEY}, request, {DIGEST}, {BYTES}, {REQUEST}"
    return [f"CREATE OR REPLACE TABLE {send.sql} ({KEY} STRING, request JSON, {DIGEST} STRING, {BYTES} INT64, "
            f"{REQUEST} STRING, {PART} INT64) {EXPIRES}",
            f"INSERT INTO {send.sql} ({columns}, {PART})\n"
            + to_send(requests.sql, kept.sql, per_job, retry_errors, columns)]


def parts_sql(rows: str) -> str:
    """A row a partition of ``rows`` (a FROM item with the columns of ``to_send``): its distinct requests (``n``:
    the job's rows), the keys they answer (``keys``), their lines' bytes, and the job's input tokens estimated as the
    runner path's plan estimates a Vertex job's: its lines' bytes, ``models.CHARS_PER_TOKEN`` a token, cut in
    proportion to the distinct requests (``plan_report._as_billed``)."""
    distinct = f"COUNT(DISTINCT {REQUEST})"
    return (f"SELECT {PART} AS part, {distinct} AS n, COUNT(*) AS keys, SUM({BYTES}) AS bytes, "
            f"DIV(DIV(SUM({BYTES}), {CHARS_PER_TOKEN}) * {distinct}, COUNT(*)) AS tokens "
            f"FROM {rows} GROUP BY {PART} ORDER BY {PART}")


def partition_sql(sql: NativeSql, send: TableId, part: TableId, index: int) -> str:
    """One partition's distinct requests as the table its Vertex job reads, each once, its identity as a
    passthrough column (the keys that asked it are in the send table): the request, or an embedding's columns."""
    columns = ", ".join(f"ANY_VALUE({value}) AS {name}" for name, value in sql.job)
    return (f"CREATE OR REPLACE TABLE {part.sql} {EXPIRES} AS SELECT {REQUEST}, {columns} "
            f"FROM {send.sql} WHERE {PART} = {index} GROUP BY {REQUEST}")


USAGE = (("input", "promptTokenCount"), ("output", "candidatesTokenCount"), ("thinking", "thoughtsTokenCount"))
"""The tokens an answer's ``usageMetadata`` bills (``cost.add_usage``), by the name ``cost.Usage`` gives them."""


def counts_sql(predictions: TableId, embed: bool = False) -> str:
    """One row: the lines a job answered well (``status`` empty), all its lines, and the tokens its answers'
    ``usageMetadata`` bill (the job's actual usage, as the runner path sums it line by line; a text embedding's
    prediction has none, so its usage is nothing there too)."""
    usage = ", ".join(f"0 AS {name}" if embed else
                      f"IFNULL(SUM(CAST(JSON_VALUE(response, '$.usageMetadata.{field}') AS INT64)), 0) AS {name}"
                      for name, field in USAGE)
    return f"SELECT COUNTIF(status = '') AS ok, COUNT(*) AS n, {usage} FROM {predictions.sql}"


_Q = "CHR(34)"  # a double quote (``_QUOTED_QUOTE``: not in a literal)
_VALUES = ("COALESCE(JSON_QUERY(predictions, '$[0].embeddings.values'), "
           "JSON_QUERY(predictions, '$[0].embeddings.Values'))")
EMBED_RESPONSE = (f"PARSE_JSON(CONCAT('{{', {_Q}, 'embedding', {_Q}, ':{{', {_Q}, 'values', {_Q}, ':', {_VALUES}, "
                  "'}}'))")
"""A text-embedding job's ``predictions`` (a STRING holding ``[{"embeddings": {"values": [...]}}]``) as the answer
the runner path keeps for it, ``{"embedding": {"values": [...]}}`` (``vertex._Matcher``); NULL with no vector.
Google's page spells the field ``Values`` in its BigQuery example and ``values`` in its JSONL one: either is
read. ``JSON_QUERY`` of a STRING is JSON text in BigQuery and its emulator alike (of a JSON value they differ)."""


def _union(predictions: list[tuple[TableId, int]], embed: bool = False) -> str:
    response = f"{EMBED_RESPONSE} AS response" if embed else "response"
    return "\n  UNION ALL ".join(f"SELECT {REQUEST}, {response}, status, {n} AS attempt FROM {t.sql}"
                                 for t, n in predictions)


def retry_sql(sql: NativeSql, part: TableId, predictions: list[tuple[TableId, int]], dest: TableId,
              attempts: int) -> str:
    """The partition's requests with no good answer yet and attempts left, as a new job's input table."""
    tried = (f"LEFT JOIN (SELECT {REQUEST}, COUNTIF(status = '') AS ok, COUNT(*) AS tries FROM (\n  "
             f"{_union(predictions, sql.embed)}) GROUP BY {REQUEST}) p USING ({REQUEST})") if predictions else ""
    where = "WHERE IFNULL(p.ok, 0) = 0 AND IFNULL(p.tries, 0) < " + str(attempts) if predictions else ""
    columns = ", ".join(f"r.{name}" for name, _ in sql.job)
    return (f"CREATE OR REPLACE TABLE {dest.sql} {EXPIRES} AS SELECT r.{REQUEST}, {columns} FROM {part.sql} r "
            f"{tried} {where}")


def keep_sql(send: TableId, predictions: list[tuple[TableId, int]], kept: TableId, model: str,
             embed: bool = False) -> str:
    """Each sent request's best answer (a good one, else the last) kept under every key that asked it, with the
    key's digest, replacing what the key had: an answer ``o``; a response with no candidate (blocked) ``p``; a
    failure, or no result, ``r``. An embedding (``embed``) has no candidates: an answer is ``o``."""
    preds = _union(predictions, embed) if predictions else \
        f"SELECT CAST(NULL AS STRING) AS {REQUEST}, JSON 'null' AS response, '' AS status, 0 AS attempt"
    blocked = "" if embed else "WHEN JSON_QUERY(b.response, '$.candidates[0]') IS NULL THEN 'p' "
    flag = f"CASE WHEN b.status IS NULL OR b.status != '' THEN 'r' {blocked}ELSE 'o' END"
    fields = f"{KEY}, {DIGEST}, flag, response, status, attempts, model, kept_at"
    return (f"MERGE {kept.sql} k USING (\n"
            f"  WITH best AS (SELECT *, COUNT(*) OVER (PARTITION BY {REQUEST}) AS tries FROM (\n  {preds})\n"
            f"    QUALIFY ROW_NUMBER() OVER (PARTITION BY {REQUEST} ORDER BY IF(status = '', 0, 1), attempt DESC)"
            " = 1)\n"
            f"  SELECT s.{KEY}, s.{DIGEST}, {flag} AS flag, b.response,\n"
            f"    IFNULL(b.status, 'no result for this request') AS status, IFNULL(b.tries, 0) AS attempts,\n"
            f"    {sql_string(model)} AS model, CURRENT_TIMESTAMP() AS kept_at\n"
            f"  FROM {send.sql} s LEFT JOIN best b USING ({REQUEST})\n"
            f") n ON k.{KEY} = n.{KEY}\n"
            f"WHEN MATCHED THEN UPDATE SET {', '.join(f'{c} = n.{c}' for c in fields.split(', ')[1:])}\n"
            f"WHEN NOT MATCHED THEN INSERT ({fields}) VALUES ({', '.join(f'n.{c}' for c in fields.split(', '))})")


def forget_removed_sql(requests: TableId, kept: TableId) -> str:
    """The kept answers of keys gone from the source dropped (a deleted row drops from the output)."""
    return (f"DELETE FROM {kept.sql} k WHERE NOT EXISTS (SELECT 1 FROM {requests.sql} r "
            f"WHERE r.{KEY} = k.{KEY})")


def kept_counts_sql(requests: TableId, kept: TableId) -> str:
    """One row: the source's requests answered (``o``), failed for good (``p``) and to send again."""
    return (f"SELECT COUNTIF(k.flag = 'o') AS ok, COUNTIF(k.flag = 'p') AS kept_errors, "
            f"COUNTIF(k.flag IS NULL OR k.flag = 'r') AS retry FROM {requests.sql} r "
            f"LEFT JOIN {kept.sql} k ON k.{KEY} = r.{KEY} AND k.{DIGEST} = r.{DIGEST}")


def output_sql(sql: NativeSql, requests: TableId, kept: TableId, parse_json: bool, include_response: bool,
               include_record: bool, model: str = "") -> str:
    """One output row per source row: the kept answer to its request (key and digest), joined to its record;
    an embedding's row (``sql.embed``) has its vector and ``model`` instead of text."""
    if sql.embed:
        return _embed_output_sql(sql, requests, kept, include_response, include_record, model)
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
    record = (f"WITH src AS (SELECT {sql.key} AS {KEY}, TO_JSON(src) AS record FROM {sql.source} AS src)\n"
              if include_record else "")
    return (f"{record}SELECT {', '.join(cols)} FROM (\n"
            f"  SELECT r.{KEY}, IFNULL(b.status = '', FALSE) AS good, {text} AS text,\n"
            f"    JSON_VALUE(b.response, '$.candidates[0].finishReason') AS finish_reason,\n"
            f"    STRUCT({usage}) AS usage, IFNULL(b.attempts, 0) AS attempts,\n"
            f"    IF(IFNULL(b.status = '', FALSE), NULL, STRUCT(CAST(NULL AS INT64) AS code,\n"
            f"      IFNULL(NULLIF(b.status, ''), 'no result for this request') AS message)) AS error,\n"
            f"    b.response{', s.record' if include_record else ''}\n"
            f"  FROM {requests.sql} r LEFT JOIN {kept.sql} b ON b.{KEY} = r.{KEY} AND b.{DIGEST} = r.{DIGEST}"
            f"{f' LEFT JOIN src s USING ({KEY})' if include_record else ''}\n) t")


def _embed_output_sql(sql: NativeSql, requests: TableId, kept: TableId, include_response: bool, include_record: bool,
                      model: str) -> str:
    """An embedding's output rows as the runner path writes them to BigQuery (``destinations.bigquery``): the
    vector as ARRAY<FLOAT64> in its order, its size and the model; an error row with an empty vector, no size,
    and the service's message (or why there is no vector)."""
    vector = ("ARRAY(SELECT CAST(JSON_VALUE(v) AS FLOAT64) FROM UNNEST(JSON_QUERY_ARRAY(t.response, "
              "'$.embedding.values')) v WITH OFFSET o ORDER BY o)")
    cols = [f"t.{KEY} AS key", "IF(t.good, 'ok', 'error') AS status",
            f"IF(t.good, {vector}, CAST([] AS ARRAY<FLOAT64>)) AS embedding",
            f"IF(t.good, ARRAY_LENGTH({vector}), NULL) AS dimensions",
            f"IF(t.good, {sql_string(model)}, NULL) AS model", "t.attempts",
            "IF(t.good, NULL, STRUCT(CAST(NULL AS INT64) AS code, t.message AS message)) AS error"]
    cols += ["t.response"] if include_response else []
    cols += ["t.record"] if include_record else []
    record = (f"WITH src AS (SELECT {sql.key} AS {KEY}, TO_JSON(src) AS record FROM {sql.source} AS src)\n"
              if include_record else "")
    answered = "IFNULL(b.status = '', FALSE)"
    has_vector = "JSON_QUERY(b.response, '$.embedding.values') IS NOT NULL"
    return (f"{record}SELECT {', '.join(cols)} FROM (\n"
            f"  SELECT r.{KEY}, {answered} AND {has_vector} AS good, b.response, IFNULL(b.attempts, 0) AS attempts,\n"
            f"    IF({answered}, 'no embedding in the response', IFNULL(NULLIF(b.status, ''), "
            f"'no result for this request')) AS message{', s.record' if include_record else ''}\n"
            f"  FROM {requests.sql} r LEFT JOIN {kept.sql} b ON b.{KEY} = r.{KEY} AND b.{DIGEST} = r.{DIGEST}"
            f"{f' LEFT JOIN src s USING ({KEY})' if include_record else ''}\n) t")
