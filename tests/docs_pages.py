"""The README and docs/ as a reader meets them: their code blocks, headings and relative links."""

from __future__ import annotations

import re
from pathlib import Path

from tests.harness import REPO

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```")


def pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code taken out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def code_blocks(text: str, language: str = "bash") -> list[str]:
    """The fenced blocks of one language, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def section(text: str, heading: str) -> str:
    """From the ``## heading`` line to the next heading of level 1 or 2."""
    start = text.index(f"\n## {heading}\n") + 1
    body = start + len(heading) + 4
    following = re.search(r"^#{1,2} ", text[body:], flags=re.M)
    return text[start : body + following.start()] if following else text[start:]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = [line.lstrip("#").strip() for line in _heading_lines(page.read_text())]
    return {slug(h) for h in headings}


def _heading_lines(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            lines.append(line)
    return lines


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """Each relative link of ``page`` whose file is not in ``root``, or whose #anchor is no heading there."""
    problems = []
    for line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if root.resolve() not in resolved.parents and resolved != root.resolve():
                problems.append(f"{page.name}: {target} leaves the repository")
            elif not resolved.exists():
                problems.append(f"{page.name}: {target} does not exist")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{page.name}: {target} names no heading of {resolved.name}")
    return problems
