"""The deterministic model: same request, same answer; no network, no weights.

A generate request gets prose derived from a hash of the request plus an echo of the prompt's beginning, or,
when the request asks for JSON with a schema, a JSON value satisfying that schema. An embed request gets a
unit vector built by feature hashing the text's words, so texts sharing words point in similar directions.
Requests are read in proto-JSON, which accepts camelCase and snake_case field names alike.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import orjson

from batchflow.emulator.model import media as media_parts
from batchflow.emulator.model.media import MediaReader
from batchflow.emulator.model.schema_values import SchemaError, sample
from batchflow.emulator.wire.errors import ApiError, invalid_argument
from batchflow.emulator.wire.request_checks import check_embed_request, check_generate_request, field, text_of
from batchflow.spec import limits, models

_WORDS = ("the", "batch", "answer", "is", "a", "quiet", "river", "of", "tokens", "moving", "through",
          "small", "bright", "stones", "under", "steady", "light", "and", "every", "line", "keeps", "its",
          "key", "in", "order", "while", "models", "dream", "numbers", "softly", "return", "home")
_ECHO_CHARS = 48
DEFAULT_EMBED_DIMENSIONS = 768
_HASHES_PER_WORD = 4
_QUANTUM = 1e7


def tokens(text: str) -> int:
    """A token estimate in the spirit of Gemini's (about four characters per token), at least 1."""
    return max(1, (len(text) + 3) // 4)


def byte_tokens(size: int) -> int:
    """The same estimate for `size` bytes of input (a job's whole input, for the enqueued-token quota)."""
    return max(1, (size + 3) // 4)


def generate(request: Any, model: str, read: MediaReader | None = None) -> dict[str, Any]:
    """A GenerateContentResponse for one request; raises ApiError for an invalid request or a media part the
    service could not read (`read` resolves file URIs; without it they are named, not read). A prose answer
    names each media part read (`[MIME SHA12 BYTES bytes]`), and the usage counts its tokens by modality."""
    check_generate_request(request)
    media = media_parts.resolve(request, read)
    prompt = _prompt_text(request)
    seed = hashlib.blake2b(orjson.dumps(request, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
    text = _answer(request, prompt, seed, " ".join(m.label() for m in media))
    by_modality = _prompt_tokens(prompt, media)
    prompt_tokens, answer_tokens = sum(by_modality.values()), tokens(text)
    usage: dict[str, Any] = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": answer_tokens,
                             "totalTokenCount": prompt_tokens + answer_tokens}
    if media:
        usage["promptTokensDetails"] = [{"modality": k, "tokenCount": v} for k, v in by_modality.items()]
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage,
        "modelVersion": model.removeprefix("models/"),
        "responseId": seed[:8].hex(),
    }


def _prompt_tokens(prompt: str, media: list[media_parts.Media]) -> dict[str, int]:
    """The prompt's tokens by modality: its text, then each media part's by the documented rates."""
    counts = {"TEXT": tokens(prompt)} if prompt or not media else {}
    for part in media:
        kind = limits.modality(part.mime_type)
        counts[kind] = counts.get(kind, 0) + part.tokens()
    return counts


def embed(request: Any, full: int | None = None, read: MediaReader | None = None,
          model: str = "") -> dict[str, Any]:
    """An EmbedContentResponse: a deterministic unit vector of the asked dimension; with ``full`` (a Matryoshka
    model's own size, gemini-embedding-*), the full unit vector cut to the asked size, as those models give it
    (not normalised again below their full size). Media parts count as the bytes they name (``embed_media``)."""
    check_embed_request(request)
    dims = int(field(request, "outputDimensionality") or full or DEFAULT_EMBED_DIMENSIONS)
    content = field(request, "content")
    text, media = " ".join(text_of(content)), media_ids(embed_media(content, model, read))
    return {"embedding": {"values": embedding(text, full, media)[:dims] if full else embedding(text, dims, media)}}


def embed_media(content: Any, model: str, read: MediaReader | None) -> list[media_parts.Media]:
    """An embed request's media parts, read; ApiError(400) for media to a model that embeds text alone
    (gemini-embedding-001, text-embedding-*), a type the model does not take, or more than it takes a request."""
    if not media_parts.has_media(content):
        return []
    name = model.rsplit("/", 1)[-1]
    caps = models.embedding_of(name).media if name else None
    if caps is None:
        raise invalid_argument(f"Multimodal input is not supported by {name or 'this model'}: it embeds text "
                               "only.")
    found = media_parts.resolve_content(content, read, caps.mime_types)
    problem = limits.media_over_caps([(f"a {m.mime_type} part", m.mime_type, m.data) for m in found], caps, name)
    if problem is not None:
        raise invalid_argument(problem)
    return found


def media_ids(media: list[media_parts.Media]) -> tuple[str, ...]:
    """What each media part is to the embedding: the sha256 of its bytes, or its URI when it was not read."""
    return tuple(hashlib.sha256(m.data).hexdigest() if m.data is not None else str(m.uri) for m in media)


def embedding(text: str, dims: int, media: tuple[str, ...] = ()) -> list[float]:
    """Feature-hashed bag of words, and of the media's identities (``media_ids``), L2-normalised: two images
    differ as two words do; a text without words still gets a stable vector."""
    vector = [0.0] * dims
    for word in [*text.lower().split(), *media] or [text]:
        digest = hashlib.blake2b(word.encode(), digest_size=8 * _HASHES_PER_WORD).digest()
        for i in range(_HASHES_PER_WORD):
            h = int.from_bytes(digest[8 * i: 8 * i + 8], "big")
            vector[h % dims] += 1.0 if h & (1 << 63) else -1.0
    # a small text-specific component keeps different short texts from colliding onto one axis
    noise = hashlib.shake_256("\n".join((text, *media)).encode()).digest(dims)
    vector = [v + (b - 127.5) / 2048.0 for v, b in zip(vector, noise, strict=True)]
    scale = _QUANTUM / math.sqrt(math.fsum(v * v for v in vector))
    # float32-like precision, as the real API sends: halves the output size; the norm stays 1 within 1e-6.
    # int() and a division are several times faster than round(v, 7) over 768 values per request.
    return [int(v * scale) / _QUANTUM for v in vector]


def _prompt_text(request: Mapping[str, Any]) -> str:
    parts = text_of(field(request, "systemInstruction"))
    for content in field(request, "contents"):
        parts.extend(text_of(content))
    return " ".join(parts)


def _answer(request: Mapping[str, Any], prompt: str, seed: bytes, media: str) -> str:
    """The answer's text: a JSON value for a schema, else prose naming the media read (`media`)."""
    config = field(request, "generationConfig") or {}
    schema = field(config, "responseSchema")
    json_schema = field(config, "responseJsonSchema")
    mime = field(config, "responseMimeType") or "text/plain"
    if schema is not None and json_schema is not None:
        raise invalid_argument("responseSchema and responseJsonSchema cannot both be set")
    wanted = schema if schema is not None else json_schema
    if wanted is not None and mime != "application/json":
        raise invalid_argument("response_mime_type must be application/json when a response schema is set")
    if wanted is not None:
        return _json_answer(wanted, seed)
    if mime == "application/json":
        return orjson.dumps({"answer": _prose(prompt, seed, media)}).decode()
    return _prose(prompt, seed, media)


def _json_answer(schema: Any, seed: bytes) -> str:
    try:
        return orjson.dumps(sample(schema, seed)).decode()
    except (SchemaError, TypeError, ValueError) as exc:
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid response schema: {exc}") from None


def _prose(prompt: str, seed: bytes, media: str = "") -> str:
    count = 6 + seed[0] % 10
    words = " ".join(_WORDS[b % len(_WORDS)] for b in seed[1: 1 + count])
    echo = " ".join(prompt.split())[:_ECHO_CHARS]
    text = f"{words.capitalize()}. (re: {echo})" if echo else f"{words.capitalize()}."
    return f"{text} {media}" if media else text
