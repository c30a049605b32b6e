"""The Markdown outside docs/ (the README landing page, models/README.md, launch/README.md) links only
to what exists in the repository, down to the section: `make docs` checks the pages under docs/
the same way (Sphinx with myst-parser, warnings as errors), but these files are not part of it."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "models" / "README.md", ROOT / "launch" / "README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's and myst's anchors of a page's headings: lower case, punctuation dropped, spaces to -."""
    fence, anchors = False, set()
    for line in page.read_text(encoding="utf-8").splitlines():
        fence ^= line.startswith("```")
        if not fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_inside_the_repository_resolves(page):
    links = [m.group(1) for m in LINK.finditer(page.read_text(encoding="utf-8"))]
    local = [link for link in links if not re.match(r"^[a-z]+:", link)]
    assert local, f"{page} links nothing"
    for link in local:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.relative_to(ROOT)}: {link} does not exist"
        if anchor:
            assert anchor in _anchors(target), f"{page.relative_to(ROOT)}: {link}: no such section"


def test_the_readme_is_a_landing_page_that_points_to_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"](docs/{page.name})" in readme, f"the README does not point to docs/{page.name}"
