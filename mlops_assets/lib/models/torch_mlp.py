"""A PyTorch MLP for tabular data with categorical embeddings, as a scikit-learn classifier.

Input: a matrix whose first ``n_categorical`` columns are ordinal codes (-1 = unknown/missing)
and whose other columns are scaled numbers (the pipeline's ``features`` step makes it).

Training keeps the whole table on the device and draws mini-batches with ``torch.randperm``:
no ``DataLoader``, no per-batch host-to-device copies (3-100x faster on tabular data).  It trains
on ``cuda`` when available, else on the CPU, and is deterministic for a seed on a given device.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

log = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _build_module(cardinalities, n_numeric, embed_dim, hidden, dropout):
    import torch
    from torch import nn

    class Dropout(nn.Module):
        """``nn.Dropout``'s inverted dropout with its mask drawn by ``torch.rand_like``: the same
        distribution, and on the CPU half the time of the ``bernoulli_`` that ``nn.Dropout`` calls
        (370 -> 185 us for a 1024 x 64 batch; ``bernoulli_`` was a fifth of a training step, bench
        B4's profile under ``torch.profiler``). No parameters: saved models load as before."""

        def __init__(self, p: float):
            super().__init__()
            self.p = float(p)

        def forward(self, x):
            if not self.training or self.p <= 0.0:
                return x
            return x * (torch.rand_like(x) >= self.p).to(x.dtype) * (1.0 / (1.0 - self.p))

    class TabularMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = nn.ModuleList(nn.Embedding(c, embed_dim) for c in cardinalities)
            width = embed_dim * len(cardinalities) + n_numeric
            self.body = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), Dropout(dropout),
                nn.Linear(hidden, max(8, hidden // 2)), nn.ReLU(),
                nn.Linear(max(8, hidden // 2), 1),
            )

        def forward(self, cats, nums):
            parts = [emb(cats[:, i]) for i, emb in enumerate(self.embeddings)]
            return self.body(torch.cat(parts + [nums], dim=1)).squeeze(1)

    return TabularMLP()


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, n_categorical=3, hidden=64, lr=3e-3, epochs=6, embed_dim=4, dropout=0.1,
                 batch_size=1024, weight_decay=1e-5, seed=0, device=None, use_dataloader=False):
        self.n_categorical = n_categorical
        self.hidden = hidden
        self.lr = lr
        self.epochs = epochs
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device
        self.use_dataloader = use_dataloader  # the slow baseline, for benchmarks only

    # --- helpers ---------------------------------------------------------------------------
    def _split(self, X, torch, device):
        X = np.asarray(X, dtype=np.float32)
        k = self.n_categorical
        cats = np.nan_to_num(X[:, :k], nan=-1.0).astype(np.int64) + 1  # -1 (unknown) -> 0
        if hasattr(self, "cardinalities_"):
            cats = np.minimum(cats, np.asarray(self.cardinalities_) - 1)
            cats = np.where(cats < 0, 0, cats)
        nums = np.nan_to_num(X[:, k:], nan=0.0)
        return (torch.as_tensor(cats, device=device), torch.as_tensor(nums, device=device))

    def _module(self, device):
        import torch

        mod = getattr(self, "_module_cache", None)
        if mod is None or getattr(self, "_module_device", None) != device:
            mod = _build_module(self.cardinalities_, self.n_numeric_, self.embed_dim, self.hidden, self.dropout)
            mod.load_state_dict({k: torch.as_tensor(v) for k, v in self.state_dict_.items()})
            mod.to(device).eval()
            self._module_cache, self._module_device = mod, device
        return mod

    # --- sklearn API -----------------------------------------------------------------------
    def fit(self, X, y):
        import torch

        device = pick_device(self.device)
        torch.manual_seed(self.seed)
        gen = torch.Generator(device=device).manual_seed(self.seed)
        y = np.asarray(y, dtype=np.float32)
        X = np.asarray(X, dtype=np.float32)
        k = self.n_categorical
        codes = np.nan_to_num(X[:, :k], nan=-1.0).astype(np.int64) + 1
        self.cardinalities_ = [int(codes[:, i].max()) + 2 for i in range(k)]
        self.n_numeric_ = X.shape[1] - k
        self.classes_ = np.array([0, 1])
        cats, nums = self._split(X, torch, device)
        target = torch.as_tensor(y, device=device)
        model = _build_module(self.cardinalities_, self.n_numeric_, self.embed_dim, self.hidden, self.dropout).to(device)
        # fused: one kernel per step for all parameters (CPU and CUDA), not a loop of small ones
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                fused=device.split(":")[0] in ("cpu", "cuda"))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        n = len(y)
        t0 = time.perf_counter()
        self.loss_curve_ = []
        for epoch in range(self.epochs):
            model.train()
            total = 0.0
            if self.use_dataloader:
                ds = torch.utils.data.TensorDataset(cats, nums, target)
                cpu_gen = torch.Generator().manual_seed(self.seed + epoch)  # DataLoader samples on the host
                batches = torch.utils.data.DataLoader(ds, batch_size=self.batch_size, shuffle=True, generator=cpu_gen)
            else:
                perm = torch.randperm(n, device=device, generator=gen)
                batches = ((cats[idx], nums[idx], target[idx])
                           for idx in (perm[i:i + self.batch_size] for i in range(0, n, self.batch_size)))
            for bc, bn, bt in batches:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(bc, bn), bt)
                loss.backward()
                opt.step()
                total += loss.detach() * len(bt)
            epoch_loss = float(total) / max(1, n)
            self.loss_curve_.append(epoch_loss)
            log.info("torch_mlp epoch %d/%d loss=%.4f device=%s", epoch + 1, self.epochs, epoch_loss, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        self.fit_seconds_ = time.perf_counter() - t0
        self.train_rows_per_s_ = n * self.epochs / max(self.fit_seconds_, 1e-9)
        self.device_ = device
        self.state_dict_ = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        self._module_cache, self._module_device = None, None
        return self

    def predict_proba(self, X):
        import torch

        device = pick_device(self.device if self.device != "cuda" or torch.cuda.is_available() else "cpu")
        mod = self._module(device)
        cats, nums = self._split(X, torch, device)
        out = []
        with torch.inference_mode():
            for i in range(0, len(cats), 65536):
                out.append(torch.sigmoid(mod(cats[i:i + 65536], nums[i:i + 65536])).cpu().numpy())
        p = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        p = p.astype(np.float64)
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_module_cache", None)
        state.pop("_module_device", None)
        return state
