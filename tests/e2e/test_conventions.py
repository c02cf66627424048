"""The command line as the ecosystem expects it: options after the command, the state elsewhere, one line (never
an internal error) for the mistakes a user can make, unset variables allowed where only production has them."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
from support.helpers import cli, cli_process, read_rows, write_jsonl, write_spec

NO_GCSFS = "import sys; sys.modules['gcsfs'] = None; from batchflow.cli import main; main(prog_name='batchflow')"


def _one_line(stderr: str) -> str:
    [line] = [x for x in stderr.splitlines() if not x.startswith("{")]  # the JSON lines are logs
    return line


def test_global_options_are_accepted_after_the_command(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path)
    ran = cli_process("run", "--log-format", "json", "-v", str(spec))
    assert ran.returncode == 0, ran.stderr
    assert all(line.startswith("{") for line in ran.stderr.splitlines())
    checked = cli_process("plan", "--debug", str(tmp_path / "missing.yaml"))
    assert "Traceback" in checked.stderr and "InvalidSpec" in checked.stderr


def test_state_dir_puts_the_state_elsewhere_from_the_option_or_the_variable(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path)
    assert cli("run", "--state-dir", str(tmp_path / "by-option"), str(spec)).exit_code == 0
    assert (tmp_path / "by-option/t/state.json").exists() and not (tmp_path / ".batchflow").exists()
    env = {**os.environ, "BATCHFLOW_STATE_DIR": str(tmp_path / "by-variable")}
    assert cli_process("run", str(spec), env=env).returncode == 0
    assert (tmp_path / "by-variable/t/state.json").exists()
    status = cli("--state-dir", str(tmp_path / "by-option"), "status", str(spec))
    assert "merged: 1 rows" in status.stdout


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_read_only_spec_directory_runs_with_state_dir_and_says_so_without(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, output={"type": "files", "path": str(tmp_path / "out.jsonl")})
    (tmp_path / "out.jsonl").touch()
    tmp_path.chmod(0o555)
    try:
        refused = cli("run", str(spec))
        assert refused.exit_code == 2
        assert _one_line(refused.stderr).startswith(f"error: {tmp_path / '.batchflow/t'}: cannot write the state")
        assert "--state-dir" in refused.stderr
        assert cli("run", str(spec), "--state-dir", str(tmp_path.parent / "state")).exit_code == 0
    finally:
        tmp_path.chmod(0o755)


def test_a_state_dir_that_cannot_be_made_is_one_line_naming_it(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path)
    result = cli("run", "--state-dir", str(spec), str(spec))  # a file, not a directory
    assert result.exit_code == 2
    assert _one_line(result.stderr) == (f"error: {spec}/t: cannot write the state here: Not a directory; give another "
                                        "directory with --state-dir or $BATCHFLOW_STATE_DIR")


def test_the_emulator_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli_process("emulator", "--port", str(port), "--data-dir", str(tmp_path), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: port {port} on 127.0.0.1 is in use; pick another with --port (0 picks " \
                                    "a free one)"


def test_gs_without_gcsfs_says_which_extra_to_install(tmp_path: Path) -> None:
    import subprocess

    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, output={"type": "files", "path": "gs://bucket/out.jsonl"})
    local = write_spec(tmp_path, name="local")
    for args in (["run", str(spec)], ["run", "--state-dir", "gs://bucket/state", str(local)]):
        result = subprocess.run([sys.executable, "-c", NO_GCSFS, "--log-format", "json", *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert _one_line(result.stderr).endswith("gs:// needs the gcsfs package: pip install 'batchflow[gcs]'") \
            or "pip install 'batchflow[gcs]' (" in result.stderr, result.stderr


@pytest.mark.parametrize("make", ["missing", "directory without specs", "binary", "not a mapping"])
def test_a_wrong_spec_path_is_one_line_and_exit_2(tmp_path: Path, make: str) -> None:
    path = tmp_path / "spec.yaml"
    if make == "directory without specs":
        path = tmp_path / "nothing"
        path.mkdir()
    elif make == "binary":
        path.write_bytes(bytes(range(256)))
    elif make == "not a mapping":
        path.write_text("just words\n")
    for command in ("run", "validate", "plan", "status", "cancel"):
        result = cli(command, str(path))
        assert result.exit_code == 2, (command, result.stderr)
        assert _one_line(result.stderr).startswith("error: ") and str(path) in result.stderr, (command, result.stderr)


def test_an_output_in_a_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, output={"type": "files", "path": "data/in.jsonl/out.jsonl"})
    result = cli("run", str(spec))
    assert result.exit_code == 2
    assert _one_line(result.stderr).startswith(f"error: {tmp_path / 'data/in.jsonl/out.jsonl'}: cannot write")


UNSET_SPEC = """\
version: 1
name: prod
backend: {type: vertex, project: "${BATCHFLOW_TEST_PROJECT}", location: us-central1,
          staging: "gs://${BATCHFLOW_TEST_BUCKET:?the staging bucket}/stage"}
