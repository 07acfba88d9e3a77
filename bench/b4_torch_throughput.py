"""B4: torch MLP training throughput (rows/s), batches drawn from tensors already on the device
(``torch.randperm`` slices) against a ``torch.utils.data.DataLoader`` over the same tensors, same
model, same epochs.  Real rows: the flights of the chosen weeks, through the production
pipeline's ``features`` step; resampled to ``--rows``.

    python bench/b4_torch_throughput.py [--rows 200000] [--epochs 3] [--repeats 3] [--devices cpu,cuda]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def real_matrix(first: str, last: str, rows: int, seed: int = 0):
    import numpy as np

    from mlops_assets.lib import features, source
    from mlops_assets.lib.models import make_pipeline

    ex = features.examples_from_source(source.days_between(first, last))
    ex = ex[ex["label"].notna()]
    pre = make_pipeline("torch_mlp", {"hidden": 64, "lr": 3e-3, "epochs": 1, "embed_dim": 4, "dropout": 0.1})
    X = pre.named_steps["features"].fit_transform(features.feature_matrix(ex)).astype(np.float32)
    y = ex["label"].to_numpy(dtype=np.float32)
    idx = np.random.default_rng(seed).integers(0, len(X), rows)
    return X[idx], y[idx]


def measure(X, y, device: str, dataloader: bool, epochs: int, batch: int, hidden: int) -> float:
    from mlops_assets.lib.models.torch_mlp import TorchMLPClassifier

    m = TorchMLPClassifier(n_categorical=3, hidden=hidden, epochs=epochs, batch_size=batch, device=device,
                           use_dataloader=dataloader, seed=0)
    m.fit(X, y)
    return m.train_rows_per_s_


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--first", default="2013-01-07")
    ap.add_argument("--last", default="2013-03-03")
    args = ap.parse_args(argv)
    import torch

    t0 = time.perf_counter()
    X, y = real_matrix(args.first, args.last, args.rows)
    print(f"matrix {X.shape} from real flights {args.first}..{args.last} in {time.perf_counter() - t0:.1f}s; "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    results = {}
    for device in devices:
        measure(X[:5000], y[:5000], device, False, 1, args.batch, args.hidden)  # warm-up (CUDA init, allocator)
        for mode in ("on_device", "dataloader"):
            runs = [measure(X, y, device, mode == "dataloader", args.epochs, args.batch, args.hidden)
                    for _ in range(args.repeats)]
            results[(device, mode)] = statistics.median(runs)
    print(f"{'device':<6} {'on-device rows/s':>18} {'DataLoader rows/s':>18} {'ratio':>7}  target")
    out = {"rows": args.rows, "epochs": args.epochs, "batch": args.batch, "hidden": args.hidden}
    for device in devices:
        a, b = results[(device, "on_device")], results[(device, "dataloader")]
        target = ">= 5x" if device == "cpu" else "report"
        print(f"{device:<6} {a:>18,.0f} {b:>18,.0f} {a / b:>6.1f}x  {target}")
        out[device] = {"on_device_rows_per_s": round(a), "dataloader_rows_per_s": round(b), "ratio": round(a / b, 2)}
    if "cuda" in devices and "cpu" in devices:
        r = results[("cuda", "on_device")] / results[("cpu", "on_device")]
        print(f"GPU/CPU (on-device batches): {r:.2f}x  ({torch.cuda.get_device_name(0)})")
        out["gpu_cpu_ratio"] = round(r, 3)
        out["gpu"] = torch.cuda.get_device_name(0)
    print("JSON " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
