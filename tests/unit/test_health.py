import os
import time

from mlops_assets.lib.health import HealthPolicy, assess, scan_days

HOLDOUT = {"3": {"roc_auc": 0.70, "log_loss": 0.50}}
P = HealthPolicy(days=3, auc_tolerance=0.05, log_loss_tolerance=0.3, psi_threshold=0.25, drift_share=0.5)


def perf(aucs, lls=None, version="3"):
    lls = lls or [0.5] * len(aucs)
    return [{"date": f"2013-06-{10 + i:02d}", "model_version": version, "roc_auc": a, "log_loss": l}
            for i, (a, l) in enumerate(zip(aucs, lls))]


def drift(shares, n=10):
    rows = []
    for i, s in enumerate(shares):
        k = round(s * n)
        rows += [{"date": f"2013-06-{10 + i:02d}", "feature": f"f{j}", "psi": 0.5 if j < k else 0.01} for j in range(n)]
    return rows


def test_one_bad_day_is_noise_three_are_decay():
    assert not assess(perf([0.70, 0.60, 0.71]), [], HOLDOUT, P).retrain
    assert not assess(perf([0.60, 0.60, 0.66]), [], HOLDOUT, P).retrain  # 0.66 is within tolerance
    v = assess(perf([0.60, 0.62, 0.64]), [], HOLDOUT, P)
    assert v.retrain and "ROC AUC" in v.reason and "v3" in v.reason


def test_probabilities_off_is_decay_even_when_ranking_holds():
    v = assess(perf([0.70, 0.70, 0.70], [0.9, 0.8, 0.7]), [], HOLDOUT, P)
    assert v.retrain and "log loss" in v.reason
    assert not assess(perf([0.70, 0.70, 0.70], [0.9, 0.6, 0.7]), [], HOLDOUT, P).retrain


def test_broad_drift_on_every_day_triggers_narrow_drift_does_not():
    assert not assess([], drift([0.3, 0.9, 0.9]), HOLDOUT, P).retrain
    v = assess([], drift([0.6, 0.5, 0.9]), HOLDOUT, P)
    assert v.retrain and "drift" in v.reason


def test_too_few_days_or_unknown_version_decide_nothing():
    assert not assess(perf([0.5, 0.5]), drift([0.9, 0.9]), HOLDOUT, P).retrain
    assert not assess(perf([0.5, 0.5, 0.5], version="9"), [], HOLDOUT, P).retrain


def test_scan_days_needs_every_feed_and_fingerprints_content(tmp_path):
    for feed in ("schedules", "weather"):
        (tmp_path / feed).mkdir()
    (tmp_path / "schedules" / "2013-01-01.csv").write_text("a\n1\n")
    days, state = scan_days(str(tmp_path), ["schedules", "weather"], {})
    assert days == {}  # weather missing: the day is incomplete
    (tmp_path / "weather" / "2013-01-01.csv").write_text("b\n2\n")
    days, state = scan_days(str(tmp_path), ["schedules", "weather"], state)
    fp = days["2013-01-01"]
    # Touched, same content: same fingerprint.
    os.utime(tmp_path / "weather" / "2013-01-01.csv", ns=(time.time_ns(), time.time_ns() + 10**9))
    days, state = scan_days(str(tmp_path), ["schedules", "weather"], state)
    assert days["2013-01-01"] == fp
    (tmp_path / "weather" / "2013-01-01.csv").write_text("b\n3\n")
    days, _ = scan_days(str(tmp_path), ["schedules", "weather"], state)
    assert days["2013-01-01"] != fp


def test_scan_days_on_an_object_store_uri():
    import fsspec

    fs = fsspec.filesystem("memory")
    root = "memory://landing-scan-test"
    fs.pipe(f"{root}/schedules/2013-01-01.csv", b"a\n1\n")
    fs.pipe(f"{root}/weather/2013-01-01.csv", b"b\n2\n")
    fs.pipe(f"{root}/schedules/2013-01-02.csv", b"a\n1\n")
    days, state = scan_days(root, ["schedules", "weather"], {})
    assert list(days) == ["2013-01-01"]
    again, _ = scan_days(root, ["schedules", "weather"], state)
    assert again == days
    fs.pipe(f"{root}/weather/2013-01-01.csv", b"b\n9\n")
    changed, _ = scan_days(root, ["schedules", "weather"], state)
    assert changed["2013-01-01"] != days["2013-01-01"]
