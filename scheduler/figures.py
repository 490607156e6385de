"""A figure the planner computes with (a power, a stage time, a radio's slope): a finite number
>= 0 and at most a bound no device reaches. Checked here once, for profiles, power tables and
radio files alike, so that each says a bad figure the same way."""

from __future__ import annotations

import math
from typing import Any

from splitpoint.errors import ConfigError

#: why a unit's bound is where it is, said when a figure passes it
_BEYOND = {
    "W": "more than any edge board draws",
    "mW": "more than any radio draws",
    "mW/Mbps": "200 times the published LTE slope",
    "ms": "an hour, longer than any split of a frame takes",
}


def bounded_figure(key: str, value: Any, most: float, unit: str, where: str = "") -> float:
    """`value` as a float when it is a finite number >= 0 (not a bool, though Python counts one
    as a number) and at most `most`, in `unit` (a key of _BEYOND); else a ConfigError naming
    `key`, the value and the bound, and `where` (the file) when the key does not name it.

    A NaN or negative watt figure was planned with (min-energy chose the split whose energy was
    -inf); a table's idle_w = 1e308 made every predicted energy inf; a median of 1e308 ms was
    planned with and printed in 300 digits."""
    at = f" in {where}" if where else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(key, value, f"must be a finite number >= 0 ({unit}){at}")
    if value > most:
        raise ConfigError(key, value, f"must be at most {most:g} ({unit}), {_BEYOND[unit]}{at}")
    return float(value)
