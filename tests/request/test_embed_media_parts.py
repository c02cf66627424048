"""Embed requests with media parts (gemini-embedding-2): `content:` as a list of parts renders into one content of
text and file parts, the task prefix on its first text; a text-only model refuses media at load; the model's caps a
request are error rows for the record; the digest follows the bytes."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.helpers import cli
from support.media_files import pdf, png, wav

from batchflow.answers import request_digest, request_salt
from batchflow.errors import DataError
from batchflow.request.render import Renderer
from batchflow.spec.spec import InvalidSpec, Spec, load_spec

HEAD = """\
version: 1
name: t
task: embed
source: {type: inline, records: [{path: a.png}]}
output: {path: out.jsonl}
"""
CONTENT = """\
content:
  - "A photo of {{ path }}"
  - {media: "{{ path }}"}
"""


def _spec(tmp_path: Path, body: str = CONTENT, model: str = "gemini-embedding-2") -> Spec:
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + f"model: {model}\n" + textwrap.dedent(body))
    return load_spec(path, environ={})


def _render(tmp_path: Path, body: str, record: dict[str, Any]) -> dict[str, Any]:
    return Renderer(_spec(tmp_path, body)).render(record, 1, "in.jsonl:1")[1]


def _uri(part: dict[str, Any]) -> str:
    data = part["fileData"]
    return str(data.get("fileUri", data.get("file_uri")))


def test_a_content_list_is_one_content_of_text_and_file_parts_the_task_on_its_text(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(1))
    request = _render(tmp_path, CONTENT + "embed_config: {task_type: RETRIEVAL_QUERY, output_dimensionality: 256}\n",
                      {"path": "a.png"})
    assert set(request) == {"content", "outputDimensionality"}
    text, image = request["content"]["parts"]
    assert text == {"text": "task: search result | query: A photo of a.png"}
    assert _uri(image).startswith((tmp_path / "a.png").as_uri() + "#sha256:")


def test_media_alone_gets_the_task_prefix_as_a_text_part_before_it(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(1))
    request = _render(tmp_path, 'content:\n  - {media: "{{ path }}"}\nembed_config: {task_type: CLUSTERING}\n',
                      {"path": "a.png"})
    prefix, image = request["content"]["parts"]
    assert prefix == {"text": "task: clustering | query:"} and "#sha256:" in _uri(image)


@pytest.mark.parametrize("model", ["gemini-embedding-001", "text-embedding-005"])
def test_a_text_only_model_refuses_media_at_load_at_the_part(tmp_path: Path, model: str) -> None:
    with pytest.raises(InvalidSpec, match=rf"spec.yaml:\d+:\d+: content.1: {model} embeds text only"):
        _spec(tmp_path, model=model)


def test_validate_exits_2_for_media_to_a_text_only_model(tmp_path: Path) -> None:
    _spec(tmp_path)  # valid for gemini-embedding-2
    (tmp_path / "spec.yaml").write_text((tmp_path / "spec.yaml").read_text().replace(
        "gemini-embedding-2", "gemini-embedding-001"))
    result = cli("validate", str(tmp_path / "spec.yaml"))
    assert result.exit_code == 2 and "content.1: gemini-embedding-001 embeds text only" in result.stderr


@pytest.mark.parametrize(("files", "says"), [
    ({f"i{n}.png": png(n) for n in range(7)}, "7 images in one request, over gemini-embedding-2's limit of 6"),
    ({"a.pdf": pdf(1, pages=7)}, "7 pages, over the limit of 6 pages a PDF"),
    ({"a.wav": wav(1, seconds=81, rate=800)}, "81.0 s long, over the limit of 80 s an audio file"),
    ({"a.pdf": pdf(1), "b.pdf": pdf(2)}, "2 PDFs in one request, over gemini-embedding-2's limit of 1"),
])
def test_media_over_the_models_caps_a_request_are_a_located_data_error(
        tmp_path: Path, files: dict[str, bytes], says: str) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    body = "content:\n  - caption\n" + "".join(f"  - {{media: {name}}}\n" for name in files)
    with pytest.raises(DataError, match=says) as info:
        _render(tmp_path, body, {"path": "x"})
    assert str(info.value).startswith("in.jsonl:1: record 1: ") and "spec.yaml:" in str(info.value)


def test_six_images_are_taken(tmp_path: Path) -> None:
    for n in range(6):
        (tmp_path / f"i{n}.png").write_bytes(png(n))
    body = "content:\n" + "".join(f"  - {{media: i{n}.png}}\n" for n in range(6))
    assert len(_render(tmp_path, body, {"path": "x"})["content"]["parts"]) == 6


def test_a_type_the_model_does_not_take_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "a.webp").write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 ")
    with pytest.raises(DataError, match="type image/webp is not one the model takes"):
        _render(tmp_path, 'content:\n  - {media: "{{ path }}"}\n', {"path": "a.webp"})


def test_the_digest_of_an_embed_request_follows_the_image_not_its_path(tmp_path: Path) -> None:
    spec = _spec(tmp_path, 'content:\n  - "same text"\n  - {media: "{{ path }}"}\n')
    renderer, salt = Renderer(spec), request_salt(spec)

    def digest(path: str) -> bytes:
        key, request = renderer.render({"path": path}, 1, "in.jsonl:1")
        return request_digest(salt, orjson.dumps({"key": key, "request": request}))

    (tmp_path / "a.png").write_bytes(png(1))
    first = digest("a.png")
    assert digest("a.png") == first
    (tmp_path / "a.png").write_bytes(png(2))
    assert digest("a.png") != first, "an image changed under the same path: a new request"
