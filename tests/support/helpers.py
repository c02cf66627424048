"""Small builders for end-to-end tests: specs and data files in a temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from batchflow.cli import main


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    return path


def write_spec(directory: Path, name: str = "t", **overrides: Any) -> Path:
    """A spec file over data/in.jsonl with small, fast defaults; keyword arguments replace top-level keys."""
    spec: dict[str, Any] = {
        "version": 1, "name": name, "backend": {"type": "local"}, "model": "gemini-2.5-flash",
        "source": {"type": "files", "path": "data/in.jsonl"}, "key": "{{ id }}",
        "prompt": "Say something about {{ text }}",
        "jobs": {"poll_interval": "0.2s"},
        "retry": {"backoff": {"initial": "0.1s", "max": "1s"}},
        "output": {"type": "files", "path": "out/result.jsonl"},
    }
    spec.update(overrides)
    spec = {k: v for k, v in spec.items() if v is not None}  # None removes a default
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def cli(*args: str) -> Result:
    """Drive the CLI in-process, as click's CliRunner does; stderr kept apart."""
    return CliRunner().invoke(main, ["--log-format", "json", *args], catch_exceptions=False)


def cli_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Drive the CLI as a separate process, exactly as a user or cron would."""
    return subprocess.run([sys.executable, "-m", "batchflow", "--log-format", "json", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
