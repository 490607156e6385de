"""Rebuild the results part of docs/benchmarks.md from bench JSON files.

    python scripts/bench_docs.py RUNS.toml

RUNS.toml lists the runs in the order they appear:

    [[run]]
    json = "bench-data/mnv2-cond.json.gz"  # relative to RUNS.toml; .gz is read gzipped
    title = "digits-cnn, native edge"
    intro = "One paragraph written by a person: what the run shows."
    drop = ["step", "traces"]   # optional: stages of this JSON not to report (say why in the intro)
    plot_tag = "agent-new"      # optional: appended to this run's plot file names; needed when two
                                # runs would otherwise write the same plots (same model and device)
    current = true              # optional: this run is the latest of main's agent for its stages;
    label = "conditions, step"  # its targets make the first table, "Where the targets stand",
                                # one row each, the run named by `label` (default: its title)
    archived = true             # optional: shown on docs/bench-history.md, not on benchmarks.md
                                # (never together with `current`)

Everything after the marker line `<!-- results below ... -->` in docs/benchmarks.md is
replaced: where each target stands (every target of the `current` runs, with its figures), a
summary table of every target across the page's runs, then per run the intro, the plots
(re-rendered into docs/img/) and the report of `splitpoint.bench.report`. The same after the
marker of docs/bench-history.md, for the archived runs (no first table there). Both pages are
written only once both are rendered.

A run whose JSON is not on this machine (the runs before docs/bench-data/ kept them lived under
/tmp) keeps what either page already shows for it: its section as written and its column of a
summary table, found by its title (so it can move between the pages). A run neither on disk
nor on a page is an error.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from splitpoint.bench.report import evaluate_targets, render_markdown, render_plots
from splitpoint.bench.results import BenchResult
from splitpoint.config import read_toml
from splitpoint.errors import SplitpointError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
HISTORY = "bench-history.md"  # the archived runs' page, beside DOC
IMG = ROOT / "docs" / "img"
MARKER = "<!-- results below are generated from the runs' JSON by `python scripts/bench_docs.py docs/bench-runs.toml` -->"
SECTION = "## Results: "
SUMMARY = "## Summary of the "  # each page's summary table: "the latest runs", "the earlier runs"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, every character but letters, digits, `_`,
    `-` and spaces dropped, each space a `-` (a repeated heading gets -1, -2, ...: not needed here)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchor(title: str) -> str:
    """The anchor of a run's results section."""
    return slug(SECTION[3:] + title)


def published(results: str) -> tuple[dict[str, list[str]], dict[str, dict[str, str]], list[str]]:
    """What the page shows now, per run title: its section's lines, its summary cells by target
    name; and the target names in the table's order."""
    sections: dict[str, list[str]] = {}
    title = None
    for line in results.splitlines():
        if line.startswith(SECTION):
            title = line[len(SECTION):]
            sections[title] = []
        if title is not None:
            sections[title].append(line)
    # the summary table only: "Where the targets stand" (another table) comes before it
    part = results.split(SECTION, 1)[0].partition(SUMMARY)[2]
    table = [line for line in part.splitlines() if line.startswith("| ")]
    cells: dict[str, dict[str, str]] = {}
    names: list[str] = []
    if table and table[0].startswith("| target |"):
        # a column is headed by the run's label or title, linked to its section: the link says whose
        by_anchor = {anchor(t): t for t in sections}
        heads = [re.fullmatch(r"\[(.*)\]\(#([^)]*)\)", c.strip()) for c in table[0].strip("|").split(" | ")[1:]]
        titles = [by_anchor.get(m[2], m[1]) if m else "" for m in heads]
        for row in table[2:]:
            name, *values = (c.strip() for c in row.strip()[2:-2].split(" | "))
            names.append(name)
            for t, value in zip(titles, values, strict=True):
                cells.setdefault(t, {})[name] = value
    return sections, cells, names


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "/").replace("\n", " ") or "-"


