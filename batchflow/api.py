"""The documented Python API: a spec run from code, and records in -> rows out for a notebook.

Everything here is what the command line does, without the command line: ``run`` is ``batchflow run``, and
``map`` writes a spec of its own around the records (a JSON Lines source and output in a working directory), so a
notebook gets the same answers, retries and kept state as a cron job. Heavy modules are imported on first call:
``import batchflow`` stays cheap for the CLI, which imports this package first.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchflow.execute.runner import Summary
    from batchflow.spec.spec import Spec

# where map's own spec keeps its input, output and state, inside its working directory
_RECORDS, _OUTPUT, _STATE = "records.jsonl", "rows.jsonl", "state"
_PLACE_FIELDS = ("type", "path", "format", "table", "write", "location")  # output fields map decides itself


def load_spec(path: str | Path, *, state_dir: str | Path | None = None) -> Spec:
    """Read and check a spec file, ``${VAR}`` expanded from the environment; raises ``InvalidSpec`` (one line per
    problem, each located). ``state_dir`` replaces the spec's ``state.dir``, as ``--state-dir`` does."""
    from batchflow.spec.spec import load_spec as load

    return load(path, state_dir=state_dir)


def run(spec: Spec | str | Path, *, wait: bool = True, restart: bool = False, retry_errors: bool = False,
        deadline: float | str | None = None) -> Summary:
    """``batchflow run`` for one spec (a path, or a ``Spec`` from ``load_spec``): resumes from its state and
    returns the counts and the output's place. ``wait=False`` raises ``NotFinished`` while jobs run (the CLI's
    exit 75); too many failed records raise ``RunFailed``. ``deadline`` is ``run --deadline``: seconds or a
    duration (``"15m"``) after which the run stops as it stands, raising ``DeadlineReached`` (exit 75); None or 0,
    the default here, for none (the CLI's default, 50m, suits an hourly cron, not a notebook's wait)."""
    from batchflow.execute.runner import Runner

    bound = deadline_seconds(deadline, "deadline")
    loaded = load_spec(spec) if isinstance(spec, str | Path) else spec
    return Runner(loaded, deadline=bound).run(wait=wait, restart=restart, retry_errors=retry_errors)


def deadline_seconds(value: float | str | None, name: str) -> float | None:
    """A run's deadline in seconds (a number, or a duration such as ``15m``); None for none or 0. A bad one is a
    usage error (``InputError``, exit 2) naming ``name``."""
    from batchflow.errors import InputError
    from batchflow.spec.units import parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} {value!r}: {exc} (e.g. 15m)") from None
    if seconds < 0:
        raise InputError(f"{name} {value!r}: a duration is 0 or more")
    return seconds or None


def map(records: Iterable[Mapping[str, Any]], *, prompt: str | None = None, model: str | None = None,
        backend: str | Mapping[str, Any] | None = None, spec: str | Path | Mapping[str, Any] | None = None,
        workdir: str | Path | None = None, **fields: Any) -> list[dict[str, Any]]:
    """One output row per record, in order (docs/spec.md, "An output row"): each record through a prompt and a model.

    Give the request as a spec's top-level fields (``prompt``, ``model``, ``backend`` — ``"local"`` by default, a
    type or a mapping — and any other, e.g. ``key="{{ id }}"``, ``system=...``, ``generation_config={...}``), or
    as ``spec``: a spec file or mapping whose source and output are replaced by the records and the rows (the
    keyword fields then override it). A failed record is a row with ``status: "error"``, not an exception, unless
    the spec's ``output.max_failed`` says otherwise. ``workdir`` keeps the state between calls, so calling again
    with the same records reuses the answers instead of paying again; without it, a temporary directory is used
    and removed."""
    document = _document(spec, prompt=prompt, model=model, backend=backend, **fields)
    if workdir is not None:
        return _map_in(Path(workdir), records, document)
    with tempfile.TemporaryDirectory(prefix="batchflow-map-") as scratch:
        return _map_in(Path(scratch), records, document)


def _document(spec: str | Path | Mapping[str, Any] | None, **fields: Any) -> dict[str, Any]:
    """The spec map runs, before its records and rows are placed: given or made, with the fields applied."""
    if isinstance(spec, str | Path):
        import yaml  # the text as written: ${VAR} is expanded when the written spec is loaded

        base = dict(yaml.safe_load(Path(spec).read_text(encoding="utf-8")))
    else:
        base = dict(spec or {"version": 1, "name": "map", "model": "gemini-2.5-flash", "backend": "local"})
    base.update({k: v for k, v in fields.items() if v is not None})
    if isinstance(base.get("backend"), str):
        base["backend"] = {"type": base["backend"]}
    return base


def _map_in(directory: Path, records: Iterable[Mapping[str, Any]], document: dict[str, Any]) -> list[dict[str, Any]]:
    """Write the records and the spec into ``directory``, run it, read the rows back."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / _RECORDS, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(record) + "\n" for record in records)
    output = {k: v for k, v in document.get("output", {}).items() if k not in _PLACE_FIELDS}
    document = {**document, "source": {"type": "files", "path": _RECORDS, "format": "jsonl", "allow_empty": True},
                "output": {"max_failed": "100%", **output, "type": "files", "path": _OUTPUT},
                "state": {**document.get("state", {}), "dir": _STATE}}
    path = directory / "spec.yaml"
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")  # JSON is YAML
    summary = run(path)
    with open(summary.output, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]
