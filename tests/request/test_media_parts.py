"""Media parts in the spec: a prompt (or system) list of text and media parts becomes file_data parts whose URIs
carry the content's identity, so the request line (and the digest keyed on it) follows the bytes, not the path."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.media_files import pdf, png

from batchflow.answers import request_digest, request_salt
from batchflow.errors import DataError
from batchflow.request.render import Renderer
from batchflow.spec.spec import InvalidSpec, Spec, load_spec

HEAD = """\
version: 1
name: t
model: gemini-2.5-flash
source: {type: inline, records: [{path: a.png}]}
output: {path: out.jsonl}
"""

PROMPT = """\
prompt:
  - "Describe {{ path }}."
  - {media: "{{ path }}"}
"""


def _spec(tmp_path: Path, body: str, head: str = HEAD) -> Spec:
    path = tmp_path / "spec.yaml"
    path.write_text(head + textwrap.dedent(body))
    return load_spec(path, environ={})


def _render(tmp_path: Path, body: str, record: dict[str, Any]) -> dict[str, Any]:
    return Renderer(_spec(tmp_path, body)).render(record, 1, "in.jsonl:1")[1]


def _file_data(request: dict[str, Any]) -> dict[str, Any]:
    part = request["contents"][0]["parts"][1]
    return part.get("fileData") or part["file_data"]


def test_a_prompt_list_gives_a_text_part_and_a_media_part(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(1))
    request = _render(tmp_path, PROMPT, {"path": "a.png"})
    parts = request["contents"][0]["parts"]
    assert parts[0] == {"text": "Describe a.png."}
    data = _file_data(request)
    sha = hashlib.sha256(png(1)).hexdigest()
    assert data == {"fileUri": f"{(tmp_path / 'a.png').as_uri()}#sha256:{sha}", "mimeType": "image/png"} or \
        data == {"file_uri": f"{(tmp_path / 'a.png').as_uri()}#sha256:{sha}", "mime_type": "image/png"}


def test_a_declared_mime_type_is_taken(tmp_path: Path) -> None:
    (tmp_path / "doc.bin").write_bytes(pdf(1))
    body = 'prompt:\n  - {media: "{{ path }}", mime_type: "{{ kind }}"}\n  - "Summarise."\n'
    request = _render(tmp_path, body, {"path": "doc.bin", "kind": "application/pdf"})
    part = request["contents"][0]["parts"][0]
    assert (part.get("fileData") or part["file_data"]).get("mimeType", "application/pdf") == "application/pdf"


def test_a_system_list_may_hold_media(tmp_path: Path) -> None:
    (tmp_path / "style.pdf").write_bytes(pdf(1))
    body = PROMPT + 'system:\n  - "Follow the style guide."\n  - {media: style.pdf}\n'
    (tmp_path / "a.png").write_bytes(png(1))
    request = _render(tmp_path, body, {"path": "a.png"})
    system = request.get("systemInstruction") or request["system_instruction"]
    assert system["parts"][0] == {"text": "Follow the style guide."}
    assert "#sha256:" in str(system["parts"][1])


def test_the_digest_follows_the_content_not_the_path(tmp_path: Path) -> None:
    spec = _spec(tmp_path, PROMPT)
    renderer, salt = Renderer(spec), request_salt(spec)
    (tmp_path / "a.png").write_bytes(png(1))

    def digest() -> bytes:
        import orjson
        key, request = renderer.render({"path": "a.png"}, 1, "in.jsonl:1")
        return request_digest(salt, orjson.dumps({"key": key, "request": request}))

    first = digest()
    assert digest() == first  # the same bytes again: the same request
    (tmp_path / "a.png").write_bytes(png(2))
    assert digest() != first  # a file changed under the same path: a new request


def test_a_ready_made_request_has_its_local_file_resolved(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(1))
    body = """\
    request:
      contents:
        - role: user
          parts:
            - {text: "What is this?"}
            - {file_data: {file_uri: "{{ path }}", mime_type: image/png}}
            - {file_data: {file_uri: "https://example.com/b.png", mime_type: image/png}}
    """
    request = _render(tmp_path, body, {"path": "a.png"})
    parts = request["contents"][0]["parts"]
    assert "#sha256:" in str(parts[1])
    assert "https://example.com/b.png" in str(parts[2]) and "#" not in str(parts[2])


@pytest.mark.parametrize(("record", "says"), [
    ({"path": "missing.png"}, "prompt.1.media: media .*: no such file"),
    ({"path": "page.html"}, "prompt.1.media: media 'page.html': type text/html is not one the model takes"),
])
def test_a_bad_media_part_is_a_located_data_error(tmp_path: Path, record: dict[str, Any], says: str) -> None:
    (tmp_path / "page.html").write_text("<html></html>")
    with pytest.raises(DataError, match=says) as info:
        _render(tmp_path, PROMPT, record)
    assert str(info.value).startswith("in.jsonl:1: record 1: ")
    assert "spec.yaml:" in str(info.value)


def test_a_media_part_without_media_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="prompt"):
        _spec(tmp_path, 'prompt:\n  - {mime_type: image/png}\n')


VERTEX = HEAD + "backend: {type: vertex, project: p, location: us-central1, staging: gs://b/s}\n"


@pytest.mark.parametrize(("mib", "head", "refused"), [(31, VERTEX, True), (29, VERTEX, False), (31, HEAD, False)])
def test_an_image_over_vertexs_own_cap_is_a_located_data_error_there_alone(
        tmp_path: Path, mib: int, head: str, refused: bool) -> None:
    """Vertex takes an image of at most 30 MB from Cloud Storage; the Gemini API's Files API takes 2 GB."""
    with open(tmp_path / "a.png", "wb") as fh:
        fh.write(png(1))
        fh.truncate(mib * 2**20)
    renderer = Renderer(_spec(tmp_path, PROMPT, head))
    if not refused:
        renderer.render({"path": "a.png"}, 1, "in.jsonl:1")
        return
    with pytest.raises(DataError, match=r"over the vertex backend's limit of 31,457,280 bytes an image") as info:
        renderer.render({"path": "a.png"}, 1, "in.jsonl:1")
    assert str(info.value).startswith("in.jsonl:1: record 1: ") and "a.png" in str(info.value)
