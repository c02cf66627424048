"""Answers that are not answers: what a generate line looks like when the service blocks its prompt for safety or
stops at the output token limit. Both are successful lines (a response, no error): a client must look inside.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchflow.emulator.faults.plan import LineFault
from batchflow.emulator.model.deterministic import tokens

_RATINGS = (("HARM_CATEGORY_SEXUALLY_EXPLICIT", "NEGLIGIBLE"), ("HARM_CATEGORY_HATE_SPEECH", "NEGLIGIBLE"),
            ("HARM_CATEGORY_HARASSMENT", "LOW"), ("HARM_CATEGORY_DANGEROUS_CONTENT", "HIGH"))


def degrade(response: dict[str, Any], fault: LineFault | None) -> dict[str, Any]:
    """The response as `fault` leaves it: blocked, cut at MAX_TOKENS, or unchanged."""
    if fault is None:
        return response
    if fault.blocked:
        return blocked(response)
    if fault.truncated:
        return cut(response)
    return response


def blocked(response: dict[str, Any]) -> dict[str, Any]:
    """A safety-blocked prompt: `promptFeedback.blockReason` and no candidates, the prompt's tokens still counted."""
    prompt = response.get("usageMetadata", {}).get("promptTokenCount", 0)
    ratings = [{"category": c, "probability": p, **({"blocked": True} if p == "HIGH" else {})} for c, p in _RATINGS]
    out: dict[str, Any] = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": ratings},
                           "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt}}
    return out | {k: response[k] for k in ("modelVersion", "responseId") if k in response}


def cut(response: dict[str, Any]) -> dict[str, Any]:
    """The answer stopped at the output token limit: half its text, `finishReason: MAX_TOKENS`; a JSON answer is
    cut so that it no longer parses."""
    candidate = response["candidates"][0]
    text = truncated_text(candidate["content"]["parts"][0]["text"])
    prompt = response.get("usageMetadata", {}).get("promptTokenCount", 0)
    candidate = {**candidate, "content": {**candidate["content"], "parts": [{"text": text}]},
                 "finishReason": "MAX_TOKENS"}
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": tokens(text), "totalTokenCount": prompt + tokens(text)}
    return {**response, "candidates": [candidate], "usageMetadata": usage}


def truncated_text(text: str) -> str:
    """The first half of `text`, shortened further while it still parses as JSON (`12` of `1234` would)."""
    cut_text = text[: len(text) // 2]
    while cut_text and _parses(cut_text):
        cut_text = cut_text[:-1]
    return cut_text


def _parses(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
