"""Inference-time scaling: voting over k sampled judgements, optionally guided by a meta RM (paper §4).

Voting (Eq. 14) sums each response's scores over the k samples after mapping them back to the original order;
unparseable samples contribute nothing. Meta-RM guided voting first keeps the k_meta samples with the highest
meta-RM logit among the *valid* ones (a sample we could not parse has no scores to keep). The best response
is the argmax of the votes with ties broken at random (the paper shuffles, then takes argmax).

The LLM-as-a-Judge baseline (paper §4, Eq. 13) votes by majority over the chosen index. Its judgements are one-hot
scores (`parse.parse_judgement`), so `vote` already sums them into majority counts. Its "w/ TokenProb" variant
(Tables 3/6) weights each vote by the probability of the chosen index token (`token_prob_votes`; the probability
comes from `grm.token_prob.choice_probs`).

All functions are array functions over padded arrays with masks, with no Python loops over the batch or the
samples: numpy in, numpy out (the host, and `grm_jax.reward` where there is no jax), jax arrays in, jax arrays out
(jittable). The random tie-break of the best response needs a PRNG key, so it lives apart (`grm.choice`).

A sum is right for picking the best of an item's n >= 2 responses (all of them share the item's samples) but not for
comparing single responses across items, as ReaLMistake's ROC-AUC does: an item with fewer parsed samples would sum
fewer scores and look worse (four valid 8s vote 32, three valid 8s and one unparseable sample 24). `item_votes`
therefore scores a single-response item by the *mean* of its kept samples, and an item with no kept sample by the
`neutral` score (the middle of the template's range): no evidence either way, the value the reward server gives
(`reward.Recipe.neutral_reward`); dropping such items instead would change the item set from column to column and
favour a judge that fails on the hard ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from grm_jax.grm import rules
from grm_jax.grm.arrays import array_module

Array = Any


def default_k_meta(k: int) -> int:
  """⌈k/2⌉: the paper's default is k_meta = k/2 (all its k are even); rounding up keeps at least one sample and
  reads the paper's k/2 for odd k as ⌈k/2⌉."""
  return max(1, math.ceil(k / 2))


def meta_keep(valid: Array, meta: Array, k_meta: int) -> Array:
  """bool [B, k]: the k_meta valid samples with the highest meta reward per item (fewer if fewer are valid).

  Equal meta rewards are ranked by sample index, so the choice is deterministic.
  """
  xp = array_module(valid, meta)
  valid = xp.asarray(valid, dtype=bool)
  meta = xp.where(valid, xp.asarray(meta, dtype=xp.float32), -xp.inf)
  order = xp.argsort(-meta, axis=-1, stable=True)
  rank = xp.argsort(order, axis=-1, stable=True)
  return (rank < k_meta) & valid


def voted_samples(valid: Array, meta: Array | None = None, k_meta: int | None = None) -> Array:
  """bool [B, k]: the samples `vote` sums, all valid ones, or with `meta` the top `k_meta` valid ones."""
  xp = array_module(valid, meta)
  keep = xp.asarray(valid, dtype=bool)
  if meta is not None:
    k = keep.shape[-1]
    k_meta = default_k_meta(k) if k_meta is None else int(k_meta)
    if k_meta < 1:
      raise ValueError(f"k_meta must be >= 1, got {k_meta}")
    return meta_keep(keep, meta, min(k_meta, k))
  if k_meta is not None:
    raise ValueError("k_meta was given without meta rewards")
  return keep


def vote(scores: Array, valid: Array, meta: Array | None = None, k_meta: int | None = None) -> Array:
  """Voted scores [B, n]: the sum over samples of valid, already-unpermuted scores [B, k, n].

  With `meta` [B, k], only the top `k_meta` valid samples by meta reward are summed (default ⌈k/2⌉).
  Jittable; `k_meta` is a shape-free Python int, so mark it static when jitting with it as an argument.
  The result keeps the dtype of `scores` (int scores give int votes).
  """
  xp = array_module(scores, valid, meta)
  scores = xp.asarray(scores)
  if scores.ndim != 3 or tuple(np.shape(valid)) != scores.shape[:2]:
    raise ValueError(f"expected scores [B, k, n] and valid [B, k], got {scores.shape} and {np.shape(valid)}")
  keep = voted_samples(valid, meta, k_meta)
  return xp.sum(xp.where(keep[..., None], scores, xp.zeros((), scores.dtype)), axis=1)


