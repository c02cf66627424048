"""Answers kept per record across runs, addressed by the record's key and the digest of the exact request sent.

A run plans a *generation*: the whole input as rendered, in parts. Each record is compared with the answers the
generation before kept (``diff``): one whose key and request digest match a kept answer is *carried* (a pointer
into the earlier answers), the others are sent. Once every job of the generation is settled, ``keep`` writes the
generation's own answers, part by part and line for line with the input, and an index of them by key, from
which the next generation plans. Both sides of the comparison are split into partitions by a hash of the key,
checked one partition at a time, so memory stays flat however large the input.
"""

from __future__ import annotations

import hashlib
from typing import Any

from batchflow.spec.spec import Spec

# What an answer is worth keeping for: "o" an answer (kept), "p" a failure that would come back the same (kept,
# sent again only when the request changes or with --retry-errors), "r" a failure that may pass (sent again).
OK, PERMANENT, RETRY = b"o", b"p", b"r"


def request_salt(spec: Spec) -> bytes:
    """What, besides the request line, decides an answer: the model, the task and the backend that ran it."""
    return f"{spec.backend.type}\x1f{spec.task}\x1f{spec.model}\x1f".encode()


def request_digest(salt: bytes, line: bytes, _sha256: Any = hashlib.sha256) -> bytes:
    """32 hex digits (16 bytes) naming one request exactly: its line (the key included) and the ``salt``."""
    hexdigest: str = _sha256(salt + line).hexdigest()
    return hexdigest[:32].encode()


def flag_of(result: dict[str, object]) -> bytes:
    """Whether a collected result is kept: answers and failures that would come back the same are."""
    response = result.get("response")
    if isinstance(response, dict):
        blocked = "candidates" in response or "promptFeedback" in response
        return PERMANENT if blocked and not response.get("candidates") else OK
    error = result.get("error")
    if isinstance(error, dict) and error.get("restage"):
        return RETRY  # its media were gone before the model read them: staged again, it may pass
    code = error.get("code") if isinstance(error, dict) else None
    return PERMANENT if isinstance(code, int) and 400 <= code < 500 and code not in (408, 429) else RETRY
