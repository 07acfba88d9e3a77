"""Why the serving contract is checked by our own code and not by pandera: the cost of one request.

    pip install pandera && python bench/schema_validation.py

Both check the same contract (lib/schema.py) on one row and on a day's ~1,000 rows; the ratio is
pandera's time over ``features.check_scoring_input``'s, measured in the same run.
"""

from __future__ import annotations

import json
import time
import warnings


def _per_call_ms(f, n: int) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1e3


def main() -> dict:
    warnings.filterwarnings("ignore")
    import pandera.pandas as pa

    from mlops_assets.lib import features, schema

    X = features.examples_from_source(["2013-03-01"])[features.FEATURE_COLUMNS].reset_index(drop=True)
    cols = {c: pa.Column(float, pa.Check.in_range(col.lo, col.hi), nullable=col.nullable, coerce=True)
            for c, col in schema.NUMERIC.items()}
    cols.update({c: pa.Column(str, pa.Check.str_matches(col.pattern)) for c, col in schema.CATEGORICAL.items()})
    pandera_schema = pa.DataFrameSchema(cols, strict=True)
    one = X.iloc[:1].copy()
    out = {"rows_in_day": len(X)}
    for name, frame, n in (("one_row", one, 300), ("one_day", X, 30)):
        own = _per_call_ms(lambda f=frame: features.check_scoring_input(f), n)
        pdr = _per_call_ms(lambda f=frame: pandera_schema.validate(f), n)
        out[name] = {"own_ms": round(own, 3), "pandera_ms": round(pdr, 3), "ratio": round(pdr / own, 1)}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