def item_votes(scores: Array, valid: Array, response_mask: Array, meta: Array | None = None,
               k_meta: int | None = None, neutral: Array | float = 5.5) -> Array:
  """float [B, n]: `vote`'s sums, except that an item with one real response (`response_mask` [B, n] has one True)
  gets the mean of its kept samples' scores, or `neutral` ([B] or a scalar: the middle of its template's score
  range, 5.5 for 1-10) when none was kept (module docstring). Scores to compare across items (ReaLMistake's
  ROC-AUC); for n >= 2 the sum is kept, its argmax and ties are the same as the mean's. Jittable as `vote`."""
  xp = array_module(scores, valid, response_mask, meta)
  total = xp.asarray(vote(scores, valid, meta, k_meta), dtype=xp.float64 if xp is np else xp.float32)
  count = xp.sum(xp.asarray(voted_samples(valid, meta, k_meta), dtype=total.dtype), axis=-1)
  single = xp.sum(xp.asarray(response_mask, dtype=xp.int32), axis=-1) == 1
  neutral = xp.broadcast_to(xp.asarray(neutral, dtype=total.dtype), count.shape)
  mean = xp.where(count > 0, total[:, 0] / xp.maximum(count, 1), neutral)
  return xp.concatenate([xp.where(single, mean, total[:, 0])[:, None], total[:, 1:]], axis=-1)


def token_prob_votes(choices: Array, probs: Array, valid: Array) -> Array:
  """float32 [B, n]: TokenProb votes, sum over valid samples of the chosen response's one-hot times its probability.

  `choices` [B, k, n] are one-hot choices in original order (a judge template's scores), `probs` [B, k] the
  probability of each sample's chosen index token (`token_prob.choice_probs`), `valid` [B, k] which samples parsed.
  Jittable.
  """
  xp = array_module(choices, probs, valid)
  choices = xp.asarray(choices, dtype=xp.float32)
  probs = xp.asarray(probs, dtype=xp.float32)
  keep = xp.asarray(valid, dtype=bool)
  if choices.ndim != 3 or keep.shape != choices.shape[:2] or probs.shape != choices.shape[:2]:
    raise ValueError(f"expected choices [B, k, n], probs and valid [B, k], got {choices.shape}, {probs.shape} and "
                     f"{keep.shape}")
  weights = xp.where(keep, probs, xp.float32(0.0))
  return xp.einsum("bkn,bk->bn", choices, weights)


def unpermute_batch(shown: Array, perm: Array) -> Array:
  """Scores in shown order [..., n] back to original order: `out[..., perm[..., p]] = shown[..., p]`.

  Padded items must pad `perm` with the identity tail (n_real, ..., n_max - 1) so padding stays in place.
  """
  xp = array_module(shown, perm)
  inverse = xp.argsort(xp.asarray(perm), axis=-1)
  return xp.take_along_axis(xp.asarray(shown), inverse, axis=-1)


def voted_correct(votes: Array, valid: Array, rewards: Array, response_mask: Array) -> Array:
  """Eq. 10 applied to the voted totals, bool [B] (ties wrong); `valid` [B, k] says which samples voted.

  An item counts only if at least one sample was valid. For benchmark accuracy with random tie-break use
  `rules.pick_correct(choose_best(...), rewards, mask)`.
  """
  xp = array_module(votes, valid, rewards, response_mask)
  has_vote = xp.any(xp.asarray(valid, dtype=bool), axis=-1)
  return rules.is_correct(xp.asarray(votes), has_vote, xp.asarray(rewards), xp.asarray(response_mask, dtype=bool))
