"""The documentation lives in the repository: every relative link in README.md and docs/ resolves (file and
heading), every document a comment names is one of the repository's, and the README stays short."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets ``-1``, ``-2``... as on GitHub."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for m in re.finditer(r"^#{1,6} (.+)$", text, re.M):
        base = _anchor(m.group(1))
        anchors.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return anchors


def _links(page: Path) -> list[str]:
    return [m.group(1) for m in _LINK.finditer(_FENCE.sub("", page.read_text(encoding="utf-8")))]


def _broken(page: Path) -> list[str]:
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z]+:", link):  # https:, mailto: ... not ours to check offline
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{page.name}: {link} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{page.name}: {link} (no such heading)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    assert _broken(page) == []


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n[ok](#top) [gone](b.md) [no heading](a.md#nowhere)\n")
    assert _broken(tmp_path / "a.md") == ["a.md: b.md (no such file)", "a.md: a.md#nowhere (no such heading)"]


def test_the_readme_is_short_and_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    linked = {Path(link.partition("#")[0]).name for link in _links(ROOT / "README.md")}
    assert {p.name for p in PAGES[1:]} - linked == set()


_OUTSIDE = re.compile(r"\b(DESIGN|API_NOTES|STYLE)\.md\b|\.\./shared/")


def test_no_file_points_to_a_document_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in tracked:
        path = ROOT / name
        if name == "tests/test_docs.py" or path.suffix not in {".py", ".md", ".yaml", ".toml", ".sh", ""}:
            continue
        if path.is_file() and not path.is_symlink():
            text = path.read_text(encoding="utf-8", errors="replace")
            found += [f"{name}: {m.group(0)}" for m in _OUTSIDE.finditer(text)]
    assert found == []


def test_every_document_a_comment_names_exists() -> None:
    """A docs page named in code or a comment is a page of this repository."""
    named = set()
    for path in [*ROOT.joinpath("batchflow").rglob("*.py"), *ROOT.joinpath("benchmarks").rglob("*.py"),
                 *ROOT.joinpath("scripts").glob("*"), *ROOT.joinpath("tests").rglob("*.py")]:
        named |= set(re.findall(r"\bdocs/[\w\-]+\.md\b", path.read_text(encoding="utf-8", errors="replace")))
    assert named and {n for n in named if not (ROOT / n).exists()} == set()
