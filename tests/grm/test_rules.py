"""Eq. 10 / Eq. 11: strict correctness with masks, on numpy and under jax.jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import grm

T, F = True, False

# Rows: (scores, valid, rewards, mask, expected correct)
CASES = [
  ([7, 4, 0], T, [1.0, 0.0, 0.0], [T, T, F], T),  # best strictly above
  ([4, 7, 0], T, [1.0, 0.0, 0.0], [T, T, F], F),  # wrong order
  ([5, 5, 0], T, [1.0, 0.0, 0.0], [T, T, F], F),  # tie is wrong
  ([6, 8, 8], T, [0.2, 0.9, 0.5], [T, T, T], F),  # best tied with a non-best response
  ([6, 9, 8], T, [0.2, 0.9, 0.5], [T, T, T], T),
  ([6, 9, 10], T, [0.2, 0.9, 0.5], [T, T, F], T),  # padding score 10 is ignored
  ([6, 9, 10], T, [0.2, 0.9, 0.5], [T, T, T], F),  # ...but counts when real
  ([7, 4, 0], F, [1.0, 0.0, 0.0], [T, T, F], F),  # unparseable
  ([9, 2, 0], T, [0.7, 0.7, 0.1], [T, T, T], F),  # ground truth has no unique best
  ([1, 0, 0], T, [1.0, 0.0, 0.0], [T, F, F], T),  # n = 1: equal to the 0/1 label
  ([0, 0, 0], T, [1.0, 0.0, 0.0], [T, F, F], F),
  ([0, 5, 5], T, [0.0, 0.0, 0.0], [T, F, F], T),  # n = 1, label 0
  ([3, 3, 3], T, [0.0, 0.0, 0.0], [F, F, F], F),  # no real responses
]


def _arrays():
  scores = np.array([c[0] for c in CASES], np.int32)
  valid = np.array([c[1] for c in CASES])
  rewards = np.array([c[2] for c in CASES], np.float32)
  mask = np.array([c[3] for c in CASES])
  expected = np.array([c[4] for c in CASES])
  return scores, valid, rewards, mask, expected


def test_cases_numpy():
  scores, valid, rewards, mask, expected = _arrays()
  got = grm.is_correct(scores, valid, rewards, mask)
  assert isinstance(got, np.ndarray)  # numpy in, numpy out
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(grm.rl_reward(scores, valid, rewards, mask), np.where(expected, 1.0, -1.0))


def test_cases_jit_match_numpy():
  scores, valid, rewards, mask, expected = _arrays()
  got = jax.jit(grm.is_correct)(jnp.asarray(scores), jnp.asarray(valid), jnp.asarray(rewards), jnp.asarray(mask))
  np.testing.assert_array_equal(np.asarray(got), expected)
  r = jax.jit(grm.rl_reward)(jnp.asarray(scores), jnp.asarray(valid), jnp.asarray(rewards), jnp.asarray(mask))
  assert r.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(r), np.where(expected, 1.0, -1.0))


def test_group_broadcast():
  """GRPO layout: rewards [B, 1, n] against G rollouts [B, G, n]."""
  scores = np.array([[[8, 3], [3, 8], [5, 5], [0, 0]], [[2, 9], [9, 2], [9, 2], [1, 10]]])
  valid = np.array([[T, T, T, F], [T, T, T, T]])
  rewards = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
  got = grm.rl_reward(scores, valid, rewards)
  np.testing.assert_array_equal(got, [[1, -1, -1, -1], [1, -1, -1, 1]])


def test_helpers():
  rewards = np.array([[0.1, 0.9, 0.3], [0.5, 0.5, 0.2], [0.4, 0.2, 0.9]])
  mask = np.array([[T, T, T], [T, T, T], [T, T, F]])
  np.testing.assert_array_equal(grm.true_best(rewards, mask), [1, 0, 0])
  np.testing.assert_array_equal(grm.has_unique_best(rewards, mask), [T, F, T])
  np.testing.assert_array_equal(grm.pick_correct(np.array([1, 0, 0]), rewards, mask), [T, F, T])
  np.testing.assert_array_equal(grm.pick_correct(np.array([2, 1, 2]), rewards, mask), [F, F, F])


def test_judgement_correct():
  assert grm.judgement_correct([8, 3], [1.0, 0.0]) is True
  assert grm.judgement_correct([8, 8], [1.0, 0.0]) is False
  assert grm.judgement_correct(None, [1.0, 0.0]) is False
  assert grm.judgement_correct([1], [1]) is True
  assert grm.judgement_correct([0], [1]) is False
  with pytest.raises(ValueError):
    grm.judgement_correct([1, 2, 3], [1.0, 0.0])
