"""The landing zone, reconciled with the lake (no Dagster here; the landing sensor calls these).

:func:`scan` fingerprints the feed files (sha256, reused while a file's stamp and size are
unchanged).  :func:`plan` decides, for each day, which daily assets are due, from what the
latest materialisation of each asset *recorded* about its inputs (``source_sha256``, written by
the ingestion assets whoever launched them: a sensor, a backfill, the demo):

* ``raw_flights`` / ``raw_weather`` when the day's schedule and weather files are both present
  and that feed differs from what its latest ingestion read; ``flight_features`` when either is
  due or it is missing;
* ``flight_outcomes`` when the outcomes file is present, the day's features exist (or are due in
  the same run) and the outcomes (or the schedule they must match) changed;
  ``training_examples`` when either of its inputs is due or it is missing;
* ``flight_delay_predictions``, ``feature_drift`` when a model is deployed, the day lies after
  the data that model was trained on, and the day's features are due, or it was never scored
  and its outcomes are still outstanding (a day that landed before the first deployment);
* ``prediction_performance`` when the day was (or is being) scored and labelled, and either of
  those is due or its performance is missing.

Days with the same assets due are grouped into ranges of consecutive days: one run each, as
the assets' single-run backfill policy allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import date, timedelta

LANDING_ASSETS = ("raw_flights", "raw_weather", "flight_features")
OUTCOME_ASSETS = ("flight_outcomes", "training_examples")
SCORING_ASSETS = ("flight_delay_predictions", "feature_drift")
PERFORMANCE_ASSETS = ("prediction_performance",)
DAILY_ASSETS = LANDING_ASSETS + OUTCOME_ASSETS + SCORING_ASSETS + PERFORMANCE_ASSETS
SOURCE_OF = {"raw_flights": "schedules", "raw_weather": "weather", "flight_outcomes": "outcomes"}
FEEDS = ("schedules", "weather", "outcomes")


def scan(root: str, state: dict) -> tuple[dict[str, dict[str, str]], dict]:
    """The feed files under ``root`` (a folder or an fsspec URI): ({feed: {day: sha256}}, new
    state). ``state`` maps file keys to their last fingerprint (the sensor's cursor), so an
    unchanged file costs one stat, and a touched but identical one keeps its sha256."""
    from mlops_assets.lib.storage import Location

    loc = Location(root)
    files: dict[str, dict[str, str]] = {}
    new_state: dict = {}
    for feed in FEEDS:
        files[feed] = {}
        for key, fp in loc.fingerprints(feed, ".csv", state).items():
            new_state[key] = fp
            files[feed][key.rsplit("/", 1)[-1][:-4]] = fp["sha256"]
    return files, new_state


@dataclasses.dataclass(frozen=True)
class Deployment:
    """The model the serving deployment runs: it scores days after ``data_end``."""
    version: str
    data_end: str


@dataclasses.dataclass(frozen=True)
class DayState:
    """What the instance holds for a day: the ``source_sha256`` recorded by the latest
    materialisation of each ingestion asset, and which daily assets have one at all."""
    recorded: dict[str, str]
    materialised: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Group:
    assets: tuple[str, ...]
    days: tuple[str, ...]

    @property
    def first(self) -> str:
        return self.days[0]

    @property
    def last(self) -> str:
        return self.days[-1]


def due_assets(day: str, files: dict[str, dict[str, str]], state: DayState,
               deployment: Deployment | None) -> tuple[str, ...]:
    """The daily assets due for ``day`` (see the module's docstring), in graph order: only those
    whose inputs changed or that are missing, so nothing is recomputed from unchanged inputs."""
    sched, weather, outcomes = (files.get(f, {}).get(day) for f in FEEDS)
    have, rec = state.materialised, state.recorded
    due: set[str] = set()
    if sched and weather:
        if rec.get("raw_flights") != sched:
            due.add("raw_flights")
        if rec.get("raw_weather") != weather:
            due.add("raw_weather")
        if due or "flight_features" not in have:
            due.add("flight_features")
    has_features = "flight_features" in due or "flight_features" in have
    if outcomes and has_features:
        if rec.get("flight_outcomes") != outcomes or "raw_flights" in due:
            due.add("flight_outcomes")
        if due & {"flight_outcomes", "flight_features"} or "training_examples" not in have:
            due.add("training_examples")
    # A prediction is made when the day is processed, by the model deployed then; a day that
    # landed before any model was deployed is scored once one is, while its outcomes are still
    # outstanding (after that it would be a backtest, not a live prediction).
    fresh = "flight_features" in due
    if deployment is not None and day > deployment.data_end and has_features and (fresh or not outcomes):
        if fresh or "flight_delay_predictions" not in have:
            due.add("flight_delay_predictions")
        if fresh or "feature_drift" not in have:
            due.add("feature_drift")
    scored = "flight_delay_predictions" in due or "flight_delay_predictions" in have
    labelled = "training_examples" in due or "training_examples" in have
    if scored and labelled and (due & {"flight_delay_predictions", "training_examples"}
                                or "prediction_performance" not in have):
        due.add("prediction_performance")
    return tuple(a for a in DAILY_ASSETS if a in due)


def plan(days: Iterable[str], files: dict[str, dict[str, str]], states: dict[str, DayState],
         deployment: Deployment | None, *, busy: Iterable[str] = ()) -> list[Group]:
    """Runs to request: consecutive days with the same assets due, grouped (``busy`` days, which
    a run in flight already targets, wait for it)."""
    busy = set(busy)
    groups: list[Group] = []
    cur_assets, cur_days, prev = None, [], None
    for day in sorted(set(days)):
        assets = () if day in busy else due_assets(day, files, states.get(day, DayState({}, frozenset())),
                                                   deployment)
        contiguous = prev is not None and date.fromisoformat(day) - date.fromisoformat(prev) == timedelta(days=1)
        if assets and assets == cur_assets and contiguous:
            cur_days.append(day)
        else:
            if cur_assets:
                groups.append(Group(cur_assets, tuple(cur_days)))
            cur_assets, cur_days = (assets, [day]) if assets else (None, [])
        prev = day
    if cur_assets:
        groups.append(Group(cur_assets, tuple(cur_days)))
    return groups


def days_of_range(first: str, last: str) -> list[str]:
    d0, d1 = date.fromisoformat(first), date.fromisoformat(last)
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]
