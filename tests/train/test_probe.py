"""The logistic probe against an independent Newton solver, and the invariances its design promises."""

import numpy as np
import pytest

from grm_jax.train.probe import fit_logistic


def _data(n=120, h=6, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, h)) * rng.uniform(0.1, 20.0, size=h) + rng.normal(size=h) * 5
  y = (x[:, 0] / x[:, 0].std() - x[:, 1] / x[:, 1].std() + rng.normal(size=n)) > 0.3
  return x, y


def _newton(x, y, w, l2, iters=50):
  """Weighted L2 logistic regression on standardised features by Newton's method (IRLS)."""
  z = (x - x.mean(0)) / x.std(0)
  a = np.hstack([z, np.ones((len(z), 1))])
  reg = np.diag([2.0 * l2] * z.shape[1] + [0.0])
  p = np.zeros(a.shape[1])
  for _ in range(iters):
    s = 1.0 / (1.0 + np.exp(-(a @ p)))
    grad = a.T @ (w * (s - y)) / len(y) + reg @ p
    hess = (a * (w * s * (1 - s))[:, None]).T @ a / len(y) + reg
    p -= np.linalg.solve(hess, grad)
  return a @ p


@pytest.mark.parametrize("l2", [0.0, 0.01, 1.0])
def test_matches_newton_with_weights(l2):
  x, y = _data()
  w = np.where(y, 0.7, 1.9)
  kernel, bias = fit_logistic(x, y, w, l2)
  np.testing.assert_allclose(x @ kernel + bias, _newton(x, y.astype(float), w, l2), rtol=1e-3, atol=1e-3)


def test_integer_weights_equal_repeated_rows_and_scale_does_not_matter():
  x, y = _data(seed=1)
  w = np.where(y, 2.0, 1.0)
  # Unregularised: repeating rows also moves the standardisation, which only an L2 term would see.
  k1, b1 = fit_logistic(x, y, w, 0.0)
  rep = np.concatenate([np.arange(len(y)), np.flatnonzero(y)])
  k2, b2 = fit_logistic(x[rep], y[rep], None, 0.0)
  np.testing.assert_allclose(x @ k1 + b1, x @ k2 + b2, rtol=1e-3, atol=1e-3)
  k1, b1 = fit_logistic(x, y, w, 0.1)
  k3, b3 = fit_logistic(x * 1000.0 + 7.0, y, w, 0.1)
  np.testing.assert_allclose((x * 1000.0 + 7.0) @ k3 + b3, x @ k1 + b1, rtol=1e-3, atol=1e-3)


def test_a_constant_feature_and_bad_input():
  x, y = _data(seed=2)
  x[:, 3] = 4.0
  kernel, bias = fit_logistic(x, y, None, 0.1)
  assert np.isfinite(kernel).all() and np.isfinite(bias)
  with pytest.raises(ValueError, match="one class"):
    fit_logistic(x, np.ones(len(y), bool))
  with pytest.raises(ValueError, match="do not match"):
    fit_logistic(x, y[:-1])
