"""Install hints say what works: splitpoint is not on PyPI, so `pip install 'splitpoint[cloud]'`
finds nothing. Every hint is `pip install '.[EXTRA]' from a splitpoint checkout, or the
splitpoint wheel with [EXTRA]` (splitpoint.extras.install_hint), whether built by the function or
spelled out as a literal."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from splitpoint.bundle import Preprocessing
from splitpoint.errors import BackendUnavailableError
from splitpoint.extras import install_hint

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("splitpoint", "edge_node", "cloud_server", "scheduler")


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if "_pb2" not in p.name]
    assert len(files) > 50, files  # the packages were found
    return files


def _strings(path: Path) -> list[str]:
    """Every string literal in the file, adjacent literals joined as Python joins them."""
    return [n.value for n in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_hint_names_the_package_on_pypi() -> None:
    stale = re.compile(r"""pip3? install\s+['"]?splitpoint\[""")
    found = [f"{p.relative_to(ROOT)}: {s!r}" for p in _sources() for s in _strings(p)
             if stale.search(s) or ("pip install" in s and "splitpoint[" in s)]
    found += [str(p.relative_to(ROOT)) for p in _sources() if stale.search(p.read_text())]
    assert not found, found


def test_every_spelled_out_hint_is_the_one_form() -> None:
    seen = []
    for path in _sources():
        for s in _strings(path):
            for m in re.finditer(r"pip install '\.\[([\w-]+)\]'", s):
                assert install_hint(m.group(1)) in s, (path, s)
                seen.append(m.group(1))
    assert {"video", "edge", "bench"} <= set(seen), seen  # sources.py and bench/report_plots.py


def test_the_hint_names_the_extra_the_checkout_and_the_wheel() -> None:
    assert install_hint("cloud") == ("pip install '.[cloud]' from a splitpoint checkout, "
                                     "or the splitpoint wheel with [cloud]")
    assert install_hint("edge", "pillow").endswith("with [edge] (package pillow)")


def test_missing_pillow_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from splitpoint import images

    monkeypatch.setitem(sys.modules, "PIL", None)  # as on a machine without Pillow
    pre = Preprocessing(8, 8, 1, 1 / 255, 0.0)
    with pytest.raises(BackendUnavailableError) as err:
        images.fit_frame(np.zeros((16, 16, 3), np.uint8), pre)
    assert str(err.value) == f"resizing frames needs Pillow: {install_hint('edge', 'pillow')}"
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(BackendUnavailableError) as err:
        images.read_frame_file_sized(tmp_path / "a.png", pre)
    assert str(err.value) == f"reading image files needs Pillow: {install_hint('edge', 'pillow')}"
