"""The lake and landing zone on a real S3 store, seen from a long-lived process (a code server):
files another process lands after the first look are seen, and so are partitions it writes."""

import os



def test_a_long_lived_process_sees_what_others_land(services, tmp_path, monkeypatch):
    for k, v in services.store.env().items():
        monkeypatch.setenv(k, v)
    from mlops_assets.lib.storage import Location

    loc = Location("s3://landing/long-lived")
    loc.write_bytes("schedules/2013-01-01.csv", b"a\n")
    assert list(loc.fingerprints("schedules", ".csv", {})) == ["schedules/2013-01-01.csv"]
    assert not loc.exists("schedules/2013-01-02.csv")
    # another process (the source system) lands the next day
    services.store.client().put_object(Bucket="landing", Key="long-lived/schedules/2013-01-02.csv", Body=b"b\n")
    assert list(loc.fingerprints("schedules", ".csv", {})) == ["schedules/2013-01-01.csv", "schedules/2013-01-02.csv"]
    assert loc.exists("schedules/2013-01-02.csv") and loc.list("schedules", ".csv")[-1].endswith("2013-01-02.csv")
    assert os.environ["AWS_ENDPOINT_URL"] == services.store.endpoint
