"""Voting and meta-RM guided voting, from judgement text to the chosen response (paper §4, Eq. 14, Table 17)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import grm, judges

# Paper Table 17: three samples for two responses; samples 2 and 3 saw them in reversed order.
TABLE17_TEXTS = [
  "Specific Criteria: ...\nAnalysis: ...\nScores: \\boxed{8, 8}",
  "Specific Criteria: ...\nAnalysis: ...\nScores: \\boxed{9, 5}",
  "Specific Criteria: ...\nAnalysis: ...\nScores: \\boxed{10, 7}",
]
TABLE17_PERMS = [(0, 1), (1, 0), (1, 0)]
TABLE17_META = np.array([[-15.7781, 1.3126, 1.6739]], np.float32)
TABLE17_REWARDS = np.array([[0.0, 1.0]], np.float32)  # ground truth: response 2 is better


def _table17():
  parsed = [grm.unpermute(grm.parse_scores(t, 2), p) for t, p in zip(TABLE17_TEXTS, TABLE17_PERMS, strict=True)]
  assert parsed == [[8, 8], [5, 9], [7, 10]]
  scores, valid = grm.stack_scores(parsed, n_max=2)
  return scores[None], valid[None]


def test_table17_voting():
  scores, valid = _table17()
  np.testing.assert_array_equal(grm.vote(scores, valid), [[20, 27]])
  np.testing.assert_array_equal(grm.vote(scores, valid, TABLE17_META, k_meta=2), [[12, 19]])
  # Default k_meta for k = 3 is ceil(3/2) = 2.
  np.testing.assert_array_equal(grm.vote(scores, valid, TABLE17_META), [[12, 19]])
  np.testing.assert_array_equal(grm.vote(scores, valid, TABLE17_META, k_meta=1), [[7, 10]])
  np.testing.assert_array_equal(grm.vote(scores, valid, TABLE17_META, k_meta=5), [[20, 27]])
  mask = np.ones((1, 2), bool)
  votes = grm.vote(scores, valid)
  np.testing.assert_array_equal(grm.voted_correct(votes, valid, TABLE17_REWARDS, mask), [True])
  np.testing.assert_array_equal(judges.choose_best(votes, mask, jax.random.key(0)), [1])
  # The first sample alone ties (8, 8): wrong under the training rule.
  assert not grm.judgement_correct([8, 8], [0.0, 1.0])
  np.testing.assert_array_equal(grm.voted_correct(scores[:, 0], valid[:, :1], TABLE17_REWARDS, mask), [False])


def test_invalid_samples_excluded():
  scores, valid = _table17()
  valid = valid.copy()
  valid[0, 2] = False
  np.testing.assert_array_equal(grm.vote(scores, valid), [[13, 17]])
  # The invalid sample has the highest meta reward but is never kept.
  meta = np.array([[-15.78, 1.31, 99.0]], np.float32)
  np.testing.assert_array_equal(grm.vote(scores, valid, meta, k_meta=1), [[5, 9]])
  np.testing.assert_array_equal(grm.meta_keep(valid, meta, 1), [[False, True, False]])
  # Fewer valid samples than k_meta: keep all the valid ones.
  np.testing.assert_array_equal(grm.vote(scores, valid, meta, k_meta=3), [[13, 17]])
  # No valid sample: zero votes, and not correct.
  none = np.zeros_like(valid)
  votes = grm.vote(scores, none)
  np.testing.assert_array_equal(votes, [[0, 0]])
  np.testing.assert_array_equal(grm.voted_correct(votes, none, TABLE17_REWARDS, np.ones((1, 2), bool)), [False])


def _vote_reference(scores, valid, meta=None, k_meta=None):
  """Loop-by-loop numpy reading of the paper's rule, independent of the implementation."""
  b, k, n = scores.shape
  out = np.zeros((b, n), scores.dtype)
  for i in range(b):
    idx = [j for j in range(k) if valid[i, j]]
    if meta is not None:
      idx = sorted(idx, key=lambda j: (-meta[i, j], j))[:k_meta]
    for j in idx:
      out[i] += scores[i, j]
  return out


