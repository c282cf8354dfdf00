"""The correctness rule (paper Eq. 10) and the rule-based RL reward (Eq. 11), in one place.

Every consumer uses these functions: RFT filtering, GRPO rewards, meta-RM labels and evaluation of voted
scores. Given predicted scores S and ground-truth rewards r over the real responses of an item:
- n >= 2: correct iff S_j > S_i for every other real response i, where j = argmax_l r_l. Strict: a tie with
  the best is wrong.
- n = 1: correct iff S_1 == r_1 (single-response data is verifiable, r in {0, 1}, scored with the 0/1
  template). S_1 is the score as written: the 0/1 template is parsed without clipping (`prompts.CLIP_RANGES`), so
  `\\boxed{7}` is wrong whatever r_1 is. The comparison is plain equality, so it only makes sense when S and r
  share a scale: a 1-10 score of a single response (evaluation's template) has no Eq. 10 answer
  (`trajectories.label_comparable`).
- Unparseable judgements (valid=False) are wrong; items with no real responses are wrong.
- Ground truth with a tied maximum has no "true best" (the paper guarantees a unique maximum in its data);
  every judgement of such an item is wrong, so it gives no training signal (-1 for the whole GRPO group means
  zero advantage), so the training stages drop it (`has_unique_best`; `stages.common.without_top_tied`).
Eq. 11: reward = +1 if correct else -1.

Arrays: scores [..., n_max], rewards and response masks broadcastable to it (e.g. rewards [B, 1, n_max] against
scores [B, G, n_max]), valid broadcastable to the leading shape. Padded responses are excluded by the mask.
The functions run on numpy input with numpy (no device round trip on the host) and on jax arrays, including
under `jax.jit`, with jax.numpy. The module itself never imports jax (`arrays.array_module`), so a PyTorch-only RL
stack can apply the same rule (`grm_jax.reward`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grm_jax.grm.arrays import array_module as _xp

Array = Any  # numpy or jax array


def _prep(rewards: Array, mask: Array | None, xp):
  rewards = xp.asarray(rewards)
  mask = xp.ones(rewards.shape, bool) if mask is None else xp.asarray(mask, dtype=bool)
  masked = xp.where(mask, rewards, -xp.inf)
  best = xp.argmax(masked, axis=-1)
  return rewards, mask, masked, best


def true_best(rewards: Array, mask: Array | None = None) -> Array:
  """Index of the highest ground-truth reward among real responses, [...]; the first one on ties."""
  xp = _xp(rewards, mask)
  return _prep(rewards, mask, xp)[3]


def has_unique_best(rewards: Array, mask: Array | None = None) -> Array:
  """True where the real responses' ground truth has exactly one maximum (a usable item for n >= 2)."""
  xp = _xp(rewards, mask)
  _, mask, masked, _ = _prep(rewards, mask, xp)
  top = xp.max(masked, axis=-1, keepdims=True)
  return xp.sum(mask & (masked == top), axis=-1) == 1


def is_correct(scores: Array, valid: Array, rewards: Array, mask: Array | None = None) -> Array:
  """Eq. 10 correctness, bool [...]: see the module docstring for the rule."""
  xp = _xp(scores, valid, rewards, mask)
  scores = xp.asarray(scores)
  valid = xp.asarray(valid, dtype=bool)
  rewards, mask, masked_r, best = _prep(rewards, mask, xp)
  mask = xp.broadcast_to(mask, xp.broadcast_shapes(mask.shape, scores.shape))
  n_real = xp.sum(mask, axis=-1)
  idx = xp.arange(mask.shape[-1])
  is_best = (idx == best[..., None]) & mask
  s = xp.where(mask, scores, -xp.inf)
  s_best = xp.max(xp.where(is_best, s, -xp.inf), axis=-1)
  others = mask & ~is_best
  beats_all = xp.all(xp.where(others, s_best[..., None] > s, True), axis=-1)
  top = xp.max(masked_r, axis=-1, keepdims=True)
  unique = xp.sum(mask & (masked_r == top), axis=-1) == 1
  multi_ok = beats_all & unique
  single_ok = xp.sum(xp.where(mask, scores, 0), axis=-1) == xp.sum(xp.where(mask, rewards, 0), axis=-1)
  ok = xp.where(n_real >= 2, multi_ok, (n_real == 1) & single_ok)
  return ok & valid


def rl_reward(scores: Array, valid: Array, rewards: Array, mask: Array | None = None) -> Array:
  """Eq. 11: +1.0 where `is_correct`, else -1.0 (unparseable included), float32 [...]."""
  xp = _xp(scores, valid, rewards, mask)
  return xp.where(is_correct(scores, valid, rewards, mask), 1.0, -1.0).astype(xp.float32)


def judgement_correct(scores: Sequence[float] | None, rewards: Sequence[float]) -> bool:
  """Host convenience for one parsed judgement (original order) against its rewards; None is wrong."""
  if scores is None:
    return False
  if len(scores) != len(rewards):
    raise ValueError(f"{len(scores)} scores for {len(rewards)} rewards")
  return bool(is_correct(np.asarray(scores), True, np.asarray(rewards, dtype=float)))


def pick_correct(choice: Array, rewards: Array, mask: Array | None = None) -> Array:
  """Evaluation accuracy: the chosen index is the unique true best, bool [...].

  This is the benchmark rule (argmax with random tie-break, then compare); the strict training rule for
  scores is `is_correct`.
  """
  xp = _xp(choice, rewards, mask)
  return (xp.asarray(choice) == true_best(rewards, mask)) & has_unique_best(rewards, mask)
