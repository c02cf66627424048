"""The Python API, run exactly as docs/python-api.md shows it; shell completion as README.md sets it up."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import batchflow


def _docs_block(repo_root: Path, page: str, marker: str, language: str) -> str:
    readme = (repo_root / page).read_text(encoding="utf-8")
    block = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```\n<!-- /{marker} -->", readme, re.S)
    assert block, f"{page} has a {language} block between <!-- {marker} --> markers"
    return block.group(1)


def test_the_documented_python_api_block_runs_as_written(repo_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(repo_root / "specs" / "data", tmp_path / "specs" / "data")
    shutil.copy(repo_root / "specs" / "quickstart.yaml", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(_docs_block(repo_root, "docs/python-api.md", "python-api", "python"), {})
    rows_line, summary_line = [x for x in printed.getvalue().splitlines() if x.startswith(("[(", "40 of"))]
    assert rows_line.startswith("[('r1', 'ok', ") and "('r2', 'ok', " in rows_line
    assert summary_line == f"40 of 40 ok -> {tmp_path / 'specs/out/quickstart.jsonl'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["specs"]  # map's working directory is gone


def test_map_keeps_answers_in_its_workdir_and_takes_a_spec(tmp_path: Path) -> None:
    records = [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]
    spec = {"version": 1, "name": "notebook", "backend": {"type": "local"}, "model": "gemini-2.5-flash",
            "key": "{{ id }}", "prompt": "About {{ text }}", "output": {"include_record": False}}
    first = batchflow.map(records, spec=spec, workdir=tmp_path / "work")
    assert [(r["key"], r["status"], "record" in r) for r in first] == [("a", "ok", False), ("b", "ok", False)]
    again = batchflow.map([*records, {"id": "c", "text": "z"}], spec=spec, workdir=tmp_path / "work")
    assert again[:2] == first and again[2]["key"] == "c"


def test_run_takes_a_loaded_spec_and_load_spec_reports_problems(tmp_path: Path) -> None:
    from support.helpers import write_jsonl, write_spec

    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = batchflow.load_spec(write_spec(tmp_path), state_dir=tmp_path / "state")
    summary = batchflow.run(spec)
    assert (summary.records, summary.ok, summary.failed) == (1, 1, 0)
    assert (tmp_path / "state/t/state.json").exists()
    with pytest.raises(batchflow.SpecError, match="promtp"):
        batchflow.load_spec(write_spec(tmp_path, name="bad", promtp="x"))


def test_the_package_is_typed(repo_root: Path) -> None:
    assert (repo_root / "batchflow" / "py.typed").exists()


def test_shell_completion_prints_a_completion_script() -> None:
    env = {**os.environ, "_BATCHFLOW_COMPLETE": "bash_source"}
    result = subprocess.run([sys.executable, "-m", "batchflow"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "_batchflow_completion()" in result.stdout and "complete -o nosort -F _batchflow_completion batchflow" \
        in result.stdout
    assert 'eval "$(_BATCHFLOW_COMPLETE=bash_source batchflow)"' in (Path(__file__).parents[2] /
                                                                    "README.md").read_text(encoding="utf-8")


def test_run_takes_a_deadline_as_run_deadline_does(tmp_path: Path) -> None:
    from support.helpers import write_jsonl, write_spec

    from batchflow.emulator import start_in_thread
    from batchflow.errors import DeadlineReached, InputError
    from batchflow.execute.runner import NotFinished

    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    with start_in_thread(tmp_path / "emu", job_seconds=60) as emulator:
        spec = write_spec(tmp_path, backend={"type": "local", "base_url": emulator.base_url})
        start = time.monotonic()
        with pytest.raises(DeadlineReached, match=r"the run's deadline \(2 s, run --deadline\) passed"):
            batchflow.run(spec, deadline="2s")  # the job takes a minute
        assert time.monotonic() - start < 30
        with pytest.raises(NotFinished):  # the state was saved: the next run goes on from it
            batchflow.run(spec, wait=False)
        stats = emulator.engine.stats()
    assert list(stats["creates_by_display_name"].values()) == [1], stats
    with pytest.raises(InputError, match="deadline 'soon'"):
        batchflow.run(spec, deadline="soon")
