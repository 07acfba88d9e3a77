"""The scoring server's Prometheus metrics (``prometheus_client``; no Dagster): requests by path and
status, latency, rows scored, rejections by reason, served probabilities, the model version, rows
per model call and the payload log's counters. One registry per server (tests build several)."""

from __future__ import annotations

from mlops_assets.lib.online_request import rejection_reasons

PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Distribution:
    """The served probabilities as a Prometheus histogram, counted a batch at a time with NumPy
    (``Histogram.observe`` in a loop costs ~3 us a row: 30 ms for a 10,000-row request)."""

    def __init__(self, name: str, doc: str, bounds):
        import numpy as np

        self.name, self.doc = name, doc
        self.bounds = np.asarray(bounds, dtype="float64")
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # the last: above the last bound (+Inf)
        self.sum = 0.0

    def observe(self, values) -> None:
        import numpy as np

        v = np.asarray(values, dtype="float64")
        self.counts += np.bincount(np.searchsorted(self.bounds, v, side="left"), minlength=len(self.counts))
        self.sum += float(v.sum())

    def collect(self):
        from prometheus_client.core import HistogramMetricFamily

        cum = self.counts.cumsum()
        buckets = [(f"{b:g}", int(c)) for b, c in zip(self.bounds, cum)] + [("+Inf", int(cum[-1]))]
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)


class _PayloadCounters:
    """The payload log's own counters, read when scraped."""

    def __init__(self, payload_log):
        self.payload_log = payload_log

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        pl = self.payload_log
        yield CounterMetricFamily("mlops_serving_payload_rows_written", "rows written to the payload log",
                                  value=pl.rows_written)
        yield CounterMetricFamily("mlops_serving_payload_rows_dropped",
                                  "rows the payload log could not keep (queue full or store down)",
                                  value=pl.rows_dropped)


class Metrics:
    def __init__(self, version: str, model_uri: str, payload_log=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("mlops_serving_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=r)
        self.latency = Histogram("mlops_serving_request_duration_seconds", "time to answer a request, by path",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=r)
        self.rows = Counter("mlops_serving_rows_scored", "rows scored", registry=r)
        self.rejections = Counter("mlops_serving_rejections", "requests refused, by reason", ["reason"], registry=r)
        self.probability = _Distribution("mlops_serving_delay_probability", "served delay probabilities (one per row)",
                                         PROBABILITY_BUCKETS)
        r.register(self.probability)
        self.info = Gauge("mlops_serving_model_info", "the model version served (value 1)",
                          ["version", "model_uri"], registry=r)
        self.info.labels(version=version, model_uri=model_uri).set(1)
        self.batch_rows = Histogram("mlops_serving_batch_rows", "rows per call of the model (micro-batches)",
                                    buckets=(1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384), registry=r)
        if payload_log is not None:
            r.register(_PayloadCounters(payload_log))
        for reason in rejection_reasons():  # every reason shows, at 0, before it first happens
            self.rejections.labels(reason=reason)

    def observe_probabilities(self, p) -> None:
        self.probability.observe(p)
