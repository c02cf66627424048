"""The command line: thin commands, documented exit codes, no traceback for expected errors.

Exit codes: 0 finished (failures within ``max_failed``); 1 too many failed records, the run failed, or
``budget:`` reached mid-run; 2 bad spec, bad data, bad usage or a plan over ``budget:`` (nothing submitted);
3 ``plan --exit-code``: ``run`` would submit jobs; 75 not finished yet (``--no-wait``, or locked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from batchflow.errors import EXIT_FAILED, EXIT_USAGE, EXIT_WOULD_SUBMIT, BatchflowError, InputError

if TYPE_CHECKING:
    from batchflow.spec.spec import Spec

F = TypeVar("F", bound=Callable[..., Any])
# run --deadline: an hourly cron's run ends (exit 75, the state saved) before the next one starts
DEFAULT_DEADLINE = "50m"

_specs_arg = click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="one JSON object a spec on stdout (shapes: README.md, Commands and exit codes)")


def _expected_errors(fn: F) -> F:
    """One line and the documented exit code for what batchflow expects; a traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from batchflow import logs

        logs.configure(_setting("log_format") or "auto", bool(_setting("verbose")))
        debug = bool(_setting("debug"))
        try:
            return fn(*args, **kwargs)
        except BatchflowError as exc:
            if debug:
                raise
            _echo_error(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # runner.Interrupted says what goes on at the service, and what to do
            click.echo(f"interrupted: {exc or 'the state is saved; run again to resume'}", err=True)
            sys.exit(130)
        except Exception as exc:
            if debug:
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                       err=True)
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given (before the command or after it; the later wins), kept for ``_setting``."""
    if value is not None and value is not False:
        ctx.find_root().meta[f"batchflow.{param.name}"] = value


def _setting(name: str) -> Any:
    return click.get_current_context().find_root().meta.get(f"batchflow.{name}")


_GLOBAL_OPTIONS = (
    click.option("--log-format", type=click.Choice(["auto", "console", "json"]), expose_value=False,
                 callback=_remember, help="logs: JSON lines when stderr is not a terminal (auto)"),
    click.option("-v", "--verbose", is_flag=True, default=None, expose_value=False, callback=_remember,
                 help="debug logging"),
    click.option("--debug", is_flag=True, default=None, expose_value=False, callback=_remember,
                 help="re-raise errors with a traceback"),
    click.option("--state-dir", metavar="DIR|gs://…", expose_value=False, callback=_remember,  # str: keeps gs://
                 help="keep the specs' state here instead of their state.dir (also $BATCHFLOW_STATE_DIR)"),
)


def _global_options(fn: F) -> F:
    """The options every command takes, before its name as well as after it (``run --log-format json x.yaml``)."""
    for option in reversed(_GLOBAL_OPTIONS):
        fn = option(fn)
    return fn


def _load(path: Path) -> Spec:
    """The spec at ``path``, its state where ``--state-dir`` says (if given)."""
    from batchflow.spec.spec import load_spec

    return load_spec(path, state_dir=_setting("state_dir"))


def _echo_error(exc: BatchflowError, spec: Path | None = None) -> None:
    """Every problem on its own line, each saying what it is (``error``, or ``not finished`` / ``locked`` for a
    run that is to be tried again later, which is no error). Among several specs a line names its ``spec``, once:
    a line that names a place in it already (``inline[1]: record 1: t.yaml:24:7: ...``) is not prefixed again; one
    that names it only in its closing advice (``...; check t.yaml:4:3 (base_url)``) still is, so the spec leads."""
    for line in str(exc).splitlines():
        named = spec is None or f"{spec}:" in line.split("; check ", 1)[0]
        click.echo(f"{exc.label}: {'' if named else f'{spec}: '}{line}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@_global_options
@click.version_option(package_name="batchflow")
def main() -> None:
    """Run Gemini / Vertex AI batch prediction jobs from a declarative spec."""


@main.command()
@_global_options
@_specs_arg
@click.option("--no-wait", is_flag=True, help="advance as far as possible without waiting; exit 75 if unfinished")
@click.option("--restart", is_flag=True,
              help="start over: put the old state and its kept answers aside, and send every record again")
@click.option("--retry-errors", is_flag=True,
              help="send again the records whose kept failure would come back the same (a 400, a safety block)")
@click.option("--deadline", default=DEFAULT_DEADLINE, show_default=True, metavar="DURATION",
              help="stop with exit 75 once the run has taken this long (30s, 15m, 2h; 0: no deadline); "
                   "the next run picks up")
@_json_option
@_expected_errors
def run(specs: tuple[Path, ...], no_wait: bool, restart: bool, retry_errors: bool, deadline: str,
        as_json: bool) -> None:
    """Plan, submit, poll, retry and merge; resumes from the state, reuses the answers kept.

    SPECS: spec files, globs, or directories (their *.yaml specs); several end with a table and the worst exit
    code (2 over 1 over 75 over 0)."""
    from batchflow.commands import live_view as live
    from batchflow.commands.multi_spec import Row
    from batchflow.execute.runner import Runner, interrupted

    console_logs = _setting("log_format") != "json"
    bound = _deadline(deadline)

    def one(path: Path) -> Row:
        spec = _load(path)
        try:
            with live.shown(spec, console_logs) as view:
                runner = Runner(spec, watch=view.cycle if view else None, deadline=bound)
                summary = runner.run(wait=not no_wait, restart=restart, retry_errors=retry_errors)
        except KeyboardInterrupt:
            elsewhere = _setting("state_dir")
            raise interrupted(spec, f"{path} --state-dir {elsewhere}" if elsewhere else str(path)) from None
        except BatchflowError as exc:
            if as_json:  # the summary object still comes, saying how the run ended
                click.echo(json.dumps({"spec": str(path), "error": str(exc), "exit_code": exc.exit_code}))
            raise
        skipped = f" ({summary.rejected:,} bad record{'s' * (summary.rejected != 1)} skipped)" \
            if summary.rejected else ""
        if as_json:
            click.echo(json.dumps({"spec": str(path), **dataclasses.asdict(summary)}))
        else:
            if summary.archived:
                click.echo(f"{path}: the old state and its kept answers are in {summary.archived}")
            money = "" if summary.cost_usd is None else f"; cost ${summary.cost_usd:,.4f}"
            click.echo(f"{summary.records:,} records: {summary.ok:,} ok, {summary.failed:,} failed{skipped} -> "
                       f"{summary.output}{money}")
        return Row(path, 0, "ok", summary.records, summary.ok, summary.failed, summary.jobs)

    with _interrupts():
        _many(specs, one, as_json)


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGTERM ends a run as Ctrl-C does (the state saved, the line saying what goes on at the service); a second
    Ctrl-C or SIGTERM, while that is said, ends the process at once. The old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def at_once(signum: int, frame: Any) -> None:
        os._exit(130)

    def first(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, at_once)
        signal.signal(signal.SIGTERM, at_once)
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, first) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def entry() -> None:
    """The ``batchflow`` command. An interrupted run ends the process as soon as its line is printed: threads
    still waiting on a peer (an upload, a download) are not joined, as a killed run's are not; every file they
    write is written whole and renamed, so the state stays consistent."""
    try:
        main(prog_name="batchflow")
    except SystemExit as exc:
        if exc.code == 130:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise


def _deadline(text: str) -> float | None:
    """``--deadline`` in seconds; None for 0 (no deadline). A bad one is a usage error naming the option."""
    from batchflow.api import deadline_seconds

    return deadline_seconds(text, "--deadline")


def _many(specs: tuple[Path, ...], one: Any, as_json: bool = False) -> None:
    """One spec: as it always was (its errors end the command). Several: each on its own, then the table (on
    stderr with ``--json``, so that stdout holds only the JSON objects)."""
    from batchflow.commands import multi_spec as many

    paths = many.expand(specs)
    if len(paths) == 1:
        one(paths[0])
        return
    if not paths:
        raise InputError(f"no spec found in {' '.join(map(str, specs))}")
    def headed(path: Path) -> Any:
        click.echo(f"== {path}", err=as_json)
        return one(path)

    rows = many.each(paths, headed, lambda path, exc: _echo_error(exc, path), _load)
    click.echo(many.table(rows), err=as_json)
    sys.exit(many.worst(rows))


@main.command()
@_global_options
@_specs_arg
@click.option("--records", default=3, show_default=True, help="render this many records of each source")
@click.option("--allow-unset-env", is_flag=True,
              help="an unset ${VAR} is a note, not an error (for variables that exist only where specs run)")
@click.option("--only-specs", is_flag=True,
              help="skip YAML files with no top-level `version:` (for pre-commit, which passes every YAML file)")
@_expected_errors
def validate(specs: tuple[Path, ...], records: int, allow_unset_env: bool, only_specs: bool) -> None:
    """Check specs (schema, templates, the first records rendered) without calling anything."""
    from batchflow.commands.multi_spec import expand, is_spec
    from batchflow.commands.plan_report import validate_one

    paths = expand(specs)
    if not paths:
        raise InputError(f"no spec found in {' '.join(map(str, specs))}")
    failures = 0
    for path in paths:
        if only_specs and not is_spec(path):
            continue
        try:
            click.echo(validate_one(path, records, allow_unset_env))
        except BatchflowError as exc:
            failures += 1
            _echo_error(exc, path if len(paths) > 1 else None)
    if failures:
        sys.exit(EXIT_USAGE)


@main.command()
@_global_options
@_specs_arg
@click.option("--exit-code", is_flag=True,
              help=f"exit {EXIT_WOULD_SUBMIT} when `run` would submit jobs, 0 when it would not (for CI)")
@click.option("--retry-errors", is_flag=True, help="plan as `run --retry-errors` would")
@_json_option
@_expected_errors
def plan(specs: tuple[Path, ...], exit_code: bool, retry_errors: bool, as_json: bool) -> None:
    """Show what `run` would do now: new / changed / unchanged / removed records, jobs, a sample, tokens."""
    from batchflow.commands.multi_spec import Row
    from batchflow.commands.plan_report import plan_report
    submits = []

    def one(path: Path) -> Row:
        report = plan_report(_load(path), retry_errors)
        click.echo(json.dumps(report.data) if as_json else report.text)
        submits.append(report.submits)
        return Row(path, 0, "would submit jobs" if report.submits else "nothing to submit")

    try:
        _many(specs, one, as_json)
    except SystemExit as done:
        if done.code or not (exit_code and any(submits)):
            raise
    if exit_code and any(submits):
        sys.exit(EXIT_WOULD_SUBMIT)


@main.command()
@_global_options
@_specs_arg
@click.option("--offline", is_flag=True, help="read only the state; ask the service nothing")
@_json_option
@_expected_errors
def status(specs: tuple[Path, ...], offline: bool, as_json: bool) -> None:
    """Show jobs as the service reports them, beside the state: counts, errors by cause, cost; never writes."""
    from batchflow.commands.multi_spec import Row
    from batchflow.commands.status import status_report

    def one(path: Path) -> Row:
        report = status_report(_load(path), offline)
        click.echo(json.dumps(report.data) if as_json else report.text)
        return Row(path, 0, "shown")

    _many(specs, one, as_json)


@main.command()
@_global_options
@_specs_arg
@_expected_errors
def cancel(specs: tuple[Path, ...]) -> None:
    """Cancel the specs' running jobs; a later `run` collects what they answered and sends the rest."""
    from batchflow.commands.cancel import cancel as cancel_jobs
    from batchflow.commands.multi_spec import Row
    def one(path: Path) -> Row:
        count = cancel_jobs(_load(path))
        click.echo(f"cancelled {count} job(s)")
        return Row(path, 0, "cancelled", jobs=count)

    _many(specs, one)