def test_vote_jit_matches_numpy_reference():
  rng = np.random.default_rng(0)
  scores = rng.integers(1, 11, size=(5, 6, 4)).astype(np.int32)
  valid = rng.random((5, 6)) < 0.7
  meta = rng.normal(size=(5, 6)).astype(np.float32)
  jvote = jax.jit(grm.vote, static_argnames="k_meta")
  got = jvote(jnp.asarray(scores), jnp.asarray(valid))
  np.testing.assert_array_equal(np.asarray(got), _vote_reference(scores, valid))
  for k_meta in (1, 3, 6):
    got = jvote(jnp.asarray(scores), jnp.asarray(valid), jnp.asarray(meta), k_meta=k_meta)
    np.testing.assert_array_equal(np.asarray(got), _vote_reference(scores, valid, meta, k_meta))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(grm.vote(scores, valid, meta, k_meta)))


def test_unpermute_batch_matches_host_unpermute():
  rng = np.random.default_rng(1)
  perms = np.stack([rng.permutation(5) for _ in range(6)]).reshape(2, 3, 5)
  shown = rng.integers(1, 11, size=(2, 3, 5))
  got = np.asarray(grm.unpermute_batch(shown, perms))
  for b in range(2):
    for j in range(3):
      assert got[b, j].tolist() == grm.unpermute(shown[b, j].tolist(), perms[b, j].tolist())


def test_choose_best_random_tie_break():
  votes = jnp.array([[3, 3, 1], [1, 5, 2], [4, 4, 9]])
  mask = jnp.array([[True, True, True], [True, True, True], [True, True, False]])
  keys = jax.random.split(jax.random.key(0), 400)
  picks = np.asarray(jax.vmap(lambda k: judges.choose_best(votes, mask, k))(keys))  # [400, 3]
  assert set(picks[:, 0]) == {0, 1}
  assert 0.4 < np.mean(picks[:, 0] == 0) < 0.6
  assert set(picks[:, 1]) == {1}
  assert set(picks[:, 2]) == {0, 1}  # the masked 9 is never chosen
  assert picks.dtype == np.int32


def test_vote_argument_errors():
  scores, valid = _table17()
  with pytest.raises(ValueError):
    grm.vote(scores, valid, k_meta=2)
  with pytest.raises(ValueError):
    grm.vote(scores[0], valid[0])
  with pytest.raises(ValueError):
    grm.vote(scores, valid, TABLE17_META, k_meta=0)
  assert [grm.default_k_meta(k) for k in (1, 2, 3, 8, 32)] == [1, 1, 2, 4, 16]


def test_item_votes_score_a_single_response_by_the_mean_of_its_valid_samples():
  """Four valid 8s and three valid 8s + one unparseable sample both score 8 (sums: 32 vs 24); no valid sample scores
  the neutral middle, not 0 (at k = 1 an unparseable sample would otherwise be the strongest "error" flag). Items with
  n >= 2 keep the sum."""
  scores = np.zeros((4, 4, 2), np.int32)
  scores[0, :, 0] = 8
  scores[1, :3, 0] = 8
  scores[3, :, :] = [[9, 2], [8, 3], [7, 1], [0, 0]]
  valid = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]], bool)
  mask = np.array([[1, 0], [1, 0], [1, 0], [1, 1]], bool)
  np.testing.assert_array_equal(grm.vote(scores, valid)[:, 0], [32, 24, 0, 24])
  got = grm.item_votes(scores, valid, mask, neutral=5.5)
  np.testing.assert_array_equal(got, [[8.0, 0.0], [8.0, 0.0], [5.5, 0.0], [24.0, 6.0]])
  # MetaRM@k: the mean of the kept samples (top 2 valid by meta logit): item 1 keeps samples 2 and 1 -> 8, item 0's
  # 0 and 3; the pair sums its kept two.
  meta = np.array([[4.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 9.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 2.0, 9.0]])
  np.testing.assert_array_equal(grm.item_votes(scores, valid, mask, meta, 2, neutral=[5.5, 5.5, 0.5, 5.5]),
                                [[8.0, 0.0], [8.0, 0.0], [0.5, 0.0], [16.0, 3.0]])
  # jax in, jax out, the same numbers.
  jgot = grm.item_votes(jnp.asarray(scores), jnp.asarray(valid), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(jgot), got)
