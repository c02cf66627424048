"""Helpers for tests that drive the emulator: wait for a job through the SDK, or call it over raw HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from google import genai
from google.genai import types

DONE = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
                  "JOB_STATE_PARTIALLY_SUCCEEDED"})


def wait_done(client: genai.Client, name: str, timeout: float = 30, poll: float = 0.02) -> types.BatchJob:
    """Get a batch job (Gemini or Vertex, as the client speaks) until its state is final; fail after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        job = client.batches.get(name=name)
        if job.state is not None and job.state.name in DONE:
            return job
        assert time.monotonic() < end, f"{name} still {job.state}"
        time.sleep(poll)


def http_json(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    """One raw JSON call: the HTTP status and the parsed body, an error answer included."""
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())