def standing(current: list[tuple[dict, BenchResult | None]]) -> list[str]:
    """The first table: every target of the runs marked current, one row each, with its figures."""
    if not current:
        return []
    out = ["## Where the targets stand", "",
           "Every target, as the latest run of main's agent on each stage measured it (the runs marked "
           "`current` in docs/bench-runs.toml; one run each unless the run's section says otherwise). "
           "What was missed is said in the last column, why in the run's section.", "",
           "| target | verdict | measured | missed by | run |", "| --- | --- | --- | --- | --- |"]
    for run, r in current:
        assert r is not None
        link = f"[{run.get('label', run['title'])}](#{anchor(run['title'])})"
        for t in r.targets:
            out.append(f"| {cell(t.name)} | {t.status} | {cell(t.measured)} | "
                       f"{cell(t.shortfall if t.status == 'MISS' else '')} | {link} |")
    return out + [""]


def summary(runs: list[tuple[dict, BenchResult | None]], heading: str, old_cells: dict[str, dict[str, str]],
            old_names: list[str]) -> list[str]:
    """The summary table of a page: every target of its runs, one column per run."""
    out = [heading, "",
           "Every target of the issue, per run (PASS, MISS, or N/A where the run could not test it; the "
           "sections below give the figures and the shortfalls).", ""]
    names: list[str] = []
    for run, r in runs:
        if r is None:  # the rows its published column fills
            keys = [n for n in old_names if old_cells.get(run["title"], {}).get(n, "-") != "-"]
        else:  # one row per throughput split, goodput, added cost and trace file (its slices and RTTs in one
            # cell; the keeps-up target likewise)
            keys = [t.name.split(" (")[0] if t.name.startswith(("throughput", "goodput", "added", "trace", "keeps up"))
                    else t.name
                    for t in r.targets]
        names += [key for key in dict.fromkeys(keys) if key not in names]
    # headed by the run's label where it has one: the full titles made the table pages wide
    out.append("| target | " + " | ".join(f"[{run.get('label', run['title'])}](#{anchor(run['title'])})"
                                         for run, _ in runs) + " |")
    out.append("| --- |" + " --- |" * len(runs))
    for name in names:
        cells = []
        for run, r in runs:
            if r is None:
                cells.append(old_cells.get(run["title"], {}).get(name, "-"))
                continue
            found = [t for t in r.targets if t.name == name or t.name.startswith(name + " (")]
            if len(found) > 1 and name.startswith(("trace", "keeps up")):  # its slices and RTTs: how many passed
                cells.append(f"{sum(t.status == 'PASS' for t in found)} of {len(found)} PASS"
                             + "".join(f", {n} {st}" for st in ("MISS", "N/A")
                                       if (n := sum(t.status == st for t in found))))
                continue
            cells.append(", ".join(t.status + (f" ({t.measured.split(' = ')[-1]})" if "throughput" in name else "")
                                   for t in found) or "-")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out + [""]


def sections_of(runs: list[tuple[dict, BenchResult | None]], sections: dict[str, list[str]], img: Path,
                written: dict[str, str]) -> list[str] | None:
    """Each run's section: as published when its JSON is gone, else its intro, plots and report.
    `written`: plot file -> the run that wrote it (or shows it), across pages; None: two runs
    would write one plot (said on stderr)."""
    out: list[str] = []
    for run, r in runs:
        if r is None:
            section = sections[run["title"]]
            plots = [m.group(1) for line in section if (m := re.match(r"!\[[^\]]*\]\(img/([^)]+)\)", line))]
        else:
            if run.get("plot_tag"):
                # rendered aside, then renamed: the untagged names may be another run's plots
                with tempfile.TemporaryDirectory() as aside:
                    plots = []
                    for rendered in map(Path, render_plots(r, Path(aside))):
                        dest = img / f"{rendered.stem}-{run['plot_tag']}{rendered.suffix}"
                        shutil.move(rendered, dest)
                        plots.append(str(dest))
            else:
                plots = render_plots(r, img)
        for p in plots:
            if Path(p).name in written:
                print(f"{run['title']!r} and {written[Path(p).name]!r} both write {Path(p).name}: "
                      "give one of them a plot_tag", file=sys.stderr)
                return None
            written[Path(p).name] = run["title"]
        if r is None:
            out += section + ([""] if section[-1].strip() else [])  # as published, blank lines and all
            continue
        out += [f"{SECTION}{run['title']}", "", run["intro"].strip(), ""]
        for p in plots:
            out += [f"![{Path(p).stem}](img/{Path(p).name})", ""]
        md = render_markdown(r).splitlines()
        md = [line for line in md if not line.startswith("plots: ")]
        out.append("Run: `" + md[0].split(": ", 1)[1].strip("`") + "`" if md[0].startswith("## ") else md[0])
        for line in md[1:]:
            out.append("#" + line if line.startswith("### ") else line)
        out.append("")
    return out


