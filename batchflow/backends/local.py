"""The embedded default: the gemini backend talking to an emulator started inside this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchflow.backends.gemini import GeminiBackend, make_client
from batchflow.libs.deadlines import Deadlines, deadlines
from batchflow.spec.spec import Spec


class LocalBackend(GeminiBackend):
    """No credentials, no network: the same code path as ``gemini``, against ``batchflow emulator``."""

    poll_interval_cap: float | None = 0.05

    def __init__(self, client: Any, emulator: Any, limits: Deadlines | None = None) -> None:
        super().__init__(client, limits)
        self._emulator = emulator

    @classmethod
    def start(cls, spec: Spec, data_dir: Path) -> LocalBackend:
        from batchflow.emulator import start_in_thread

        limits = deadlines(spec.retry.call_attempts)
        if spec.backend.base_url:  # a running emulator was named: use it, start none
            return cls(make_client("local", spec.backend.base_url, limits), None, limits).with_media(spec)
        emulator = start_in_thread(data_dir, job_seconds=0.0)
        return cls(make_client("local", emulator.base_url, limits), emulator, limits).with_media(spec)

    def close(self) -> None:
        super().close()
        if self._emulator is not None:
            self._emulator.stop()
