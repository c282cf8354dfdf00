"""The sampling distribution as pure functions: exact top-k / top-p masks and sample frequencies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.sampling import filters
from tests.sampling.reference import chi_square, reference_sampling_probs


def _kept(masked) -> list[list[int]]:
  """Indices left finite by a mask, per row."""
  return [np.flatnonzero(np.isfinite(r)).tolist() for r in np.asarray(masked)]


def _check_kept_values(logits, masked):
  """A mask never alters the logits it keeps and sets everything else to -inf."""
  logits, masked = np.asarray(logits), np.asarray(masked)
  fin = np.isfinite(masked)
  np.testing.assert_array_equal(masked[fin], logits[fin])
  assert np.all(masked[~fin] == -np.inf)


# --------------------------------------------------------------------------- top-k


def test_top_k_keeps_exactly_the_k_largest_and_ties_at_the_threshold():
  logits = jnp.array([[1.0, 3.0, 3.0, 2.0, 0.5, 5.0]])
  cases = {1: [5], 2: [1, 2, 5], 3: [1, 2, 5], 4: [1, 2, 3, 5], 5: [0, 1, 2, 3, 5]}
  for k, want in cases.items():
    masked = filters.top_k_mask(logits, k)
    assert _kept(masked) == [want], k
    _check_kept_values(logits, masked)
  for k in (0, 6, 100):  # off, or at least the vocabulary: unchanged
    np.testing.assert_array_equal(np.asarray(filters.top_k_mask(logits, k)), np.asarray(logits))


def test_top_k_is_per_row_and_respects_earlier_masks():
  logits = jnp.array([[0.0, 9.0, 1.0, 8.0, 2.0], [7.0, -jnp.inf, 6.0, -1.0, 6.5]])
  masked = filters.top_k_mask(logits, 2)
  assert _kept(masked) == [[1, 3], [0, 4]]
  _check_kept_values(logits, masked)


# --------------------------------------------------------------------------- top-p

# Dyadic probabilities (shuffled): the float32 softmax of their logs is exact, so p can sit
# exactly on a cumulative sum: 0.5, 0.75, 0.875, 0.9375, 1.
DYADIC = np.array([0.125, 0.5, 0.0625, 0.25, 0.0625])


def test_top_p_keeps_the_minimal_nucleus_at_and_around_the_boundaries():
  logits = jnp.log(jnp.asarray(DYADIC, jnp.float32))[None]
  assert np.array_equal(np.asarray(jax.nn.softmax(logits))[0], DYADIC.astype(np.float32)), "softmax not exact"
  cases = [
    (1e-6, [1]),  # tiny p: only the argmax
    (0.3, [1]),
    (0.5, [1]),  # exactly the first mass: it alone reaches p
    (0.5 + 1e-4, [1, 3]),
    (0.75, [1, 3]),  # exactly 0.5 + 0.25
    (0.75 + 1e-4, [0, 1, 3]),
    (0.875, [0, 1, 3]),
    (0.9, [0, 1, 2, 3, 4]),  # needs one 0.0625; its tie is kept too
    (0.9375, [0, 1, 2, 3, 4]),
    (1.0, [0, 1, 2, 3, 4]),
  ]
  for p, want in cases:
    masked = filters.top_p_mask(logits, p)
    assert _kept(masked) == [want], p
    _check_kept_values(logits, masked)


def test_top_p_one_keeps_every_token_even_when_float_mass_rounds_to_one():
  """p = 1 means no filtering. With a few likely tokens and some of probability ~1e-20 the
  float32 mass before the unlikely ones already rounds to 1, so a plain `mass_before < p`
  test would drop them; they must be kept (37 of these 64 rows lost tokens before the fix)."""
  rng = np.random.RandomState(0)
  logits = (rng.randn(64, 50) * 3).astype(np.float32)
  logits[:, -5:] = -45.0
  masked = np.asarray(filters.top_p_mask(jnp.asarray(logits), 1.0))
  assert np.isfinite(masked).all()
  # Slightly below 1 the near-zero tokens are outside the nucleus, as they should be.
  masked = np.asarray(filters.top_p_mask(jnp.asarray(logits), 0.999))
  assert not np.isfinite(masked[:, -5:]).any()


def test_top_p_ties_with_the_last_kept_probability_are_kept():
  logits = jnp.log(jnp.array([[0.2, 0.4, 0.2, 0.2]]))
  assert _kept(filters.top_p_mask(logits, 0.3)) == [[1]]
  assert _kept(filters.top_p_mask(logits, 0.5)) == [[0, 1, 2, 3]]


def test_top_p_matches_the_reference_nucleus_on_random_rows():
  rng = np.random.RandomState(1)
  logits = (rng.randn(200, 40) * rng.uniform(0.3, 4.0, (200, 1))).astype(np.float32)
  for p in (0.1, 0.5, 0.8, 0.95):
    got = np.isfinite(np.asarray(filters.top_p_mask(jnp.asarray(logits), p)))
    for row, kept in zip(logits, got, strict=True):
      probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
      cum = np.cumsum(np.sort(probs)[::-1])
      if np.abs(cum - p).min() < 1e-5:
        continue  # too close to a boundary for float32 to be decisive
      want = reference_sampling_probs(row, top_p=p) > 0
      np.testing.assert_array_equal(kept, want)
      # Minimal: the kept mass reaches p, and without its least likely token it would not.
      assert probs[kept].sum() >= p > probs[kept].sum() - probs[kept].min()


# --------------------------------------------------------------------------- distribution

PROBS = np.array([0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.04, 0.01])
LOGITS = np.concatenate([np.log(PROBS), [-np.inf] * 4]).astype(np.float32)  # 4 impossible tokens


@pytest.mark.parametrize(
  "temperature,top_k,top_p",
  [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7), (2.0, 5, 0.55)],
)
def test_sampling_logits_are_the_masked_tempered_log_softmax(temperature, top_k, top_p):
  got = np.asarray(filters.sampling_logits(jnp.asarray(LOGITS)[None], temperature, top_p, top_k, top_p < 1))[0]
  want = reference_sampling_probs(LOGITS, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isfinite(got), want > 0)
  np.testing.assert_allclose(np.exp(got), want, atol=1e-6)


@pytest.mark.parametrize(
  "temperature,top_k,top_p",
  [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7), (2.0, 5, 0.55)],
)
def test_sample_token_frequencies_match_the_distribution(temperature, top_k, top_p):
  """Pearson's chi-square, sum over bins of (observed - expected)^2 / expected, of 20,000
  draws against the reference distribution; rejected above the p = 0.001 critical value.
  Observed here: 0.2 to 9.5 on 2 to 7 degrees of freedom (critical 13.8 to 24.3)."""
  draws = 20_000
  key = jax.random.key(int(temperature * 10) + 100 * top_k + int(1000 * top_p))
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (draws, LOGITS.size))
  tok, logp = filters.sample_token(key, logits, temperature, top_p, top_k, top_p < 1)
  tok, logp = np.asarray(tok), np.asarray(logp)
  want = reference_sampling_probs(LOGITS, temperature, top_k, top_p)
  np.testing.assert_allclose(logp, np.log(want[tok]), atol=1e-5)  # the log-prob of what was drawn
  stat, dof, crit = chi_square(np.bincount(tok, minlength=LOGITS.size), want)
  print(f"sample_token T={temperature} top_k={top_k} top_p={top_p}: chi2={stat:.2f} dof={dof} crit={crit:.2f}")
  assert stat < crit


def test_greedy_sample_token_is_argmax_with_unscaled_log_prob():
  logits = jnp.array([[0.1, 2.0, -1.0], [3.0, 2.9, 0.0]])
  tok, logp = filters.sample_token(jax.random.key(0), logits, 1e-6, greedy=True)
  assert np.asarray(tok).tolist() == [1, 0]
  want = np.asarray(jax.nn.log_softmax(logits))[[0, 1], [1, 0]]
  np.testing.assert_allclose(np.asarray(logp), want, atol=1e-6)


def test_blocked_inverse_cdf_categorical_matches_the_distribution_across_blocks():
  """`filters.categorical` over a 1,000-token vocabulary (blocks of 64: 16 blocks, the last partial) with mass spread
  over several blocks and -inf holes, incl. the very last token: Pearson's chi-square of 40,000 draws below the
  p = 0.001 critical value, and no filtered token ever drawn."""
  rng = np.random.default_rng(0)
  v = 1000
  logits = np.full(v, -np.inf, np.float32)
  live = np.array([0, 5, 63, 64, 200, 511, 512, 700, 959, 960, 998, 999])
  logits[live] = rng.normal(size=live.size).astype(np.float32)
  logp = jax.nn.log_softmax(jnp.asarray(logits))
  draws = 40_000
  tok = np.asarray(filters.categorical(jax.random.key(7), jnp.broadcast_to(logp, (draws, v)), block=64))
  assert set(np.unique(tok)) <= set(live.tolist())
  want = np.exp(np.asarray(logp, np.float64))
  stat, dof, crit = chi_square(np.bincount(tok, minlength=v), want)
  print(f"blocked categorical: chi2={stat:.2f} dof={dof} crit={crit:.2f}")
  assert stat < crit


def test_blocked_categorical_single_allowed_token_and_row_independence():
  v = 300
  logp = np.full((4, v), -np.inf, np.float32)
  for r, t in enumerate((0, 255, 256, 299)):  # first, block edge, next block, last (partial block)
    logp[r, t] = 0.0
  for seed in range(5):
    assert np.asarray(filters.categorical(jax.random.key(seed), jnp.asarray(logp))).tolist() == [0, 255, 256, 299]
  # Uniform rows draw different tokens (one uniform per row, not one per batch).
  flat = jnp.full((64, v), -np.log(v), jnp.float32)
  assert len(set(np.asarray(filters.categorical(jax.random.key(0), flat)).tolist())) > 40
