"""The execution paths by name, looked up in ``PATHS``: the one registry, apart from the contract (``path.py``)."""

from __future__ import annotations

from collections.abc import Callable

from batchflow.execute.path import ExecutionPath
from batchflow.spec.spec import Spec
from batchflow.state.state import StateStore

PathFactory = Callable[[Spec, StateStore], ExecutionPath]


def _shards(spec: Spec, store: StateStore) -> ExecutionPath:
    from batchflow.execute.shards_path import ShardsPath

    return ShardsPath(spec, store.dir)


def _native(spec: Spec, store: StateStore) -> ExecutionPath:
    from batchflow.execute.native_path import NativePath

    return NativePath(spec)


PATHS: dict[str, PathFactory] = {"shards": _shards, "bigquery-native": _native}


def path_name(spec: Spec) -> str:
    """The name of the path that runs ``spec``."""
    return "bigquery-native" if spec.source.native else "shards"


def open_path(spec: Spec, store: StateStore) -> ExecutionPath:
    """The path that runs ``spec``."""
    return PATHS[path_name(spec)](spec, store)
