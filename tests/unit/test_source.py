import os

import pandas as pd

from mlops_assets.lib import source


def test_replay_writes_outcomes_a_day_late_and_is_idempotent(tmp_path):
    land = tmp_path / "landing"
    counts = source.replay(land, "2013-01-03", "2013-01-01")
    assert sorted(p.name for p in (land / "schedules").iterdir()) == ["2013-01-01.csv", "2013-01-02.csv", "2013-01-03.csv"]
    assert sorted(p.name for p in (land / "weather").iterdir()) == ["2013-01-01.csv", "2013-01-02.csv", "2013-01-03.csv"]
    # The outcomes of the last replayed day have not landed yet.
    assert sorted(p.name for p in (land / "outcomes").iterdir()) == ["2013-01-01.csv", "2013-01-02.csv"]
    assert counts["written"] == 3 + 3 + 3 + 2

    sched = pd.read_csv(land / "schedules" / "2013-01-02.csv")
    assert not set(sched.columns) & {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"}
    out = pd.read_csv(land / "outcomes" / "2013-01-02.csv")
    assert len(out) == len(sched) and "arr_delay" in out

    mtime = os.stat(land / "schedules" / "2013-01-01.csv").st_mtime_ns
    again = source.replay(land, "2013-01-04", "2013-01-01")
    assert (land / "outcomes" / "2013-01-03.csv").exists()
    assert not (land / "outcomes" / "2013-01-04.csv").exists()
    assert again["written"] == 3  # schedules, weather of the 4th and outcomes of the 3rd
    assert os.stat(land / "schedules" / "2013-01-01.csv").st_mtime_ns == mtime


def test_replay_cli_rejects_bad_dates(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        source.main(["--until", "2013-13-01", "--landing", str(tmp_path)])
    assert "YYYY-MM-DD" in capsys.readouterr().err
