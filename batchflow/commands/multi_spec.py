"""Several specs in one command: paths, globs and directories expanded, each spec run on its own, one table.

A directory stands for its ``*.yaml`` / ``*.yml`` files that are specs (a top-level ``version:`` key), sorted; a
path with ``*``, ``?`` or ``[`` that is not a file is a glob. Each spec keeps its own state and lock; two specs
that would share a state (the same ``name`` in the same state dir) are both refused, each naming the other.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batchflow.errors import EXIT_FAILED, EXIT_NOT_FINISHED, EXIT_OK, EXIT_USAGE, BatchflowError, SpecError

if TYPE_CHECKING:
    from batchflow.spec.spec import Spec

_SPEC = re.compile(rb"^version\s*:", re.M)
_SEVERITY = {EXIT_OK: 0, EXIT_NOT_FINISHED: 1, EXIT_FAILED: 2, EXIT_USAGE: 3}  # the worst code is the exit code


def expand(paths: Iterable[Path]) -> list[Path]:
    """The spec files the arguments name, in order, each once."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in [*path.glob("*.yaml"), *path.glob("*.yml")] if is_spec(p))
        elif not path.exists() and any(c in str(path) for c in "*?["):
            found += sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def is_spec(path: Path) -> bool:
    """A YAML file with a top-level ``version:`` key (a file that cannot be read is none)."""
    try:
        return bool(_SPEC.search(path.read_bytes()))
    except OSError:
        return False


@dataclass
class Row:
    """One spec's line of the closing table."""

    spec: Path
    code: int
    outcome: str
    records: int | None = None
    ok: int | None = None
    failed: int | None = None
    jobs: int | None = None


def each(paths: list[Path], act: Callable[[Path], Row], report: Callable[[Path, BatchflowError], None],
         load: Callable[[Path], Spec]) -> list[Row]:
    """``act`` on every spec, whatever the others did; an expected error becomes that spec's row. ``load`` reads a
    spec as ``act`` will (its state where the command line says)."""
    clashes = _shared_states(paths, load)
    rows = []
    for path in paths:
        try:
            if path in clashes:
                raise clashes[path]
            rows.append(act(path))
        except BatchflowError as exc:
            report(path, exc)
            rows.append(Row(path, exc.exit_code, exc.label if exc.exit_code == EXIT_NOT_FINISHED else
                            ("bad spec" if exc.exit_code == EXIT_USAGE else "failed")))
    return rows


def _shared_states(paths: list[Path], load: Callable[[Path], Spec]) -> dict[Path, BatchflowError]:
    """Specs that would share a state directory, each with the error that names the other."""
    owners: dict[Path, Path] = {}
    clashes: dict[Path, BatchflowError] = {}
    for path in paths:
        try:
            spec = load(path)
        except BatchflowError:
            continue  # reported when the spec's turn comes
        state = spec.state_dir / spec.name
        other = owners.setdefault(state, path)
        if other != path:
            message = f"{{}}: name {spec.name!r}: {other} and {path} would share the state {state}; rename one"
            clashes[path] = SpecError(message.format(path))
            clashes[other] = SpecError(message.format(other))
    return clashes


def worst(rows: list[Row]) -> int:
    """The exit code of the whole command: 2 over 1 over 75 over 0."""
    return max((row.code for row in rows), key=lambda code: _SEVERITY.get(code, 2), default=EXIT_OK)


def table(rows: list[Row]) -> str:
    """spec | records | ok | failed | jobs | outcome, one line each."""
    head = ("spec", "records", "ok", "failed", "jobs", "outcome")
    cells = [head] + [(str(r.spec), *("" if v is None else f"{v:,}" for v in (r.records, r.ok, r.failed, r.jobs)),
                       r.outcome) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(
        zip(line, widths, strict=True))).rstrip() for line in cells)
