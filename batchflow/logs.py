"""structlog, configured once by the CLI: readable on a terminal, JSON lines (with ``severity``) otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog


def _severity(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["severity"] = method.upper()  # what Cloud Logging reads from a JSON line
    return event


def configure(fmt: str = "auto", verbose: bool = False) -> None:
    """Set up logging to stderr; ``fmt`` is auto | console | json."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors.append(_severity)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    """A logger on stderr as it is when the line is logged: the live view (live.py) moves what is written there
    above itself while it is shown."""
    return structlog.PrintLogger(sys.stderr)


ProgressSink = Callable[[str, dict[str, Any]], None]
_sink: ProgressSink | None = None  # the live view, while one is shown (one run a process shows one)
_SHOWN_EVERY = 0.25  # seconds between two redraws of local progress


@contextmanager
def progress_to(sink: ProgressSink) -> Iterator[None]:
    """While the block runs, ``Progress`` also tells ``sink`` how far local work has come, often."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous


class Progress:
    """Says how far long local work has come, at most every ``every`` seconds (cheap to call often)."""

    def __init__(self, event: str, every: float = 5.0) -> None:
        self.event = event
        self.every = every
        self._next = time.monotonic() + every
        self._shown = time.monotonic()  # a live view shows local work at once; the logs wait for `every`
        self._log = structlog.get_logger("batchflow.progress")

    def tick(self, **fields: Any) -> None:
        now = time.monotonic()
        if _sink is not None and now >= self._shown:
            self._shown = now + _SHOWN_EVERY
            _sink(self.event, fields)
        if now >= self._next:
            self._next = now + self.every
            self._log.info(self.event, **fields)
