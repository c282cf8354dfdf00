"""Uncertainty of the reported numbers: score intervals, bootstrap intervals, the standard error of a ROC-AUC.

With a few dozen items a benchmark accuracy moves by several points between equally good judges, so every headline
number in a report carries an interval. Three tools, each from its public source:

- `wilson_interval`: the binomial score interval (E. B. Wilson, "Probable inference, the law of succession, and
  statistical inference", JASA 22, 1927). Unlike the normal (Wald) interval it stays inside [0, 1] and does not
  collapse to zero width at 0 or n successes, which small evaluation sets hit often.
- `bootstrap_interval`: the percentile bootstrap over items (B. Efron, "Bootstrap methods: another look at the
  jackknife", Ann. Statist. 7, 1979; Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13). It needs
  no formula for the statistic, so it serves every benchmark's official metric alike (weighted section means,
  macro-averages over scenarios, ROC-AUC), recomputed on each resample of the items.
- `auc_standard_error`: the standard error of a ROC-AUC from its value and the class counts (J. A. Hanley and
  B. J. McNeil, "The meaning and use of the area under a receiver operating characteristic (ROC) curve",
  Radiology 143, 1982, eq. 2), cheap enough to report wherever an AUC is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np


def z_value(confidence: float = 0.95) -> float:
  """The two-sided standard normal quantile of `confidence` (1.959964 at 0.95)."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
  """(lo, hi) Wilson score interval of a binomial proportion successes / n; (nan, nan) for n = 0.

  `successes` may be fractional: a tie-expected count (an item counted 1/m for an m-way tie) is such a sum.
  """
  if n <= 0:
    return float("nan"), float("nan")
  if not 0.0 <= successes <= n:
    raise ValueError(f"successes must be in [0, n={n}], got {successes}")
  z = z_value(confidence)
  p = successes / n
  z2n = z * z / n
  denom = 1.0 + z2n
  center = (p + z2n / 2.0) / denom
  half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / denom
  # At p = 0 (p = 1) the lower (upper) end is exactly 0 (1) in exact arithmetic; floats miss it by ~1e-17.
  lo = 0.0 if successes == 0 else max(0.0, center - half)
  hi = 1.0 if successes == n else min(1.0, center + half)
  return lo, hi


def bootstrap_interval(
  statistic: Callable[[np.ndarray], float],
  n_items: int,
  seed: int,
  resamples: int = 1000,
  confidence: float = 0.95,
) -> tuple[float, float]:
  """(lo, hi) percentile bootstrap interval of `statistic(indices) -> float` over `n_items` items.

  Each resample draws n_items indices uniformly with replacement (`numpy.random.default_rng(seed)`, so the same
  seed gives the same interval, and two statistics bootstrapped with one seed see the same resampled items: a paired
  comparison). A resample whose statistic is not finite (e.g. a ROC-AUC whose resample lacks a class) is dropped;
  (nan, nan) when none is finite, or for n_items = 0 or resamples = 0.
  """
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  if n_items <= 0 or resamples <= 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  values = np.array([float(statistic(rng.integers(0, n_items, n_items))) for _ in range(int(resamples))])
  values = values[np.isfinite(values)]
  if not values.size:
    return float("nan"), float("nan")
  alpha = 1.0 - confidence
  lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
  return float(lo), float(hi)


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
  """Hanley & McNeil (1982) standard error of a ROC-AUC `auc` from n_pos positives and n_neg negatives.

  SE^2 = (A(1-A) + (n_pos - 1)(Q1 - A^2) + (n_neg - 1)(Q2 - A^2)) / (n_pos n_neg), Q1 = A / (2 - A),
  Q2 = 2A^2 / (1 + A): the exponential-score approximation of the Mann-Whitney variance. NaN when the AUC is
  undefined (a class is empty).
  """
  if n_pos <= 0 or n_neg <= 0 or not math.isfinite(auc):
    return float("nan")
  a = float(auc)
  q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
  var = (a * (1.0 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
  return math.sqrt(max(var, 0.0))
