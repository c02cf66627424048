"""Which execution path runs a spec, looked up by name in ``EXECUTIONS``.

``shards``: the default: records read by batchflow, rendered into shard files, jobs staged, results merged
(``runner.py``). ``bigquery-native``: ``source.native: true``: requests built, run and joined inside BigQuery,
no record passing through batchflow (``native.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from batchflow.spec import Spec

if TYPE_CHECKING:
    from batchflow.runner import Summary


class Runs(Protocol):
    def run(self, wait: bool = True, restart: bool = False) -> Summary:
        """Drive the spec to the end, or as far as it goes without waiting; returns a summary."""
        ...


@dataclass(frozen=True)
class Execution:
    runner: Callable[[Spec], Runs]
    cancel: Callable[[Spec], int]


def _shards() -> Execution:
    from batchflow import runner

    return Execution(runner.Runner, runner.cancel)


def _native() -> Execution:
    from batchflow import native

    return Execution(native.NativeRunner, native.cancel)


EXECUTIONS: dict[str, Callable[[], Execution]] = {"shards": _shards, "bigquery-native": _native}


def execution_name(spec: Spec) -> str:
    """The name of the path that runs ``spec``."""
    return "bigquery-native" if spec.source.native else "shards"


def execution(spec: Spec) -> Execution:
    """The path that runs ``spec``."""
    return EXECUTIONS[execution_name(spec)]()
