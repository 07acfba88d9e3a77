"""``mlops-serve``: the online scoring server of one registered version.

It keeps MLflow's scoring protocol and wraps MLflow's own scoring app (``mlflow.pyfunc.
scoring_server.init``) for the version: ``/ping``, ``/health``, ``/version`` and CSV or Parquet
bodies on ``/invocations`` are answered by MLflow's app as ``mlflow models serve`` answers them.
Around it, an ASGI layer of our own:

* **a byte limit** on the body (``MLOPS_SERVING_MAX_BYTES``), checked from ``Content-Length``
  before reading and while reading: HTTP 413, the body never held whole;
* **JSON bodies** (``dataframe_split`` or ``dataframe_records``, MLflow's formats) parsed and
  checked here, refusing what is ambiguous rather than guessing: duplicate keys, records that
  lack a column, keys of other formats beside it, a number in a string (``NaN``, as pandas and
  Python write a missing float, is missing, as MLflow reads it; ``Infinity`` is refused); the input contract of the model (``lib/features.py``, from ``lib/schema.py``) with
  the row limit (``MLOPS_SERVING_MAX_ROWS``). Every refusal is a 4xx naming what is wrong;
* **no 5xx for what a client sends**: an error MLflow's app answers with a 5xx on
  ``/invocations`` (it does for some malformed bodies) is answered as a 400 with its message;
* **micro-batching**: the requests that are waiting when the event loop comes round are scored
  in one call of the model's array scorer (one row costs about what eight do);
* **``/metrics``** in Prometheus format (``prometheus_client``): requests by path and status,
  latency, rows scored, contract rejections by reason, served probabilities, the model version,
  the payload log's rows written and dropped;
* **the payload log** (``lib/payload_log.py``): each answered JSON request (sampled by
  ``MLOPS_PAYLOAD_SAMPLE``) with its answer, request id and version, written in batches by a
  background thread; the ``online_predictions`` asset gathers a day of them.

One process, one event loop: scale with replicas (the Deployment's ``replicas``), which also
keeps the metrics of a pod exact without Prometheus' multiprocess mode.

    mlops-serve --model-uri models:/flight_delay/7 --port 8080
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid

from mlops_assets.lib.micro_batch import MicroBatcher
from mlops_assets.lib.online_request import Refused, parse_json_body
from mlops_assets.lib.serving_metrics import Metrics

log = logging.getLogger("mlops_assets.serve")
DELEGATED_TYPES = ("text/csv", "application/vnd.apache.parquet")  # MLflow's CONTENT_TYPE_CSV, _PARQUET
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_KNOWN_PATHS = {"/invocations", "/ping", "/health", "/version", "/metrics"}


async def _send_json(send, status: int, payload: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


def _error(code: str, message: str) -> bytes:
    """MLflow's error body: ``{"error_code": ..., "message": ...}``."""
    return json.dumps({"error_code": code, "message": message}).encode()