model: gemini-2.5-flash
source: {type: files, path: "${BATCHFLOW_TEST_DATA}/in.jsonl"}
prompt: "Say {{ text }}"
output: {type: files, path: out/x.jsonl}
"""


def test_validate_allow_unset_env_notes_the_variables_instead_of_failing(tmp_path: Path) -> None:
    spec = tmp_path / "prod.yaml"
    spec.write_text(UNSET_SPEC)
    strict = cli("validate", str(spec))
    assert strict.exit_code == 2 and strict.stderr.count("BATCHFLOW_TEST_") == 3
    allowed = cli("validate", "--allow-unset-env", str(spec))
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.stdout.startswith(f"ok: {spec} (the source is not read: it names an unset variable)")
    notes = [line.strip() for line in allowed.stdout.splitlines()[1:]]
    assert notes == [
        f"note: {spec}:3:34: backend.project: environment variable BATCHFLOW_TEST_PROJECT is not set "
        "(allowed by --allow-unset-env)",
        f"note: {spec}:4:20: backend.staging: environment variable BATCHFLOW_TEST_BUCKET is not set or empty: "
        "the staging bucket (allowed by --allow-unset-env)",
        f"note: {spec}:6:29: source.path: environment variable BATCHFLOW_TEST_DATA is not set "
        "(allowed by --allow-unset-env)",
    ]


def test_validate_only_specs_skips_yaml_that_is_no_spec(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path)
    other = tmp_path / "compose.yaml"
    other.write_text("services: {}\n")
    assert cli("validate", str(spec), str(other)).exit_code == 2
    result = cli("validate", "--only-specs", str(spec), str(other))
    assert result.exit_code == 0 and result.stdout.count("ok: ") == 1


def test_a_run_with_state_dir_writes_nothing_beside_the_spec_but_its_output(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path)
    assert cli("run", str(spec), "--state-dir", str(tmp_path / "elsewhere")).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "elsewhere", "out", "t.yaml"]
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["a"]


def test_ctrl_c_during_a_run_names_the_jobs_that_keep_running_and_what_to_do(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from support.servers import batchflow_emulator

    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": "x"} for i in range(5)])
    with batchflow_emulator(tmp_path / "emulator", job_seconds=60) as url:
        spec = write_spec(tmp_path, backend={"type": "gemini", "base_url": url}, jobs={"max_requests": 1,
                                                                                      "poll_interval": "0.2s"})
        run = subprocess.Popen([sys.executable, "-m", "batchflow", "--log-format", "json", "run", str(spec)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "GEMINI_API_KEY": "test"})
        state = tmp_path / ".batchflow/t/state.json"
        deadline = time.monotonic() + 60
        while not (state.exists() and state.read_text().count('"status": "running"') == 4):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.1)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130
    line = _one_line(stderr)
    assert line.startswith("interrupted: the state is saved; 4 job(s) already created keep running (and billing) "
                           "at the service: batches/"), line
    assert " and 1 more; " in line
    assert line.endswith(f"cancel them with `batchflow cancel {spec}`, or resume with `batchflow run {spec}`")
