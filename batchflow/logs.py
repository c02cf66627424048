"""structlog, configured once by the CLI: readable on a terminal, JSON lines (with ``severity``) otherwise.

As a library batchflow configures nothing: its modules log through ``get_logger``, whose lines go wherever
structlog is configured to send them (by the CLI, or by the application that imports batchflow) and nowhere
while it is not (structlog's default would print them to stdout, into the caller's own output)."""

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
    """A logger on stderr as it is when the line is logged: the live view (commands/live_view.py) moves what is written
    there above itself while it is shown."""
    return structlog.PrintLogger(sys.stderr)


class Logger:
    """A module's logger that writes only once structlog is configured; until then each call is dropped."""

    def __init__(self, name: str) -> None:
        self._logger = structlog.get_logger(name)

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(self._logger, method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)


def get_logger(name: str) -> Logger:
    """The logger of module ``name``: quiet until the CLI (or the application) configures structlog."""
    return Logger(name)


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
        self._log = get_logger("batchflow.progress")

    def tick(self, **fields: Any) -> None:
        now = time.monotonic()
        if _sink is not None and now >= self._shown:
            self._shown = now + _SHOWN_EVERY
            _sink(self.event, fields)
        if now >= self._next:
            self._next = now + self.every
            self._log.info(self.event, **fields)
