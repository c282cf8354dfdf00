"""Independent statements of what the sampler should do: the sampling distribution in float64
NumPy, and Pearson's chi-square goodness-of-fit test for its histograms (scipy when installed)."""

from __future__ import annotations

import math

import numpy as np

# Upper 0.1% points of the chi-square distribution (scipy.stats.chi2.isf(1e-3, dof)).
_CRITICAL_P001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322, 8: 26.124, 9: 27.877}


def critical_value_p001(dof: int) -> float:
  """The statistic above which a fit is rejected at p = 0.001."""
  try:
    from scipy import stats

    return float(stats.chi2.isf(1e-3, dof))
  except ImportError:
    if dof in _CRITICAL_P001:
      return _CRITICAL_P001[dof]
    # Wilson-Hilferty: within 1% of the exact value for dof >= 10.
    z = 3.0902
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def chi_square(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> tuple[float, int, float]:
  """(statistic, degrees of freedom, critical value at p=0.001) of observed `counts` vs `probs`.

  Bins whose expected count is below `min_expected` are pooled into one bin (and that bin into
  the smallest remaining one if it is still too small), the textbook condition for the
  chi-square approximation. A sample in a zero-probability bin is an outright failure.
  """
  counts = np.asarray(counts, np.float64)
  probs = np.asarray(probs, np.float64)
  total = counts.sum()
  impossible = counts[probs == 0].sum()
  assert impossible == 0, f"{int(impossible)} samples fell on tokens of probability 0"
  expected = probs / probs.sum() * total
  small = expected < min_expected
  obs = list(counts[~small])
  exp = list(expected[~small])
  if small.any():
    pooled_obs, pooled_exp = counts[small].sum(), expected[small].sum()
    if pooled_exp < min_expected and exp:
      i = int(np.argmin(exp))
      obs[i] += pooled_obs
      exp[i] += pooled_exp
    else:
      obs.append(pooled_obs)
      exp.append(pooled_exp)
  obs_a, exp_a = np.array(obs), np.array(exp)
  stat = float(((obs_a - exp_a) ** 2 / exp_a).sum())
  dof = len(obs_a) - 1
  assert dof >= 1, "need at least two bins with expected count >= min_expected"
  return stat, dof, critical_value_p001(dof)


def reference_sampling_probs(logits, temperature=1.0, top_k=0, top_p=1.0) -> np.ndarray:
  """Float64 NumPy statement of the sampling distribution over one logits vector: temperature,
  then the k largest (ties at the k-th value kept), then the smallest prefix by descending
  probability whose mass reaches top_p (ties with the last kept probability kept)."""
  x = np.asarray(logits, np.float64) / temperature
  if 0 < top_k < x.shape[-1]:
    kth = np.sort(x)[-top_k]
    x = np.where(x >= kth, x, -np.inf)
  probs = np.exp(x - x.max())
  probs /= probs.sum()
  if top_p < 1.0:
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    threshold = probs[order][before < top_p].min()
    probs = np.where(probs >= threshold, probs, 0.0)
    probs /= probs.sum()
  return probs