class ServingApp:
    """The ASGI app: our layer around MLflow's scoring app for one loaded pyfunc model."""

    def __init__(self, pyfunc_model, *, version: str, model_uri: str, max_bytes: int, max_rows: int,
                 payload_log=None):
        from mlflow.pyfunc import scoring_server

        self.pyfunc = pyfunc_model
        self.score = _scorer(pyfunc_model)
        self.mlflow_app = scoring_server.init(pyfunc_model)  # MLflow's own: everything we do not answer
        self.version = version
        self.model_uri = model_uri
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.payload_log = payload_log
        self.metrics = Metrics(version, model_uri, payload_log)
        self.batcher = MicroBatcher(self.score, on_batch=self.metrics.batch_rows.observe)
        self._version_header = (b"x-model-version", version.encode())

    # ASGI entry point
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan (and anything else): MLflow's app
            return await self.mlflow_app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
        status = [0]

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif not message.get("more_body", False):  # counted before the client can see the answer
                self.metrics.requests.labels(path=path, status=str(status[0])).inc()
                self.metrics.latency.labels(path=path).observe(time.perf_counter() - start)
            await send(message)

        if path == "/invocations" and scope["method"] == "POST":
            await self._invocations(scope, receive, tracked_send)
        elif path == "/metrics" and scope["method"] == "GET":
            await self._metrics(tracked_send)
        else:
            await self.mlflow_app(scope, receive, tracked_send)

    async def _metrics(self, send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.metrics.registry)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _refuse(self, send, exc: Refused, headers) -> None:
        for reason in exc.reasons:
            self.metrics.rejections.labels(reason=reason).inc()
        code = {413: "REQUEST_LIMIT_EXCEEDED", 415: "BAD_REQUEST"}.get(exc.status, "BAD_REQUEST")
        await _send_json(send, exc.status, _error(code, str(exc)), headers)

    async def _read_body(self, scope, receive) -> bytes | None:
        """The whole body, or :class:`Refused` (413) past the byte limit; None if the client left."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise Refused(400, ["unreadable_body"], "Content-Length is not a number") from None
                if declared > self.max_bytes:
                    raise Refused(413, ["too_large"], f"the body has {declared} bytes, more than the "
                                                      f"{self.max_bytes} allowed (MLOPS_SERVING_MAX_BYTES)")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise Refused(413, ["too_large"], f"the body is more than the {self.max_bytes} bytes allowed "
                                                  "(MLOPS_SERVING_MAX_BYTES)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _request_id(self, scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")
                if _REQUEST_ID.match(rid):
                    return rid
        return uuid.uuid4().hex

    async def _invocations(self, scope, receive, send) -> None:
        received = time.time()
        rid = self._request_id(scope)
        headers = [(b"x-request-id", rid.encode()), self._version_header]
        try:
            body = await self._read_body(scope, receive)
            if body is None:
                return
            ctype = ""
            for name, value in scope["headers"]:
                if name == b"content-type":
                    ctype = value.decode("latin-1")
            mime, _, params = ctype.partition(";")
            mime = mime.strip().lower()
            if mime in DELEGATED_TYPES:
                return await self._delegate(scope, body, send, headers)
            if mime != "application/json":
                raise Refused(415, ["unsupported_media_type"], f"Content-Type {ctype!r}: send application/json "
                                                               "(or MLflow's text/csv, application/vnd.apache.parquet)")
            charset = params.strip().lower()
            if charset and charset.replace(" ", "") not in ("charset=utf-8", "charset=\"utf-8\""):
                raise Refused(415, ["unsupported_media_type"], f"Content-Type {ctype!r}: only UTF-8 is read")
            try:
                rows = parse_json_body(body, self.max_rows)
            except Refused:
                raise
            except Exception as exc:  # a body our parser did not foresee: still the client's, and logged
                log.exception("request %s: the JSON parser failed", rid)
                raise Refused(400, ["parser_error"], f"the body could not be read ({type(exc).__name__}); "
                                                     "send MLflow's dataframe_split or dataframe_records") from None
        except Refused as exc:
            return await self._refuse(send, exc, headers)
        probs = await self.batcher(rows)
        out = ('{"predictions": [' + ", ".join('{"delay_probability": %r}' % float(p) for p in probs) + "]}").encode()
        self.metrics.rows.inc(len(probs))
        self.metrics.observe_probabilities(probs)
        if self.payload_log is not None:
            self.payload_log.record(rid, received, rows, probs)
        await _send_json(send, 200, out, headers)

    async def _delegate(self, scope, body: bytes, send, headers) -> None:
        """MLflow's app answers a CSV or Parquet body (the body already read and within the limit);
        a 5xx it gives for what the client sent is answered as a 400 with its message."""
        sent = [False]

        async def replay():
            if sent[0]:
                return {"type": "http.disconnect"}
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        start: dict = {}
        parts: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                parts.append(message.get("body", b""))

        await self.mlflow_app(scope, replay, capture)
        status = start.get("status", 500)
        payload = b"".join(parts)
        if status >= 400:  # in our error format, whatever MLflow's app wrote (it writes text/plain for 415)
            msg = payload.decode("utf-8", "replace")
            try:
                msg = json.loads(msg).get("message", msg)
            except (ValueError, AttributeError):
                pass
            if status >= 500:  # what the client sent could not be read: not the server's failure
                return await self._refuse(send, Refused(400, ["unreadable_body"],
                                                        f"the body could not be scored: {msg}"[:2000]), headers)
            return await self._refuse(send, Refused(status, ["refused_by_mlflow"], str(msg)[:2000]), headers)
        if status == 200:
            try:
                probs = [p["delay_probability"] for p in json.loads(payload)["predictions"]]
                self.metrics.rows.inc(len(probs))
                self.metrics.observe_probabilities(probs)
            except (ValueError, KeyError, TypeError):
                pass
        hdrs = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({"type": "http.response.start", "status": status,
                    "headers": hdrs + [(b"content-length", str(len(payload)).encode()), *headers]})
        await send({"type": "http.response.body", "body": payload})


def _scorer(pyfunc_model):
    """rows (a checked ``ScoringInput``) -> probabilities: our model's array path, or, for any
    other pyfunc, its own ``predict`` on the rows as a DataFrame."""
    import numpy as np

    try:
        inner = pyfunc_model.unwrap_python_model()
    except Exception:  # noqa: BLE001  (not a PythonModel)
        inner = None
    if hasattr(inner, "score"):  # FlightDelayModel
        return inner.score

    def via_predict(rows):
        out = pyfunc_model.predict(rows.frame())
        col = out["delay_probability"] if hasattr(out, "columns") else out
        return np.asarray(col, dtype="float64").reshape(-1)

    return via_predict


def resolve_version(model_uri: str) -> str:
    """The registered version a ``models:/name/N`` or ``models:/name@alias`` URI names."""
    m = re.match(r"^models:/([^/@]+)(?:/(\d+)|@([\w-]+))$", model_uri)
    if not m:
        return "unregistered"
    if m.group(2):
        return m.group(2)
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(m.group(1), m.group(3)).version)


def build_app(model_uri: str, *, payload_log_uri: str | None = None, settings=None) -> ServingApp:
    """Load the version and build the app (the payload log on unless ``payload_log_uri == ""``)."""
    import mlflow.pyfunc

    from mlops_assets.lib import tracking
    from mlops_assets.lib.payload_log import PayloadLog
    from mlops_assets.settings import get_settings

    s = settings or get_settings()
    tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
    version = resolve_version(model_uri)
    # pin the version: an alias that moves while this process serves must not change what it says
    uri = re.sub(r"@[\w-]+$", f"/{version}", model_uri) if version != "unregistered" else model_uri
    pyfunc = mlflow.pyfunc.load_model(uri)
    root = s.payload_log_uri if payload_log_uri is None else payload_log_uri
    plog = PayloadLog(root, version=version, sample=s.payload_sample, flush_s=s.payload_flush_s) if root else None
    return ServingApp(pyfunc, version=version, model_uri=uri, max_bytes=s.serving_max_bytes,
                      max_rows=s.serving_max_rows, payload_log=plog)


def _preload() -> None:
    """What loading and serving a version imports, before the version is known (``--model-uri -``)."""
    import mlflow.pyfunc  # noqa: F401
    import sklearn.compose  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from mlflow.pyfunc import scoring_server  # noqa: F401

    import mlops_assets.lib.serving_model  # noqa: F401
    import mlops_assets.lib.tracking  # noqa: F401


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="mlops-serve", description="Serve one registered version of flight_delay.")
    ap.add_argument("--model-uri", required=True,
                    help="models:/flight_delay/N or models:/flight_delay@champion; '-': import first, then read "
                         "the URI from stdin (infra validation starts the server while the version is registered)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--fd", type=int, default=None,
                    help="serve on this already bound and listening TCP socket (inherited file descriptor) "
                         "instead of --host/--port: whoever started the process chose the port, and nothing "
                         "can take it between that choice and the bind (infra validation, benchmarks)")
    ap.add_argument("--no-payload-log", action="store_true", help="record nothing (default: MLOPS_PAYLOAD_LOG_URI)")
    args = ap.parse_args(argv)
    # one process per core: OpenMP's thread team costs more than it gives on one-row batches
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    if args.model_uri == "-":
        _preload()
        args.model_uri = sys.stdin.readline().strip()
        if not args.model_uri:
            return 0  # the caller closed stdin without a version: nothing to serve
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(args.model_uri, payload_log_uri="" if args.no_payload_log else None)
    app.score(_warm_rows())  # the first call builds the array scorer: not a client's wait
    from mlops_assets.lib.serving_model import _freeze_heap

    _freeze_heap()  # what it loaded stays out of the collector's full passes (lib/serving_model.py)
    sockets = None
    where = f"{args.host}:{args.port}"
    if args.fd is not None:
        import socket

        sockets = [socket.socket(fileno=args.fd)]  # family and type read from the descriptor
        where = "%s:%d" % sockets[0].getsockname()[:2]
    log.info("serving v%s (%s) on %s; payload log %s", app.version, app.model_uri, where,
             app.payload_log.location.root if app.payload_log else "off")
    try:
        config = uvicorn.Config(app, host=args.host, port=args.port, http="httptools", loop="uvloop", lifespan="off",
                                access_log=False, log_level="warning", timeout_keep_alive=30)
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        if app.payload_log is not None:
            app.payload_log.close()
    return 0


def _warm_rows():
    """One valid row (every value in range) for the first call of the model."""
    import numpy as np

    from mlops_assets.lib import schema
    from mlops_assets.lib.features import ScoringInput

    cats = [np.array(["AA"], dtype=object), np.array(["JFK"], dtype=object), np.array(["LAX"], dtype=object)]
    nums = np.array([[max(col.lo, min(col.hi, (col.lo + col.hi) / 2)) for col in schema.NUMERIC.values()]])
    return ScoringInput(cats, nums)


if __name__ == "__main__":
    raise SystemExit(main())
