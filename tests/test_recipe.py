"""The README's recipe for cron and CI, run as written against a copy of the shipped specs (local backend)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import read_rows


def _recipe(readme: str) -> list[str]:
    block = re.search(r"<!-- recipe -->\n```bash\n(.*?)```\n<!-- /recipe -->", readme, re.S)
    assert block, "README.md has the recipe between <!-- recipe --> markers"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = re.sub(r"^batchflow ", f"{sys.executable} -m batchflow --log-format json ", command)
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_readme_recipe_validates_plans_and_runs_a_directory_of_specs(repo_root: Path, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    shutil.copytree(repo_root / "specs" / "data", specs / "data")
    for name in ("quickstart.yaml", "embed.yaml", "requests.yaml"):  # vertex.yaml needs GCS and its variables
        shutil.copy(repo_root / "specs" / name, specs / name)
    validate, plan, run = _recipe((repo_root / "README.md").read_text(encoding="utf-8"))
    assert "validate" in validate and "plan --exit-code" in plan and "run --no-wait" in run
    assert (checked := _sh(validate, tmp_path)).returncode == 0, checked.stderr
    planned = _sh(plan, tmp_path)
    assert planned.returncode == 0 and "would submit jobs" in planned.stdout, planned.stdout + planned.stderr
    for _ in range(30):
        ran = _sh(run, tmp_path)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        if "not finished" not in ran.stderr:
            break
    assert ran.stdout.count(" ok\n") == 3, ran.stdout
    assert len(read_rows(specs / "out/quickstart.jsonl")) == 40
    again = _sh(plan.split("||")[0], tmp_path)
    assert again.returncode == 0 and "would submit jobs" not in again.stdout, again.stdout
