import numpy as np

from mlops_assets.lib.models.torch_mlp import TorchMLPClassifier


def toy(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 4, n)
    x = rng.normal(0, 1, (n, 3))
    logits = 3.0 * x[:, 0] - 2.0 * x[:, 1] + np.where(cat == 2, 2.5, -0.5)
    y = (logits > 0).astype(int)
    return np.column_stack([cat, x]).astype(np.float32), y


def test_learns_a_separable_problem():
    from sklearn.metrics import roc_auc_score

    X, y = toy()
    Xt, yt = toy(seed=1)
    m = TorchMLPClassifier(n_categorical=1, hidden=32, epochs=15, lr=1e-2, device="cpu").fit(X, y)
    p = m.predict_proba(Xt)[:, 1]
    assert roc_auc_score(yt, p) > 0.97
    assert (m.predict(Xt) == yt).mean() > 0.9
    assert m.loss_curve_[-1] < m.loss_curve_[0] * 0.5
    assert m.device_ == "cpu" and m.train_rows_per_s_ > 0


def test_deterministic_under_a_seed_and_picklable():
    import pickle

    X, y = toy(1000)
    a = TorchMLPClassifier(n_categorical=1, epochs=2, seed=3, device="cpu").fit(X, y).predict_proba(X)
    b_model = TorchMLPClassifier(n_categorical=1, epochs=2, seed=3, device="cpu").fit(X, y)
    np.testing.assert_array_equal(a, b_model.predict_proba(X))
    c = TorchMLPClassifier(n_categorical=1, epochs=2, seed=4, device="cpu").fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)
    clone = pickle.loads(pickle.dumps(b_model))
    np.testing.assert_allclose(clone.predict_proba(X), a, rtol=1e-6)


def test_unknown_categories_at_predict_time_do_not_crash():
    X, y = toy(500)
    m = TorchMLPClassifier(n_categorical=1, epochs=1, device="cpu").fit(X, y)
    X2 = X.copy()
    X2[:, 0] = 99  # a category never seen in training
    X2[:5, 0] = -1  # unknown (the encoder's value)
    p = m.predict_proba(X2)[:, 1]
    assert np.all((p >= 0) & (p <= 1))
