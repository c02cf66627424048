#!/usr/bin/env python3
"""Write the schemas the emulator checks batch lines and Vertex create bodies against, from Google's published ones.

    python scripts/extract_discovery.py [--wheels DIR] [--out batchflow/emulator/wire/google_schemas.json]

Vertex AI: the discovery document `aiplatform.v1.json` inside the google-api-python-client wheel. Gemini
Developer API: that wheel carries no `generativelanguage` document, so its schemas come from the protos of
Google's own client library for it (google-ai-generativelanguage, `generativelanguage_v1beta`), turned into the
discovery document's schema dialect (`type`/`format`/`$ref`/`items`/`enum`/`additionalProperties`). Only the
schemas reachable from the request messages a batch line carries are kept, without descriptions. Wheels are
fetched with `pip download --no-deps` unless `--wheels` already holds them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

DISCOVERY_WHEEL = ("google-api-python-client", "2.202.0")
GEMINI_WHEEL = ("google-ai-generativelanguage", "0.12.1")
VERTEX_DOCUMENT = "googleapiclient/discovery_cache/documents/aiplatform.v1.json"
VERTEX_ROOTS = {"generate": "GoogleCloudAiplatformV1GenerateContentRequest",
                "batchPredictionJob": "GoogleCloudAiplatformV1BatchPredictionJob"}  # a create body
GEMINI_PACKAGE = "google.ai.generativelanguage.v1beta"
GEMINI_ROOTS = {"generate": "GenerateContentRequest", "embed": "EmbedContentRequest"}
_KEPT_KEYS = ("type", "format", "$ref", "items", "enum", "additionalProperties")
_OUT = Path(__file__).resolve().parents[1] / "batchflow" / "emulator" / "wire" / "google_schemas.json"

# FieldDescriptor.TYPE_* numbers -> the discovery dialect's (type, format)
_SCALARS: dict[int, tuple[str, str | None]] = {
    1: ("number", "double"), 2: ("number", "float"), 3: ("string", "int64"), 4: ("string", "uint64"),
    5: ("integer", "int32"), 6: ("string", "uint64"), 7: ("integer", "uint32"), 8: ("boolean", None),
    9: ("string", None), 12: ("string", "byte"), 13: ("integer", "uint32"), 15: ("integer", "int32"),
    16: ("string", "int64"), 17: ("integer", "int32"), 18: ("string", "int64"),
}
_MESSAGE, _ENUM = 11, 14
# well-known types, as discovery documents spell them
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": {"type": "any"}},
    "google.protobuf.Any": {"type": "object", "additionalProperties": {"type": "any"}},
    "google.protobuf.Value": {"type": "any"},
    "google.protobuf.ListValue": {"type": "array", "items": {"type": "any"}},
    "google.protobuf.Timestamp": {"type": "string", "format": "google-datetime"},
    "google.protobuf.Duration": {"type": "string", "format": "google-duration"},
    "google.protobuf.FieldMask": {"type": "string", "format": "google-fieldmask"},
    "google.protobuf.Empty": {"type": "object", "properties": {}},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, help="a directory holding (or to receive) the two wheels")
    parser.add_argument("--out", type=Path, default=_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheels = args.wheels or Path(tmp)
        extract: dict[str, Any] = {
            "about": "Trimmed request schemas for the emulator's per-line validation; written by "
                     "scripts/extract_discovery.py, do not edit. Vertex embeddings have none: a text-embedding "
                     "instance ({content, task_type, title}) is a prediction-instance schema, not in the document.",
            "vertex": vertex_extract(wheel(wheels, *DISCOVERY_WHEEL)),
            "gemini": gemini_extract(wheel(wheels, *GEMINI_WHEEL), Path(tmp) / "gemini"),
        }
    args.out.write_text(json.dumps(extract, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: {len(extract['vertex']['schemas'])} Vertex and "
          f"{len(extract['gemini']['schemas'])} Gemini schemas")
    return 0


def wheel(directory: Path, name: str, version: str) -> Path:
    """The wheel of `name==version` in `directory`, downloaded there first when missing."""
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not list(directory.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", f"{name}=={version}",
                        "-d", str(directory)], check=True)
    return next(directory.glob(pattern))


def vertex_extract(wheel_path: Path) -> dict[str, Any]:
    """The Vertex request schemas reachable from VERTEX_ROOTS in the wheel's aiplatform.v1 discovery document."""
    with zipfile.ZipFile(wheel_path) as zf:
        document = json.loads(zf.read(VERTEX_DOCUMENT))
    return {"source": f"{VERTEX_DOCUMENT} (discovery revision {document['revision']}) from {wheel_path.name}",
            "roots": VERTEX_ROOTS, "schemas": reachable(document["schemas"], VERTEX_ROOTS.values())}


def reachable(schemas: dict[str, Any], roots: Any) -> dict[str, Any]:
    """The schemas reachable from `roots` through `$ref`, trimmed to what validation reads."""
    kept: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        kept[name] = _trim(schemas[name])
        todo.extend(_refs(kept[name]))
    return dict(sorted(kept.items()))


def _trim(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: _trim(v) if isinstance(v, dict) else v for k, v in node.items() if k in _KEPT_KEYS}
    if "properties" in node:
        out["properties"] = {name: _trim(prop) for name, prop in node["properties"].items()}
    return out


def _refs(node: Any) -> list[str]:
    if not isinstance(node, dict):
        return []
    found = [node["$ref"]] if "$ref" in node else []
    for value in node.values():
        if isinstance(value, dict):
            found.extend(_refs(value))
    return found


def gemini_extract(wheel_path: Path, unpack: Path) -> dict[str, Any]:
    """The Gemini request schemas reachable from GEMINI_ROOTS, read from the client library's protos."""
    with zipfile.ZipFile(wheel_path) as zf:
        zf.extractall(unpack)
    sys.path.insert(0, str(unpack))
    from google.ai.generativelanguage_v1beta import types

    schemas: dict[str, Any] = {}
    for root in GEMINI_ROOTS.values():
        _add_message(getattr(types, root).pb().DESCRIPTOR, schemas)
    return {"source": f"protos of {GEMINI_PACKAGE} from {wheel_path.name} (discovery dialect)",
            "roots": GEMINI_ROOTS, "schemas": dict(sorted(schemas.items()))}


def _add_message(message: Any, schemas: dict[str, Any]) -> str:
    """Add a message (and every message it reaches) to `schemas`; its schema name.

    Properties are named by JSON name only, as in discovery documents: proto-plus renames fields that clash with
    Python words (`type` -> `type_`), so the descriptor's field name is not the proto name.
    """
    name = message.full_name.removeprefix(GEMINI_PACKAGE + ".")
    if name not in schemas:
        schemas[name] = {}  # placed first: a message may reach itself
        schemas[name] = {"type": "object",
                         "properties": {f.json_name: _field(f, schemas) for f in message.fields}}
    return str(name)


def _field(field: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        return {"type": "object", "additionalProperties": _single(message.fields_by_name["value"], schemas)}
    single = _single(field, schemas)
    return {"type": "array", "items": single} if field.is_repeated else single


def _single(field: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.type == _ENUM:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if field.type == _MESSAGE:
        known = _WELL_KNOWN.get(field.message_type.full_name)
        return dict(known) if known is not None else {"$ref": _add_message(field.message_type, schemas)}
    kind, fmt = _SCALARS[field.type]
    return {"type": kind, "format": fmt} if fmt else {"type": kind}


if __name__ == "__main__":
    sys.exit(main())
