"""The emulator embeds media as gemini-embedding-2 does: the vector follows the bytes each part names (two images
differ, the same image twice is the same vector), on both surfaces; text-only models and media over the caps a
request are refused with the service's 400."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from support.media_files import jpeg, pdf, png

from batchflow.emulator.gemini.execute import ANSWERERS
from batchflow.emulator.vertex.execute import gemini_embedding
from batchflow.emulator.wire.errors import ApiError


def _inline(mime: str, data: bytes) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}


def _embed(model: str, *parts: dict[str, Any], text: str | None = "a photo") -> list[float]:
    content = {"parts": ([{"text": text}] if text is not None else []) + list(parts)}
    values: list[float] = ANSWERERS["embed"]({"content": content, "outputDimensionality": 128},
                                             f"models/{model}", None)["embedding"]["values"]
    return values


def test_vectors_follow_the_image_bytes_beside_the_same_text() -> None:
    one, two = _embed("gemini-embedding-2", _inline("image/png", png(1))), \
        _embed("gemini-embedding-2", _inline("image/png", png(2)))
    assert one != two
    assert _embed("gemini-embedding-2", _inline("image/png", png(1))) == one
    assert _embed("gemini-embedding-2") != one, "the image counts, not the text alone"
    alone = _embed("gemini-embedding-2", _inline("image/jpeg", jpeg(3)), text=None)
    assert len(alone) == 128 and alone != _embed("gemini-embedding-2", _inline("image/jpeg", jpeg(4)), text=None)


def test_the_vertex_line_reads_the_same_way() -> None:
    def line(data: bytes) -> list[float]:
        request = {"content": {"parts": [{"text": "x"}, _inline("image/png", data)]},
                   "embed_content_config": {"output_dimensionality": 128}}
        response = gemini_embedding({"key": "k", "request": request}, "gemini-embedding-2")
        assert response["usageMetadata"]["promptTokenCount"] > 258  # the image's tokens counted
        values: list[float] = response["embedding"]["values"]
        return values

    assert line(png(1)) == line(png(1)) != line(png(2))


@pytest.mark.parametrize("model", ["gemini-embedding-001"])
def test_a_text_only_model_refuses_media_with_a_400(model: str) -> None:
    with pytest.raises(ApiError) as info:
        _embed(model, _inline("image/png", png(1)))
    assert info.value.code == 400 and "Multimodal input is not supported by gemini-embedding-001" in str(info.value)


@pytest.mark.parametrize(("parts", "says"), [
    ([_inline("image/png", png(n)) for n in range(7)], "7 images in one request"),
    ([_inline("application/pdf", pdf(1, pages=7))], "7 pages, over the limit of 6"),
    ([_inline("image/webp", b"RIFF\x10\x00\x00\x00WEBPVP8 ")], "Unsupported MIME type: image/webp"),
])
def test_media_over_the_caps_or_of_a_type_it_does_not_take_is_a_400(parts: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(ApiError, match=says) as info:
        _embed("gemini-embedding-2", *parts)
    assert info.value.code == 400