def main(argv: list[str], doc: Path = DOC, img: Path = IMG) -> int:
    history = doc.with_name(HISTORY)  # beside the page: a test's page in a temporary directory has its own
    spec_path = Path(argv[1])
    spec = read_toml(spec_path)
    pages = {doc: doc.read_text().partition("<!-- results below")}
    if history.exists():
        pages[history] = history.read_text().partition("<!-- results below")
    if any(not marker for _, marker, _ in pages.values()):
        bad = next(page for page, (_, marker, _) in pages.items() if not marker)
        print(f"{bad}: no marker line; its hand-written part ends with {MARKER}", file=sys.stderr)
        return 2
    sections: dict[str, list[str]] = {}
    old_cells: dict[str, dict[str, str]] = {}
    old_names: list[str] = []
    for _, _, results in pages.values():  # a run may move between the pages: look in both
        s, c, n = published(results)
        sections.update(s)
        old_cells.update(c)
        old_names += [name for name in n if name not in old_names]
    runs: list[tuple[dict, BenchResult | None]] = []
    for run in spec["run"]:
        if run.get("archived") and run.get("current"):
            print(f"{run['title']!r} is both current and archived: the current runs stay on {doc.name}", file=sys.stderr)
            return 2
        path = spec_path.parent / run["json"]
        if not path.exists():
            if run["title"] not in sections:
                print(f"{path}: not found, and no page has a section {run['title']!r} to keep", file=sys.stderr)
                return 2
            print(f"{path}: not found; keeping the published section {run['title']!r}")
            runs.append((run, None))
            continue
        r = BenchResult.load(path)
        for stage in run.get("drop", []):
            r.drop(stage)
        r.targets = evaluate_targets(r)
        runs.append((run, r))
    current = [(run, r) for run, r in runs if run.get("current")]
    if any(r is None for _, r in current):
        gone = next(run["title"] for run, r in current if r is None)
        print(f"{gone!r} is marked current but its JSON is not here: the current figures come from it", file=sys.stderr)
        return 2
    latest = [(run, r) for run, r in runs if not run.get("archived")]
    archived = [(run, r) for run, r in runs if run.get("archived")]
    if archived and history not in pages:
        print(f"{history}: not found; archived runs go there (a hand-written part, then the marker line "
              f"{MARKER})", file=sys.stderr)
        return 2
    written: dict[str, str] = {}
    texts: dict[Path, str] = {}
    for page, first, page_runs, heading in ((doc, standing(current), latest, "latest runs"),
                                            (history, [], archived, "earlier runs")):
        if page not in pages:  # no history page, and no archived run (checked above)
            continue
        body = sections_of(page_runs, sections, img, written)
        if body is None:
            return 2
        table = summary(page_runs, SUMMARY + heading, old_cells, old_names) if page_runs else []
        texts[page] = pages[page][0] + "\n".join([MARKER, ""] + first + table + body).rstrip() + "\n"
    for page, text in texts.items():  # written once both rendered: an error leaves both pages as they were
        # (not the plots: those rendered before it stay in img/)
        page.write_text(text)
    print(f"{doc}: {len(latest)} runs, {history.name}: {len(archived)} runs "
          f"({sum(r is None for _, r in runs)} kept as published), plots in {img}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/bench_docs.py RUNS.toml")
    try:
        sys.exit(main(sys.argv))
    except (SplitpointError, OSError, ValueError) as err:  # a bad TOML or result file: say which
        sys.exit(f"bench_docs: {err}")
