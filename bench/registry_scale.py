"""Does the registry's cost grow with its history? Times the calls the platform makes per
training and per scoring run (register a version with its ~20 tags, read an alias, move
``champion``, load a version's tags) on a fresh SQLite store with 1 version, then with 50, 100
and 200, each the median of several calls. Prints a table and one JSON line.

    python bench/registry_scale.py [--sizes 1,50,100,200] [--repeats 5]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,50,100,200")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    sizes = sorted(int(x) for x in args.sizes.split(","))

    import mlflow
    from mlflow import MlflowClient

    from mlops_assets.lib import registry, tracking
    from mlops_assets.settings import MODEL_NAME

    home = Path(tempfile.mkdtemp(prefix="mlops-registry-"))
    tracking.configure(f"sqlite:///{home / 'mlflow.db'}?timeout=60", (home / "artifacts").as_uri())
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_text("x", "model/placeholder.txt")
    source = f"runs:/{run.info.run_id}/model"
    tags = {f"tag_{i}": f"value {i}" for i in range(20)}

    def timed(fn) -> float:
        out = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return statistics.median(out) * 1000

    results = []
    have = 0
    for n in sizes:
        while have < n:
            registry.register(source, {**tags, "mlflow_run_id": run.info.run_id})
            have += 1
        latest = str(have)
        registry.set_alias(registry.CHAMPION, latest)  # every size reads an alias that exists
        row = {"versions": n,
               "register_ms": timed(lambda: registry.register(source, {**tags, "mlflow_run_id": run.info.run_id})),
               "alias_read_ms": timed(lambda: registry.alias_version(registry.CHAMPION)),
               "move_champion_ms": timed(lambda: registry.set_alias(registry.CHAMPION, latest)),
               "version_tags_ms": timed(lambda: client.get_model_version(MODEL_NAME, latest).tags)}
        have += args.repeats  # the register timings added versions too
        results.append(row)
        print(f"{n:>5} versions: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "versions"))
    base = results[0]
    ratios = {k: results[-1][k] / base[k] for k in base if k != "versions"}
    print("RESULT " + json.dumps({"rows": results, "largest_over_smallest": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
