"""The README leads a new user (short, the three stories first) and every page it points to exists;
the docs site itself is built with `mkdocs build --strict` by `make test` (broken links, pages left
out of the navigation)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_puts_the_user_stories_first():
    assert len(README.splitlines()) <= 250
    headings = [line[3:] for line in README.splitlines() if line.startswith("## ")]
    assert headings[:4] == ["Set-up", "Score a method", "Put it on a leaderboard", "Regression-check a model"]
    assert headings[-1] == "Documentation"


def test_every_readme_link_resolves_and_every_docs_page_is_in_the_site_navigation():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from pages(v)
        elif isinstance(node, list):
            for v in node:
                yield from pages(v)

    in_nav = set(pages(nav))
    on_disk = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert on_disk == in_nav, f"docs pages not in the navigation: {on_disk - in_nav}; missing: {in_nav - on_disk}"
