"""The claims interval's coverage, measured by simulating the science run's design (`eval.coverage`): known
differences, 32 binary items per seed, 3 and 5 seeds, seed-to-seed spread 0 / 0.1 / 0.2."""

import numpy as np
import pytest

from grm_jax.eval import coverage

REPS = 20000  # Monte Carlo standard error of a 95% coverage: 0.15 points


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("spread", [0.0, 0.1, 0.2])
def test_t_interval_over_seed_means_covers_95_percent(seeds, spread):
  seed = 10 * seeds + int(10 * spread)
  c = coverage.coverage(coverage.t_over_seed_means, seeds, spread, items=32, reps=REPS, seed=seed)
  assert 0.93 <= c <= 0.97, f"{seeds} seeds, spread {spread}: coverage {c:.4f}"


def test_the_simulation_detects_an_interval_that_undercovers():
  # The same interval with 1.96 in place of t(0.975, 2) = 4.30 covers P(|T_2| < 1.96) = 1.96 / sqrt(2 + 1.96^2)
  # = 0.811 for normal seed means: the simulation must see that (it is what the old method's 3-seed problem was).
  c = coverage.coverage(coverage.normal_over_seed_means, 3, 0.2, reps=REPS, seed=7)
  assert c == pytest.approx(1.96 / np.sqrt(2 + 1.96 ** 2), abs=0.015)


def test_true_difference_is_the_clipped_mean():
  assert coverage.true_difference(0.6, 0.5, 0.0) == pytest.approx(0.1)
  z = np.random.default_rng(0).standard_normal(2_000_000)
  for p_a, spread in ((0.6, 0.2), (0.9, 0.2)):  # clipping at 1 matters: E < p_a
    expected = np.clip(p_a + spread * z, 0, 1).mean() - 0.5
    assert coverage.true_difference(p_a, 0.5, spread) == pytest.approx(expected, abs=1e-3)
  assert coverage.true_difference(0.9, 0.5, 0.2) < 0.4 - 0.01


def test_simulated_items_have_the_stated_accuracies():
  d = coverage.simulate_differences(3, 0.0, items=32, p_a=0.7, p_b=0.4, reps=5000)
  assert d.shape == (5000, 3, 32) and set(np.unique(d)) <= {-1.0, 0.0, 1.0}
  assert d.mean() == pytest.approx(0.3, abs=0.01)
