"""Inference-time scaling curves from one pool of sampled judgements (paper §4, Tables 3/6, Fig. 1/4).

Sample k_max judgements per item once; for each k in 1, 2, 4, ..., k_max draw `num_subsets` random subsets of k
samples per item (without replacement, independently per item, per subset and per k), vote over each subset
(`grm.vote`: plain Voting@k, and MetaRM@k keeping the top k_meta = ⌈k/2⌉ valid samples by meta reward), score
the votes, and report mean and standard deviation over the subsets. Drawing from one pool is the standard
unbiased estimate of the metric at k < k_max; at k = k_max every subset is the whole pool, so the spread
there comes only from the tie-break.

The standard deviation over subsets is Monte-Carlo noise of the estimate (which samples, which tie-break), not the
uncertainty of the number: mean ± 1.96·std/sqrt(subsets) shrinks to nothing with more subsets while the items stay
a few dozen. The 95% band a caller gets from `band` (the eval stage: `eval.metrics.bootstrap_official`, a
percentile bootstrap over items of the point, every subset scored on each resample of the items) describes the
variation that matters when comparing judges or k: another draw of items.

With `mask` (the real responses of each item) a single-response item's point is the mean of its subset's kept
samples (`grm.item_votes`), not their sum, so that items with more parse failures do not look worse across items
(ReaLMistake's ROC-AUC); without it every item is summed (`grm.vote`).

Everything is vectorised over items and subsets (one `grm.vote` call per k); the only Python loop is over the
few values of k (and over subsets when a custom `metric` scores each voted table).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax.grm import rules, voting
from grm_jax.judges.choice import choose_best

Metric = Callable[[np.ndarray, jax.Array], float]
"""metric(votes [B, n] float, key) -> float, e.g. `lambda v, key: score_benchmark(name, examples, v, key)[m]`."""
Band = Callable[[np.ndarray], Mapping[str, Any]]
"""band(votes [S, B, n] of one point's subsets) -> {suffix: value}, added to the row as "<column>_<suffix>"."""


def default_ks(k_max: int) -> tuple[int, ...]:
  """1, 2, 4, ... up to k_max, plus k_max itself when it is not a power of two."""
  if k_max < 1:
    raise ValueError(f"k_max must be >= 1, got {k_max}")
  ks, k = [], 1
  while k < k_max:
    ks.append(k)
    k *= 2
  return (*ks, k_max)


def subset_mask(key: jax.Array, batch: int, k_max: int, k: int, num_subsets: int) -> jax.Array:
  """bool [S, B, k_max]: for each subset and item, k sample slots drawn uniformly without replacement."""
  if not 1 <= k <= k_max:
    raise ValueError(f"k must be in [1, {k_max}], got {k}")
  noise = jax.random.uniform(key, (num_subsets, batch, k_max))
  rank = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
  return rank < k


def subset_votes(
  scores: Any, valid: Any, k: int, key: jax.Array, num_subsets: int = 1, meta: Any | None = None,
  mask: Any | None = None, neutral: Any = 5.5,
) -> jax.Array:
  """Voted scores [S, B, n] over random size-k subsets of the k_max samples of each item.

  Runs eagerly (op by op): every k reuses the same compiled ops, which beats one jit compilation per k for a
  table of a few k; wrap it in `jax.jit` with `k`, `num_subsets` static for repeated calls at one k.

  Args:
    scores: [B, k_max, n] un-permuted scores; valid: [B, k_max]; meta: optional [B, k_max] meta rewards, in which
      case only the top ⌈k/2⌉ valid samples of each subset are summed (MetaRM@k); mask: optional [B, n] real
      responses, with which single-response items get the mean of their kept samples, `neutral` ([B] or a scalar)
      when none (`grm.item_votes`).
  """
  scores = jnp.asarray(scores)
  valid = jnp.asarray(valid, bool)
  b, k_max, n = scores.shape
  chosen = subset_mask(key, b, k_max, k, num_subsets)
  flat_valid = (chosen & valid[None]).reshape(num_subsets * b, k_max)
  flat_scores = jnp.broadcast_to(scores[None], (num_subsets, b, k_max, n)).reshape(num_subsets * b, k_max, n)
  flat_meta, k_meta = None, None
  if meta is not None:
    flat_meta = jnp.broadcast_to(jnp.asarray(meta)[None], (num_subsets, b, k_max)).reshape(num_subsets * b, k_max)
    k_meta = voting.default_k_meta(k)
  if mask is None:
    out = voting.vote(flat_scores, flat_valid, flat_meta, k_meta)
  else:
    flat_mask = jnp.broadcast_to(jnp.asarray(mask, bool)[None], (num_subsets, b, n)).reshape(num_subsets * b, n)
    flat_neutral = jnp.broadcast_to(jnp.asarray(neutral, jnp.float32), (num_subsets, b)).reshape(num_subsets * b)
    out = voting.item_votes(flat_scores, flat_valid, flat_mask, flat_meta, k_meta, flat_neutral)
  return out.reshape(num_subsets, b, n)


def _pick_accuracy(rewards: Any, mask: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Per-subset mean of `pick_correct` (argmax, random tie-break) over items: votes [S, B, n] -> [S]."""
  rewards = jnp.asarray(rewards, jnp.float32)
  mask = jnp.asarray(mask, bool)

  def acc(votes: jax.Array, key: jax.Array) -> jax.Array:
    s, b, n = votes.shape
    choice = choose_best(votes.reshape(s * b, n), jnp.broadcast_to(mask, (s, b, n)).reshape(s * b, n), key)
    ok = rules.pick_correct(choice.reshape(s, b), rewards[None], mask[None])
    return jnp.mean(ok.astype(jnp.float32), axis=-1)

  return acc


def scaling_curve(
  scores: Any,
  valid: Any,
  rewards: Any | None = None,
  mask: Any | None = None,
  meta: Any | None = None,
  *,
  ks: Sequence[int] | None = None,
  num_subsets: int = 8,
  seed: int = 0,
  metric: Metric | None = None,
  band: Band | None = None,
  neutral: Any = 5.5,
) -> dict[int, dict[str, Any]]:
  """Voting@k and MetaRM@k for each k from one pool of k_max judgements per item.

  Args:
    scores: [B, k_max, n] scores in the items' original response order (padded responses: any value).
    valid: [B, k_max] which samples parsed.
    rewards, mask: [B, n] ground truth and real-response mask for the default metric (accuracy of the
      random-tie-break argmax, `grm.pick_correct`); rewards not needed with `metric`. With `mask` a
      single-response item's votes are the mean of its kept samples (`neutral` [B] or a scalar when none; module
      docstring), without it every item is summed.
    meta: optional [B, k_max] meta-RM rewards; adds "meta" / "meta_std" columns.
    ks: sample counts to evaluate; default 1, 2, 4, ..., k_max.
    num_subsets: random subsets per k (their mean is reported, with the standard deviation over subsets).
    seed: seeds subset draws and tie-breaks; the same subsets and tie-break keys serve voting and meta, so the
      two columns are a paired comparison.
    metric: optional `metric(votes [B, n], key) -> float` (e.g. an official benchmark metric), called once per
      subset; by default the accuracy above, computed for all subsets at once.
    band: optional `band(votes [S, B, n]) -> {suffix: value}` called once per k and column with that point's
      subset votes, e.g. {"expected": ..., "ci95": [lo, hi]} (module docstring).

  Returns:
    {k: {"voting": mean, "voting_std": std, ["meta": mean, "meta_std": std,] "subsets": S}} plus
    "<column>_<suffix>" entries from `band`.
  """
  scores = jnp.asarray(scores)
  if scores.ndim != 3:
    raise ValueError(f"scores must be [B, k_max, n], got {scores.shape}")
  b, k_max, n = scores.shape
  valid = jnp.asarray(valid, bool)
  if valid.shape != (b, k_max):
    raise ValueError(f"valid must be [{b}, {k_max}], got {valid.shape}")
  if meta is not None and np.shape(meta) != (b, k_max):
    raise ValueError(f"meta must be [{b}, {k_max}], got {np.shape(meta)}")
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
  if metric is None:
    if rewards is None:
      raise ValueError("rewards are needed for the default accuracy metric (or pass metric=)")
    score_all = _pick_accuracy(rewards, jnp.ones((b, n), bool) if mask is None else mask)
  else:

    def score_all(votes: jax.Array, key: jax.Array) -> jax.Array:
      keys = jax.random.split(key, votes.shape[0])
      return jnp.asarray([metric(np.asarray(v), kk) for v, kk in zip(votes, keys, strict=True)])

  ks = default_ks(k_max) if ks is None else tuple(int(k) for k in ks)
  root = jax.random.PRNGKey(seed)
  table: dict[int, dict[str, Any]] = {}
  for k in ks:
    draw_key, tie_key = jax.random.split(jax.random.fold_in(root, k))
    row: dict[str, Any] = {"subsets": float(num_subsets)}
    columns = [("voting", None)] + ([("meta", meta)] if meta is not None else [])
    for name, m in columns:
      votes = subset_votes(scores, valid, k, draw_key, num_subsets, m, mask, neutral)
      values = np.asarray(score_all(votes, tie_key))
      row[name] = float(values.mean())
      row[f"{name}_std"] = float(values.std())
      if band is not None:
        row.update({f"{name}_{suffix}": value for suffix, value in band(np.asarray(votes)).items()})
    table[k] = row
  return table
