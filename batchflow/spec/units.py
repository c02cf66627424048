"""Durations and sizes as a spec writes them: ``30s``, ``1h30m``, ``500MB``, ``1GiB`` or plain numbers.

The patterns here are the same strings the JSON Schema uses (a test keeps them equal), so whatever the schema
accepts, these functions parse.
"""

from __future__ import annotations

import re

# a number of seconds, or one or more <number><unit> parts ("1h30m"); units: ms, s, m, h, d
DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*$|^\s*([0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*)+$"
# bytes, or a number with a decimal (kB = 1000) or binary (KiB = 1024) unit; the B may be left off ("500M")
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtT]i?)?[bB]?\s*$"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]i?)?[bB]?\s*")
_POWER = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(value: float | str) -> float:
    """Seconds in ``value``: a number (seconds) or a string like ``"30s"``, ``"10m"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '30s', '10m', '1h')")
    if not _DURATION_PART.search(value):
        return float(value)
    return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


def parse_size(value: int | str) -> int:
    """Bytes in ``value``: an int or a string like ``"500MB"`` (10**6) or ``"1GiB"`` (2**30)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. '500MB', '2GB', '1GiB')")
    number, unit = match.groups()
    if not unit:
        return int(float(number))
    base = 1024 if unit.endswith("i") else 1000
    return int(float(number) * base ** _POWER[unit[0].lower()])


def parse_share(value: int | float | str) -> int | float:
    """``max_failed``: an int stays a count; ``"1%"`` becomes the share ``0.01``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:  # JSON Schema's integer: 3.0 is 3
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*%\s*", value):
        return float(value.strip().rstrip("%")) / 100
    raise ValueError(f"not a count or a percentage: {value!r}")
