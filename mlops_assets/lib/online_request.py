"""An online scoring request, as MLflow's JSON protocol carries it, read into checked rows (no
Dagster, no web framework: ``mlops-serve`` calls it, and so can a test or a notebook).

MLflow's formats ``dataframe_split`` and ``dataframe_records`` are read; what is ambiguous is
refused rather than guessed: duplicate keys, records that lack a column (a missing value is
``null``, never an absent key), keys of other formats beside it, a number in a string. ``NaN``, as
pandas and Python's json write a missing float and MLflow's server reads it, is a missing value;
``Infinity`` parses and the contract refuses it. Then the model's input contract
(:func:`mlops_assets.lib.features.check_scoring_rows`, from ``lib/schema.py``) with the row limit.
"""

from __future__ import annotations

import json

from mlops_assets.lib.features import FEATURE_COLUMNS, InputError, check_scoring_rows

JSON_FORMATS = ("dataframe_split", "dataframe_records")
OTHER_FORMATS = ("instances", "inputs")  # MLflow's tensor formats: not this model's


class Refused(Exception):
    """A request answered with a 4xx: ``status``, the rejection ``reasons`` and the message."""

    def __init__(self, status: int, reasons: list[str], message: str):
        super().__init__(message)
        self.status = status
        self.reasons = reasons


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise Refused(400, ["ambiguous"], f"the JSON body repeats key(s) {dup[:5]}: which value is meant?")
    return dict(pairs)


def parse_json_body(body: bytes, max_rows: int):
    """The checked rows (``ScoringInput``) of an MLflow JSON scoring body, or :class:`Refused`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(400, ["not_json"], f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        # NaN (what pandas and Python's json write for a missing float, and MLflow's server reads)
        # is a missing value; Infinity parses, and the contract refuses it as not finite
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except Refused:
        raise
    except RecursionError:
        raise Refused(400, ["not_json"], "the JSON body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() of an integer over 4,300 digits
        raise Refused(400, ["not_json"], f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Refused(400, ["unsupported_format"], "the body must be a JSON object with 'dataframe_split' "
                                                   "or 'dataframe_records'")
    given = [k for k in doc if k in JSON_FORMATS]
    other = [k for k in doc if k not in JSON_FORMATS]
    if [k for k in doc if k in OTHER_FORMATS] and not given:
        raise Refused(400, ["unsupported_format"], "this model takes 'dataframe_split' or 'dataframe_records', "
                                                   f"not {[k for k in doc if k in OTHER_FORMATS]}")
    if len(given) != 1 or other:
        raise Refused(400, ["ambiguous"], f"the body must hold exactly one of {list(JSON_FORMATS)} and nothing "
                                          f"else; it holds {list(doc)[:10]}")
    payload = doc[given[0]]
    if given[0] == "dataframe_split":
        if not isinstance(payload, dict):
            raise Refused(400, ["unsupported_format"], "'dataframe_split' must be an object with 'columns' and 'data'")
        extra = [k for k in payload if k not in ("columns", "data", "index")]
        if extra or "columns" not in payload or "data" not in payload:
            raise Refused(400, ["unsupported_format"], "'dataframe_split' must hold 'columns' and 'data' (and "
                                                       f"optionally 'index'); it holds {list(payload)[:10]}")
        columns, data = payload["columns"], payload["data"]
        index = payload.get("index")
        if index is not None and not (isinstance(index, list) and isinstance(data, list) and len(index) == len(data)):
            raise Refused(400, ["ambiguous"], "'index' must list one label per row of 'data'")
    else:
        if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
            raise Refused(400, ["unsupported_format"], "'dataframe_records' must be a list of objects")
        columns = list(FEATURE_COLUMNS)
        odd = [i for i, r in enumerate(payload) if len(r) != len(columns) or any(c not in r for c in columns)]
        if odd and len(payload) <= max_rows:
            r = payload[odd[0]]
            raise Refused(400, ["missing_column" if any(c not in r for c in columns) else "unexpected_column"],
                          f"record {odd[0]} must hold exactly the columns {columns}: missing "
                          f"{[c for c in columns if c not in r][:10]}, unexpected {[c for c in r if c not in columns][:10]} "
                          f"({len(odd)} record(s) differ); a missing value is null, never an absent key")
        data = [[r.get(c) for c in columns] for r in payload] if len(payload) <= max_rows else payload
    try:
        return check_scoring_rows(columns, data, max_rows=max_rows)
    except InputError as exc:
        raise Refused(400, exc.reasons, f"bad scoring input: {exc}") from None


def rejection_reasons() -> tuple[str, ...]:
    """Every reason a request can be refused for (the metrics show each, at 0 until it happens)."""
    return ("too_large", "not_json", "unsupported_format", "ambiguous", "unsupported_media_type",
            "unreadable_body", "refused_by_mlflow", "parser_error", *InputError.REASONS)
