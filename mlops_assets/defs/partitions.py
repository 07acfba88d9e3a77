"""Partitions, defined once, from settings (MLOPS_START / MLOPS_END, end exclusive)."""


from datetime import date, datetime, timedelta

import dagster as dg

from mlops_assets.settings import get_settings

# Read when the code location loads: the shape of the graph (partitions, the training window's
# mapping, the sweep's size) and the descriptions. Steps call get_settings() when they run.
_loaded = get_settings()

daily_partitions = dg.DailyPartitionsDefinition(start_date=_loaded.start, end_date=_loaded.end)
# Weeks start on Monday (day_offset=1); a week's partition key is its Monday.
weekly_partitions = dg.WeeklyPartitionsDefinition(start_date=_loaded.start, end_date=_loaded.end, day_offset=1)
single_run = dg.BackfillPolicy.single_run()


def window_days(context) -> list[str]:
    """The days (YYYY-MM-DD) of the run's partition or partition range."""
    tw = context.partition_time_window
    d0, d1 = tw.start.date(), tw.end.date()
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days)]


def week_days(week: str) -> list[str]:
    d0 = date.fromisoformat(week)
    return [(d0 + timedelta(days=i)).isoformat() for i in range(7)]


def training_window_days(week: str, weeks: int) -> list[str]:
    """The daily partitions a weekly training set reads: ``weeks`` weeks ending with ``week``,
    clipped to the partitioned span (``lib.training.training_window_days``)."""
    from mlops_assets.lib.training import training_window_days as window

    return window(week, weeks, datetime.fromisoformat(_loaded.start).date().isoformat())


def trailing_days(day: str, n: int) -> list[str]:
    """``n`` days ending with ``day``, clipped to the partitioned span."""
    d = date.fromisoformat(day)
    first = datetime.fromisoformat(_loaded.start).date()
    return [x.isoformat() for x in (d - timedelta(days=n - 1 - i) for i in range(n)) if x >= first]
