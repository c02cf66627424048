"""The backends by name: the registry of ``backends/``, apart from the contract (``base.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from batchflow.backends.base import Backend
from batchflow.errors import SpecError
from batchflow.spec.spec import Spec

BackendFactory = Callable[[Spec, Path], Backend]


def _gemini(spec: Spec, state_dir: Path) -> Backend:
    from batchflow.backends.gemini import GeminiBackend

    return GeminiBackend.from_spec(spec)


def _local(spec: Spec, state_dir: Path) -> Backend:
    from batchflow.backends.local import LocalBackend

    return LocalBackend.start(spec, state_dir / "emulator")


def _vertex(spec: Spec, state_dir: Path) -> Backend:
    from batchflow.backends.vertex import VertexBackend

    return VertexBackend.from_spec(spec)


BACKENDS: dict[str, BackendFactory] = {"gemini": _gemini, "local": _local, "vertex": _vertex}


def open_backend(spec: Spec, state_dir: Path) -> Backend:
    """The backend the spec names, connected."""
    try:
        factory = BACKENDS[spec.backend.type]
    except KeyError:
        raise SpecError(f"{spec.where('backend.type')}: backend.type: '{spec.backend.type}' "
                        "is not available in this version") from None
    return factory(spec, state_dir)
