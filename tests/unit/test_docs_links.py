"""Every relative link in README.md and docs/*.md leads somewhere: the file exists, and an
anchor names a heading of that file as GitHub renders it (scripts/bench_docs.py `slug`, the
function that writes the results sections' links). The results table's links once used another
rule, and every link to a heading with an apostrophe or "): " in it led nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.test_bench_docs import ROOT, bench_docs

pytestmark = pytest.mark.edge_side

LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings; a repeated heading's get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    for _, line in prose(path.read_text()):
        if m := re.match(r"#{1,6} (.*)", line):
            a = bench_docs.slug(m.group(1))
            seen[a] = seen.get(a, -1) + 1
    return {a if n == 0 else f"{a}-{n}" for a, count in seen.items() for n in range(count + 1)}


def broken_links(path: Path) -> list[str]:
    broken = []
    for number, line in prose(path.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file) if file else path
            if not dest.exists():
                broken.append(f"{path.name}:{number}: {file} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{path.name}:{number}: no heading #{anchor} in {dest.name}")
    return broken


def test_the_slug_is_githubs() -> None:
    assert bench_docs.slug("5. `policy explain`") == "5-policy-explain"
    assert bench_docs.slug("Results: slow edge device (all-edge 125 ms): two traces") == \
        "results-slow-edge-device-all-edge-125-ms-two-traces"
    assert bench_docs.slug("Verizon-EVDO-driving's three slices") == "verizon-evdo-drivings-three-slices"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](#a-title) [gone](#a-titel) [file](other.md)\n```\n[in code](#x)\n```\n")
    assert broken_links(page) == ["page.md:3: no heading #a-titel in page.md", "page.md:3: other.md does not exist"]


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_every_relative_link_in_the_docs_leads_somewhere(page: Path) -> None:
    assert broken_links(page) == []
