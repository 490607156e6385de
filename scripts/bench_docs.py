"""Rebuild the results part of docs/benchmarks.md from bench JSON files.

    python scripts/bench_docs.py RUNS.toml

RUNS.toml lists the runs in the order they appear:

    [[run]]
    json = "/tmp/bench2/digits.json"
    title = "digits-cnn, native edge"
    intro = "One paragraph written by a person: what the run shows."
    drop = ["step", "traces"]   # optional: stages of this JSON not to report (say why in the intro)
    plot_tag = "agent-new"      # optional: appended to this run's plot file names; needed when two
                                # runs would otherwise write the same plots (same model and device)

Everything after the marker line `<!-- results below ... -->` in docs/benchmarks.md is
replaced: a summary table of every target across the runs, then per run the intro, the
plots (re-rendered into docs/img/) and the report of `splitpoint.bench.report`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from splitpoint.bench.report import evaluate_targets, render_markdown, render_plots
from splitpoint.bench.results import BenchResult
from splitpoint.config import read_toml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
MARKER = "<!-- results below are generated from the runs' JSON by `python scripts/bench_docs.py` -->"


def anchor(title: str) -> str:
    return "results-" + "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-").replace("--", "-")


def main(argv: list[str]) -> int:
    spec = read_toml(argv[1])
    runs = []
    for run in spec["run"]:
        r = BenchResult.load(run["json"])
        for stage in run.get("drop", []):
            r.drop(stage)
        r.targets = evaluate_targets(r)
        runs.append((run, r))
    out = [MARKER, "", "## Summary of the latest runs", "",
           "Every target of the issue, per run (PASS, MISS, or N/A where the run could not test it; the "
           "sections below give the figures and the shortfalls).", ""]
    names: list[str] = []
    for _, r in runs:
        for t in r.targets:
            # one row per throughput split, goodput, added cost and trace file (its slices and RTTs in one cell)
            key = t.name.split(" (")[0] if t.name.startswith(("throughput", "goodput", "added", "trace")) else t.name
            if key not in names:
                names.append(key)
    out.append("| target | " + " | ".join(f"[{run['title']}](#{anchor(run['title'])})" for run, _ in runs) + " |")
    out.append("| --- |" + " --- |" * len(runs))
    for name in names:
        cells = []
        for _, r in runs:
            found = [t for t in r.targets if t.name == name or t.name.startswith(name + " (")]
            if len(found) > 1 and name.startswith("trace"):  # its slices and RTTs: how many passed
                cells.append(f"{sum(t.status == 'PASS' for t in found)} of {len(found)} PASS"
                             + "".join(f", {n} {st}" for st in ("MISS", "N/A")
                                       if (n := sum(t.status == st for t in found))))
                continue
            cells.append(", ".join(t.status + (f" ({t.measured.split(' = ')[-1]})" if "throughput" in name else "")
                                   for t in found) or "-")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("")
    written: dict[str, str] = {}  # plot file -> the run that wrote it
    for run, r in runs:
        plots = render_plots(r, IMG)
        if run.get("plot_tag"):
            tagged = []
            for p in map(Path, plots):
                dest = p.with_name(f"{p.stem}-{run['plot_tag']}{p.suffix}")
                p.replace(dest)
                tagged.append(str(dest))
            plots = tagged
        for p in plots:
            if Path(p).name in written:
                print(f"{run['title']!r} and {written[Path(p).name]!r} both write {Path(p).name}: "
                      "give one of them a plot_tag", file=sys.stderr)
                return 2
            written[Path(p).name] = run["title"]
        out += [f"## Results: {run['title']}", "", run["intro"].strip(), ""]
        for p in plots:
            out += [f"![{Path(p).stem}](img/{Path(p).name})", ""]
        md = render_markdown(r).splitlines()
        md = [line for line in md if not line.startswith("plots: ")]
        out.append("Run: `" + md[0].split(": ", 1)[1].strip("`") + "`" if md[0].startswith("## ") else md[0])
        for line in md[1:]:
            out.append("#" + line if line.startswith("### ") else line)
        out.append("")
    text = DOC.read_text()
    head = text.split("<!-- results below", 1)[0]
    DOC.write_text(head + "\n".join(out).rstrip() + "\n")
    print(f"{DOC}: {len(runs)} runs, plots in {IMG}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
