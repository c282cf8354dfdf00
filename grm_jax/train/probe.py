"""A logistic probe: weighted, L2-regularised logistic regression of binary labels on fixed features, solved
exactly (L-BFGS on the host: a few hundred rows of a few thousand floats, where a device buys nothing).

The meta RM fits one on frozen decoder states (`stages.metarm`, `metarm.method="probe"`). Features are standardised
inside the fit so one L2 strength means the same for every layer's scale; the returned head is mapped back to the
raw features, so scoring is `features @ kernel + bias` with no extra state to keep.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


def fit_logistic(features: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
                 l2: float = 1.0) -> tuple[np.ndarray, float]:
  """(kernel [H], bias) minimising mean_i w_i * BCE(x_i . kernel + bias, y_i) + l2 * |standardised kernel|^2.

  `weights` default to 1 (pass class weights for balance); the bias is not regularised. Raises for one class only or
  a row count that does not match.
  """
  x = np.asarray(features, np.float64)
  y = np.asarray(labels, bool).astype(np.float64)
  if x.ndim != 2 or len(x) != len(y):
    raise ValueError(f"fit_logistic: features {x.shape} and labels {y.shape} do not match (want [N, H] and [N])")
  if y.min() == y.max():
    raise ValueError("fit_logistic: the labels have one class only; nothing separates")
  w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
  mean, scale = x.mean(0), x.std(0)
  scale = np.where(scale > 0, scale, 1.0)
  z = (x - mean) / scale
  n = float(len(y))

  def loss_and_grad(p):
    kernel, bias = p[:-1], p[-1]
    logits = z @ kernel + bias
    loss = np.sum(w * (np.logaddexp(0.0, logits) - y * logits)) / n + l2 * kernel @ kernel
    err = w * (0.5 * (1.0 + np.tanh(0.5 * logits)) - y) / n  # sigmoid without overflow
    return loss, np.append(z.T @ err + 2.0 * l2 * kernel, err.sum())

  p = minimize(loss_and_grad, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B",
               options={"maxiter": 1000}).x
  kernel = p[:-1] / scale
  return kernel, float(p[-1] - mean @ kernel)
