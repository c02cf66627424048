"""The command line: thin commands, documented exit codes, no traceback for expected errors."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def main() -> None:
    """Run Gemini / Vertex AI batch prediction jobs from a declarative spec."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int, help="0 picks a free port")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".batchflow-emulator"),
              show_default=True, help="where jobs and files are kept (survives a restart)")
@click.option("--job-seconds", type=float, default=5.0, show_default=True,
              help="how long a job takes from creation to a final state")
@click.option("--faults", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a seeded fault plan (YAML)")
def emulator(host: str, port: int, data_dir: Path, job_seconds: float, faults: Path | None) -> None:
    """Serve a local stand-in of the Gemini and Vertex batch APIs; prints its base URL first."""
    from batchflow.emulator import serve

    serve(host=host, port=port, data_dir=data_dir, job_seconds=job_seconds, faults=faults)
