"""How often a claims interval covers the true difference: a simulation of the science run's design.

Each simulated run has S seeds; each seed judges its own `items` held-out items (fresh draws, as each seed of
experiments/science.py subsamples its own), every item scored 0/1 by system A and by system B. B is right with
probability `p_b`; A with probability `p_a` + `spread` * z_s at seed s (z_s standard normal, clipped to [0, 1]): the
training run moves A's accuracy from seed to seed with standard deviation `spread`, so the true difference is
E[clip(p_a + spread z, 0, 1)] - p_b (exact, `true_difference`). An interval method gets the per-item differences A - B
of every seed and returns (lo, hi); coverage is the share of simulated runs whose interval holds the true difference.

  python -m grm_jax.eval.coverage     # the README table: each method at 3 and 5 seeds, spread 0 / 0.1 / 0.2

Everything is vectorised over the simulated runs (numpy), so the test of `eval.claims`'s method runs in seconds.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import numpy as np
from scipy import stats

from grm_jax.eval.claims import seed_t_interval

Interval = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def true_difference(p_a: float, p_b: float, spread: float) -> float:
  """E[clip(p_a + spread * Z, 0, 1)] - p_b for a standard normal Z (the truncated-normal mean plus the mass above 1)."""
  if spread == 0:
    return float(np.clip(p_a, 0.0, 1.0) - p_b)
  lo, hi = (0.0 - p_a) / spread, (1.0 - p_a) / spread
  inside = p_a * (stats.norm.cdf(hi) - stats.norm.cdf(lo)) + spread * (stats.norm.pdf(lo) - stats.norm.pdf(hi))
  return float(inside + stats.norm.sf(hi) - p_b)


def simulate_differences(seeds: int, spread: float, items: int = 32, p_a: float = 0.6, p_b: float = 0.5,
                         reps: int = 20000, seed: int = 0) -> np.ndarray:
  """[reps, seeds, items] per-item differences A - B in {-1, 0, 1} (module docstring)."""
  rng = np.random.default_rng(seed)
  acc_a = np.clip(p_a + spread * rng.standard_normal((reps, seeds)), 0.0, 1.0)
  a = rng.random((reps, seeds, items)) < acc_a[..., None]
  b = rng.random((reps, seeds, items)) < p_b
  return a.astype(np.float64) - b.astype(np.float64)


def coverage(method: Interval, seeds: int, spread: float, items: int = 32, p_a: float = 0.6, p_b: float = 0.5,
             reps: int = 20000, seed: int = 0, confidence: float = 0.95) -> float:
  """The share of `reps` simulated runs whose `method` interval holds the true difference (module docstring); its
  Monte Carlo standard error is sqrt(c (1 - c) / reps), 0.0015 at 95% and 20000 runs."""
  diffs = simulate_differences(seeds, spread, items, p_a, p_b, reps, seed)
  lo, hi = method(diffs, confidence)
  truth = true_difference(p_a, p_b, spread)
  return float(np.mean((lo <= truth) & (truth <= hi)))


def t_over_seed_means(diffs: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """`eval.claims`'s method: the t-interval (S - 1 degrees of freedom) over each seed's mean over items."""
  return seed_t_interval(diffs.mean(axis=-1), confidence)


def normal_over_seed_means(diffs: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """A deliberately wrong reference: the same interval with the normal quantile (1.96) in place of t's. At 3 normal
  seed means it covers P(|T_2| < 1.96) = 81.1%, so the simulation can tell a method that undercovers."""
  means = diffs.mean(axis=-1)
  half = stats.norm.ppf(0.5 + confidence / 2) * means.std(axis=-1, ddof=1) / np.sqrt(means.shape[-1])
  return means.mean(axis=-1) - half, means.mean(axis=-1) + half


def two_level_bootstrap(diffs: np.ndarray, confidence: float = 0.95, resamples: int = 1000,
                        seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """The method `eval.claims` used before (kept here only to measure it): the percentile interval of the mean over
  seeds of the mean over items, drawing the seeds with replacement and then the items of each drawn seed."""
  rng = np.random.default_rng(seed)
  reps, s, n = diffs.shape
  lo, hi = np.empty(reps), np.empty(reps)
  alpha = (1.0 - confidence) / 2
  chunk = max(1, 4_000_000 // (resamples * s * n))
  for start in range(0, reps, chunk):
    block = diffs[start:start + chunk]
    r = len(block)
    seed_idx = rng.integers(0, s, (r, resamples, s))
    item_idx = rng.integers(0, n, (r, resamples, s, n))
    rows = np.arange(r)[:, None, None, None]
    draws = block[rows, seed_idx[..., None], item_idx].mean(axis=(-1, -2))
    lo[start:start + r], hi[start:start + r] = np.quantile(draws, [alpha, 1.0 - alpha], axis=1)
  return lo, hi


METHODS: dict[str, tuple[Interval, int]] = {  # name -> (method, simulated runs: the bootstrap is ~1000x dearer)
  "t over seed means, S-1 df (eval.claims)": (t_over_seed_means, 20000),
  "two-level percentile bootstrap (before)": (two_level_bootstrap, 2000),
  "normal quantile over seed means (reference)": (normal_over_seed_means, 20000),
}


def table(seeds: tuple[int, ...] = (3, 5), spreads: tuple[float, ...] = (0.0, 0.1, 0.2)) -> list[str]:
  """The README's coverage table as Markdown lines (32 items per seed, p_a = 0.6, p_b = 0.5, nominal 95%)."""
  lines = [f"Coverage of the nominal 95% interval, measured {datetime.date.today().isoformat()}:", "",
           "| method | seeds | " + " | ".join(f"spread {x:g}" for x in spreads) + " | runs |",
           "|---|---:|" + "---:|" * len(spreads) + "---:|"]
  for name, (method, reps) in METHODS.items():
    for s in seeds:
      cells = [f"{100 * coverage(method, s, spread, reps=reps):.1f}%" for spread in spreads]
      lines.append(f"| {name} | {s} | " + " | ".join(cells) + f" | {reps} |")
  return lines


if __name__ == "__main__":
  print("\n".join(table()))
