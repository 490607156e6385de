"""scripts/bench_docs.py: the results part of docs/benchmarks.md is rebuilt from the runs' JSON;
a run whose JSON is gone keeps what the page shows for it."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from splitpoint.bench.results import BenchResult, from_dict
from tests.unit.test_bench_report import step_result

pytestmark = pytest.mark.edge_side

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_docs", ROOT / "scripts" / "bench_docs.py")
assert spec and spec.loader
bench_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_docs)

PAGE = f"""# Benchmarks

Hand-written part.

{bench_docs.MARKER}

## Summary of the latest runs

Every target of the issue, per run (PASS, MISS, or N/A where the run could not test it; the sections below give the figures and the shortfalls).

| target | [old run](#results-old-run) |
| --- | --- |
| settle after a step change | MISS |
| chosen/oracle | PASS |

## Results: old run

Written long ago; its JSON was under /tmp.

![old-step](img/old-step.png)

| a | table |


"""


def write_runs(tmp: Path, runs: list[dict[str, Any]]) -> Path:
    lines = []
    for run in runs:
        lines += ["[[run]]"] + [f"{k} = {json.dumps(v)}" for k, v in run.items()] + [""]
    path = tmp / "runs.toml"
    path.write_text("\n".join(lines))
    return path


def test_a_run_without_its_json_keeps_its_section_and_summary_column(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(PAGE)
    spec = write_runs(tmp_path, [{"json": "gone.json", "title": "old run", "intro": "x"}])
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 0
    assert doc.read_text() == PAGE.rstrip() + "\n"  # nothing but the trailing blank lines moved


def test_a_new_run_from_gzipped_json_joins_the_kept_one(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(PAGE)
    result = from_dict(BenchResult, step_result(best_hi=0, best_lo=8, ended=(8, 0), settle=(2, 3), switches=(1, 1)))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "new.json.gz").write_bytes(gzip.compress(result.to_json().encode()))
    spec = write_runs(tmp_path, [{"json": "data/new.json.gz", "title": "new run", "intro": "Fresh."},
                                 {"json": "gone.json", "title": "old run", "intro": "x"}])
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 0
    text = doc.read_text()
    assert "| target | [new run](#results-new-run) | [old run](#results-old-run) |" in text
    assert "| settle after a step change | PASS | MISS |" in text  # the new run judged, the old one kept
    assert "| chosen/oracle | - | PASS |" in text  # a target only the kept run had
    assert text.index("## Results: new run") < text.index("## Results: old run")
    assert "Fresh." in text and "Written long ago" in text and "![old-step](img/old-step.png)" in text


def test_a_run_neither_on_disk_nor_on_the_page_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(PAGE)
    spec = write_runs(tmp_path, [{"json": "gone.json", "title": "never published", "intro": "x"}])
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 2
    assert "never published" in capsys.readouterr().err
    assert doc.read_text() == PAGE  # untouched


def test_a_tagged_run_never_overwrites_the_untagged_plots_of_a_kept_run(tmp_path: Path) -> None:
    """Two runs of one model and device: the kept one shows the untagged plot names, the new one
    (plot_tag) must render beside them, not over them."""
    pytest.importorskip("matplotlib")
    adaptive = {"split": None, "mean_ms": 50.0, "t_s": [0.0, 0.1], "splits": [0, 8], "end_to_end_ms": [40.0, 60.0]}
    trace = {"trace": "t.up", "seconds": 0.2, "fps": 10.0, "rtt_ms": 10.0, "deadline_ms": 100.0,
             "runs": {"adaptive": adaptive}, "best_fixed": "k=8", "best_fixed_mean_ms": 60.0}
    result = from_dict(BenchResult, {"bundle": {"model": "m", "num_layers": 8}, "traces": [trace]})
    (tmp_path / "new.json").write_text(result.to_json())
    names = [Path(p).name for p in bench_docs.render_plots(result, tmp_path / "scratch")]
    assert names == ["bench-m-traces-rtt10.png"]
    img = tmp_path / "img"
    img.mkdir()
    for name in names:
        (img / name).write_bytes(b"the kept run's plot")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(PAGE.replace("![old-step](img/old-step.png)", "\n\n".join(f"![x](img/{n})" for n in names)))
    spec = write_runs(tmp_path, [{"json": "new.json", "title": "new run", "intro": "x", "plot_tag": "v2"},
                                 {"json": "gone.json", "title": "old run", "intro": "x"}])
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=img) == 0
    for name in names:
        assert (img / name).read_bytes() == b"the kept run's plot"
        tagged = img / f"{Path(name).stem}-v2{Path(name).suffix}"
        assert tagged.exists() and f"(img/{tagged.name})" in doc.read_text()


def test_the_current_runs_make_the_first_table_one_row_per_target_with_its_figures(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(PAGE)
    result = from_dict(BenchResult, step_result(best_hi=0, best_lo=8, ended=(8, 0), settle=(2, 9), switches=(1, 1)))
    (tmp_path / "new.json").write_text(result.to_json())
    spec = write_runs(tmp_path, [{"json": "new.json", "title": "new run", "intro": "x", "current": True,
                                  "label": "the step"},
                                 {"json": "gone.json", "title": "old run", "intro": "x"}])
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 0
    text = doc.read_text()
    standing = text[text.index("## Where the targets stand"):text.index("## Summary of the latest runs")]
    rows = [line for line in standing.splitlines() if line.startswith("| settle")]
    assert len(rows) == 1  # the new run's target; the old run is not current
    name, verdict, measured, missed, run = (c.strip() for c in rows[0].strip("|").split(" | "))
    assert verdict == "MISS" and "9" in measured and missed != "-" and run == "[the step](#results-new-run)"
    assert "| chosen/oracle |" not in standing
    # the summary's column is headed by the label too, linked to the run's section
    assert "| target | [the step](#results-new-run) | [old run](#results-old-run) |" in text


def test_a_kept_runs_labelled_column_is_read_back_by_its_link(tmp_path: Path) -> None:
    """A run kept as published whose column shows its label, not its title, keeps its cells."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text(PAGE)
    spec = write_runs(tmp_path, [{"json": "gone.json", "title": "old run", "intro": "x", "label": "the old one"}])
    for _ in range(2):  # the second time the column is headed "the old one"
        assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 0
        text = doc.read_text()
        assert "| target | [the old one](#results-old-run) |" in text
        assert "| settle after a step change | MISS |" in text and "| chosen/oracle | PASS |" in text


def test_a_current_run_without_its_json_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(PAGE)
    spec = write_runs(tmp_path, [{"json": "gone.json", "title": "old run", "intro": "x", "current": True}])
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 2
    assert "old run" in capsys.readouterr().err and doc.read_text() == PAGE


HISTORY = f"""# Benchmark history

Hand-written part of the history page.

{bench_docs.MARKER}
"""


def test_an_archived_run_moves_to_the_history_page_with_its_summary_column(tmp_path: Path) -> None:
    """A run kept as published moves from benchmarks.md to bench-history.md and back, its section
    and its summary column intact, beside a page whose first table (the current runs') precedes
    its summary table."""
    doc, history = tmp_path / "benchmarks.md", tmp_path / "bench-history.md"
    doc.write_text(PAGE)
    history.write_text(HISTORY)
    result = from_dict(BenchResult, step_result(best_hi=0, best_lo=8, ended=(8, 0), settle=(2, 3), switches=(1, 1)))
    (tmp_path / "new.json").write_text(result.to_json())
    new = {"json": "new.json", "title": "new run", "intro": "Fresh.", "current": True}
    old = {"json": "gone.json", "title": "old run", "intro": "x"}
    spec = write_runs(tmp_path, [new, {**old, "archived": True}])
    for _ in range(2):  # the second time, the old run's section is read back from the history page
        assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 0
        text, past = doc.read_text(), history.read_text()
        assert "## Where the targets stand" in text and "## Results: new run" in text
        assert "old run" not in text and "Hand-written part." in text
        assert past.startswith(HISTORY) and "Written long ago" in past and "![old-step](img/old-step.png)" in past
        assert "| target | [old run](#results-old-run) |" in past and "| chosen/oracle | PASS |" in past
        assert "## Summary of the earlier runs" in past and "## Where the targets stand" not in past
    spec = write_runs(tmp_path, [new, old])  # un-archived: back on the first page, as published
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 0
    text = doc.read_text()
    assert "| target | [new run](#results-new-run) | [old run](#results-old-run) |" in text
    assert "| chosen/oracle | - | PASS |" in text and "Written long ago" in text
    assert history.read_text() == HISTORY.rstrip() + "\n"


def test_an_archived_run_needs_the_history_page_and_cannot_be_current(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    doc, history = tmp_path / "benchmarks.md", tmp_path / "bench-history.md"
    doc.write_text(PAGE)
    spec = write_runs(tmp_path, [{"json": "gone.json", "title": "old run", "intro": "x", "archived": True}])
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 2
    assert "bench-history.md: not found" in capsys.readouterr().err and doc.read_text() == PAGE
    history.write_text(HISTORY)
    spec = write_runs(tmp_path, [{"json": "gone.json", "title": "old run", "intro": "x", "archived": True,
                                  "current": True}])
    assert bench_docs.main(["bench_docs", str(spec)], doc=doc, img=tmp_path / "img") == 2
    assert "both current and archived" in capsys.readouterr().err
    assert doc.read_text() == PAGE and history.read_text() == HISTORY