@main.command()
@_global_options
@_specs_arg
@click.option("--dry-run", is_flag=True, help="list what would be deleted; delete nothing")
@_json_option
@_expected_errors
def cleanup(specs: tuple[Path, ...], dry_run: bool, as_json: bool) -> None:
    """Delete the files the specs' runs left (media, request lines, Vertex predictions once collected) that no job
    of theirs may still read."""
    from batchflow.commands.cleanup import cleanup as clean
    from batchflow.commands.multi_spec import Row

    def one(path: Path) -> Row:
        report = clean(_load(path), dry_run)
        click.echo(json.dumps(report.data) if as_json else report.text)
        return Row(path, 0, "would delete" if dry_run else "cleaned", jobs=len(report.deleted))

    _many(specs, one, as_json)


@main.command()
@_global_options
def schema() -> None:
    """Print the spec's JSON Schema."""
    from importlib.resources import files

    click.echo(files("batchflow.spec").joinpath("spec.schema.json").read_text(encoding="utf-8"))


@main.command()
@_global_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int, help="0 picks a free port")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".batchflow-emulator"),
              show_default=True, help="where jobs and files are kept (survives a restart)")
@click.option("--job-seconds", type=float, default=5.0, show_default=True,
              help="how long a job takes from creation to a final state")
@click.option("--faults", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a seeded fault plan (YAML or JSON; see batchflow/emulator/faults/plan.py)")
@_expected_errors
def emulator(host: str, port: int, data_dir: Path, job_seconds: float, faults: Path | None) -> None:
    """Serve a local stand-in of the Gemini and Vertex batch APIs; prints its base URL first."""
    from batchflow.emulator import serve

    serve(host=host, port=port, data_dir=data_dir, job_seconds=job_seconds, faults=faults)
