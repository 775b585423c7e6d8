"""Every relative link in README.md and docs/*.md leads somewhere: the file exists and,
for a ``#fragment`` into Markdown, a heading there has that anchor (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
HEADING = re.compile(r"^#{1,6} (.+)$", re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in HEADING.finditer(FENCE.sub("", doc.read_text())):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")  # repeats get -1, -2...
    return found


def broken_links(docs: list[Path]) -> list[str]:
    broken = []
    for doc in docs:
        for match in LINK.finditer(FENCE.sub("", doc.read_text())):
            target = match.group(1)
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, fragment = target.partition("#")
            linked = doc.parent / path if path else doc
            if not linked.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{doc.name}: {target} (no such heading)")
    return broken


def test_the_docs_links_lead_somewhere() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert broken_links(docs) == []


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# Cost as the log grows (`make bench-scale`)\n## Two\n## Two\n"
        "[ok](#cost-as-the-log-grows-make-bench-scale) [ok](#two-1) [ok](b.md#b)\n"
        "[bad](#three) [bad](c.md) [bad](b.md#a)\n```\n# not a heading\n```\n"
        "[bad](#not-a-heading)\n"
    )
    (tmp_path / "b.md").write_text("# B\n")
    assert broken_links([tmp_path / "a.md"]) == [
        "a.md: #three (no such heading)",
        "a.md: c.md (no such file)",
        "a.md: b.md#a (no such heading)",
        "a.md: #not-a-heading (no such heading)",
    ]
