"""The pre-commit hook, as a repository of specs uses it: `pre-commit try-repo` against this repository (which
installs batchflow into the hook's own environment from the working tree, committed or not)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.helpers import write_jsonl, write_spec

pytest.importorskip("pre_commit")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def _try_repo(repo: Path, home: Path, hooks_repo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(hooks_repo), "batchflow-validate",
                           "--all-files"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def test_the_hook_passes_good_specs_and_fails_a_bad_one_with_its_located_line(repo_root: Path,
                                                                                tmp_path: Path) -> None:
    if not (repo_root / ".git").exists():
        pytest.skip("the project is not a git repository here")
    specs = tmp_path / "specs"
    write_jsonl(specs / "data/in.jsonl", [{"id": "a", "text": "x"}])
    write_spec(specs, name="good")
    (specs / "compose.yaml").write_text("services: {}\n")  # YAML that is no spec: skipped
    _git(specs, "init", "-q")
    _git(specs, "add", "-A")
    _git(specs, "commit", "-qm", "specs")
    passed = _try_repo(specs, tmp_path / "pre-commit", repo_root)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "batchflow validate" in passed.stdout and "Passed" in passed.stdout

    bad = write_spec(specs, name="bad", prompt="{{ text }}", promtp="typo")
    _git(specs, "add", "-A")
    failed = _try_repo(specs, tmp_path / "pre-commit", repo_root)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    lines = [line for line in failed.stdout.splitlines() if line.startswith("error: ")]
    line = bad.read_text().splitlines().index("promtp: typo") + 1
    assert lines == [f"error: bad.yaml:{line}:1: promtp: unknown key 'promtp' (did you mean 'prompt'?)"], failed.stdout
