"""What to tell a user who lacks an optional dependency (a pyproject extra: cloud, edge, video, bench).

splitpoint is not on PyPI, so naming the extra on the package's name finds nothing (or, worse, a
stranger's package of that name): an extra comes with a checkout (the extra on `.`) or with the
built wheel (README.md, "Install for real use"). Every hint says the same, in this form;
edge_node/sources.py and splitpoint/bench/report.py spell the same text out as literals, and
tests/unit/test_install_hints.py holds every hint in the packages to this form.
"""

from __future__ import annotations

__all__ = ["install_hint"]


def install_hint(extra: str, package: str | None = None) -> str:
    """"pip install '.[EXTRA]' from a splitpoint checkout, or the splitpoint wheel with [EXTRA]",
    naming the PyPI package that the extra brings when that says more than the extra's name."""
    hint = f"pip install '.[{extra}]' from a splitpoint checkout, or the splitpoint wheel with [{extra}]"
    return f"{hint} (package {package})" if package else hint
