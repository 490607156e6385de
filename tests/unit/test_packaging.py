"""The Python version and the package version are each written once, and everything that repeats them agrees."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import splitpoint

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_lowest_python_is_the_same_everywhere() -> None:
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"  # tomllib (splitpoint/config.py)
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.11"
    venv_sh = (ROOT / "scripts" / "_venv.sh").read_text()
    assert "sys.version_info < (3, 11)" in venv_sh and "needs Python >= 3.11" in venv_sh
    classifiers = PYPROJECT["project"]["classifiers"]
    lowest = min(int(c.rsplit(".", 1)[1]) for c in classifiers if re.fullmatch(r".*Python :: 3\.\d+", c))
    assert lowest == 11


def test_version_comes_from_the_package() -> None:
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "splitpoint.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", splitpoint.__version__)


def test_edge_extras_pick_the_runtime_by_platform_and_never_tensorflow() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    edge = extras["edge"]
    assert "ai-edge-litert>=1.2; platform_machine != 'armv7l'" in edge
    assert "tflite-runtime==2.14.*; platform_machine == 'armv7l'" in edge
    assert any(r.startswith("numpy") and "<2" in r and "armv7l" in r for r in edge)
    assert any(r.startswith("numpy") and "<2" in r for r in extras["edge-32bit"])
    for name in ("edge", "edge-32bit"):
        assert not any("tensorflow" in r for r in extras[name]), name
    assert any(r.startswith("build") for r in extras["dev"])


def test_readme_says_it_is_not_on_pypi_and_shows_the_wheel_route() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "not on PyPI yet" in readme
    assert "pip install '.[edge]'" in readme and "python -m build" in readme
    assert "py3-none-any.whl[edge]'" in readme
