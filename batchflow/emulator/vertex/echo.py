"""The `request` a Vertex prediction line echoes: not the bytes that were sent, but the request re-serialised.

Google's own sample output (the intro_batch_prediction notebook) shows a request sent as
`{"contents": [{"role": "user", "parts": [{"text": "…"}, {"file_data": {"file_uri": "…", "mime_type": "…"}}]}],
"generationConfig": {…}}` echoed as `{"contents": [{"parts": [{"file_data": null, "text": "…"}, {"file_data":
{"file_uri": "…", "mime_type": "…"}, "text": null}], "role": "user"}], "generationConfig": {…}}`: field names as
sent, keys in sorted order, and every part carrying the part fields the request uses, `null` where unset. The
emulator does the same, and gives every part at least `text` and `file_data` (the pair in the sample), so even a
text-only request comes back with a null in it. A client must therefore match lines by what a request *means*,
never by the echo's bytes.
"""

from __future__ import annotations

from typing import Any

import orjson

_PART_LISTS = ("contents", "systemInstruction", "system_instruction")
_SAMPLE_MEMBERS = (("text",), ("file_data", "fileData"))  # a member is present under any of its spellings


def echo(request: Any, *, reserialise: bool, drop_labels: bool) -> Any:
    """What a line echoes of `request`: re-serialised (or as sent), without its labels if `drop_labels`."""
    if not isinstance(request, dict):
        return request
    out = {k: v for k, v in request.items() if not (drop_labels and k == "labels")}
    return reserialised(out) if reserialise else out


def reserialised(request: dict[str, Any]) -> dict[str, Any]:
    """The request as the service writes it back: parts filled with nulls, keys sorted at every level."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(request))  # the parts are filled in place
    parts = _parts(copy)
    members = {key for part in parts for key in part}
    members.update(names[0] for names in _SAMPLE_MEMBERS if not members.intersection(names))
    for part in parts:
        part.update({key: None for key in members if key not in part})
    return {k: _sorted(copy[k]) for k in sorted(copy)}


def _parts(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every part object of the request's contents and system instruction (the same objects, to fill in)."""
    found: list[dict[str, Any]] = []
    for name in _PART_LISTS:
        value = request.get(name)
        for content in value if isinstance(value, list) else [value]:
            if isinstance(content, dict) and isinstance(content.get("parts"), list):
                found.extend(p for p in content["parts"] if isinstance(p, dict))
    return found


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
