"""Loss functions for RFT (SFT-style NLL), GRPO, the meta RM (BCE) and the Bradley–Terry scalar RM baseline.

Every loss returns a `Weighted` (unreduced sum, denominator) instead of a mean. Frameworks that return means have
repeatedly shipped normalisation bugs under micro-batching and data parallelism (TRL #2995, #3021): the mean of
micro-batch token-means is not the token-mean of the step when rows have unequal lengths. Adding totals and weights
separately and dividing once keeps every mode exact however the step is split.

All functions are pure jnp, float32, and jittable with the string options (`mode`, `kl`, `scale`) held static.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Divides 0/0 to 0 (an all-padding micro-batch contributes nothing) without changing any real denominator, which is
# at least 1 (a token count, a row count) or a sum of positive sample weights far above this.
_TINY = 1e-12

# Bounds the log-ratio before exp in the k3 estimator: exp(20) ~ 4.9e8 is finite in float32, whereas a policy that
# assigns near-zero probability to a reference token can give |log ratio| in the hundreds and overflow to inf/NaN.
_KL_LOG_RATIO_CLAMP = 20.0

AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_KINDS = ("k1", "k2", "k3")
ADV_SCALES = ("group", "batch", "none")


class Weighted(NamedTuple):
  """An unreduced sum and its denominator.

  Gradient accumulation across micro-batches and data shards adds totals and weights separately and divides once, so
  token-mean over the whole optimizer step is exact.
  """

  total: jax.Array  # scalar float32
  weight: jax.Array  # scalar float32

  @property
  def value(self) -> jax.Array:
    return self.total / jnp.maximum(self.weight, _TINY)

  def __add__(self, other: Weighted) -> Weighted:  # type: ignore[override]
    # tuple.__add__ would concatenate into a 4-tuple; accumulation needs elementwise sums.
    if not isinstance(other, Weighted):
      return NotImplemented
    return Weighted(self.total + other.total, self.weight + other.weight)


def combine(a, b):
  """Elementwise sum of two `Weighted`, or two equally structured pytrees of them (e.g. metric dicts)."""
  return jax.tree.map(jnp.add, a, b)


def _f32(x) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


def aggregate(per_token, mask, mode: str = "seq_mean_token_mean", max_len: int | None = None) -> Weighted:
  """Reduce a [B, T] per-token quantity over the tokens where `mask` is non-zero.

  Modes (verl / Tunix names):
    token_mean: every token of the step counts equally (DAPO); long responses dominate.
    seq_mean_token_mean: mean over responses of each response's token mean (paper Eq. 15, original GRPO).
    seq_mean_token_sum_norm: token sums divided by a constant `max_len`, then mean over responses (Dr.GRPO), which
      removes the 1/|o_i| length bias of Eq. 15.
  Rows without any counted token are excluded from the sequence-level denominators rather than counted as zero.
  """
  if mode not in AGG_MODES:
    raise ValueError(f"unknown loss aggregation mode {mode!r}; expected one of {AGG_MODES}")
  if mode == "seq_mean_token_sum_norm":
    if max_len is None:
      raise ValueError("mode 'seq_mean_token_sum_norm' (Dr.GRPO) requires max_len (the fixed response-length budget)")
    if isinstance(max_len, int | float) and max_len <= 0:
      raise ValueError(f"max_len must be positive, got {max_len}")
  per_token = _f32(per_token)
  m = _f32(mask)
  # where() rather than a bare product, so a NaN/inf sitting in a padding position cannot leak into the sum.
  masked = jnp.where(m != 0, per_token * m, 0.0)
  if mode == "token_mean":
    return Weighted(jnp.sum(masked), jnp.sum(m))
  row_sum = jnp.sum(masked, axis=-1)
  row_n = jnp.sum(m, axis=-1)
  has_tokens = row_n > 0
  n_rows = jnp.sum(has_tokens.astype(jnp.float32))
  if mode == "seq_mean_token_mean":
    row_mean = jnp.where(has_tokens, row_sum / jnp.maximum(row_n, 1.0), 0.0)
    return Weighted(jnp.sum(row_mean), n_rows)
  return Weighted(jnp.sum(row_sum) / _f32(max_len), n_rows)


def kl_estimate(logp, ref_logp, kind: str = "k3") -> jax.Array:
  """Per-token estimate of KL(pi || ref) from tokens sampled from pi (Schulman's k1/k2/k3).

  With r = ref_logp - logp: k1 = -r (unbiased, high variance, can be negative); k2 = r^2 / 2 (biased, low variance);
  k3 = exp(r) - r - 1 (unbiased, non-negative; the DeepSeekMath/GRPO estimator and the default). k3 clamps r to
  [-20, 20] before exp; see `_KL_LOG_RATIO_CLAMP`.
  """
  if kind not in KL_KINDS:
    raise ValueError(f"unknown KL estimator kind {kind!r}; expected one of {KL_KINDS}")
  r = _f32(ref_logp) - _f32(logp)
  if kind == "k1":
    return -r
  if kind == "k2":
    return 0.5 * jnp.square(r)
  r = jnp.clip(r, -_KL_LOG_RATIO_CLAMP, _KL_LOG_RATIO_CLAMP)
  # expm1 avoids the cancellation in exp(r) - 1 near r = 0, where policy and reference almost agree (the usual case).
  return jnp.expm1(r) - r


def _std(x, axis, ddof: int) -> jax.Array:
  # jnp.std with ddof >= n divides by zero (NaN for a singleton group with ddof=1); the centred sum of squares is
  # then 0, so flooring the divisor at 1 defines that std as 0 and the advantage as exactly 0.
  n = x.size if axis is None else x.shape[axis]
  centred = x - jnp.mean(x, axis=axis, keepdims=True)
  return jnp.sqrt(jnp.sum(jnp.square(centred), axis=axis, keepdims=True) / max(n - ddof, 1))


def group_advantages(rewards, *, ddof: int = 0, scale: str = "group", eps: float = 1e-6) -> jax.Array:
  """GRPO advantages for rewards [P, G] (P prompts x G rollouts): group-centred, then scaled.

  scale: "group" divides by each group's std (original GRPO), "batch" by the std of all rewards in the batch (less
  noisy for small G), "none" leaves them centred (Dr.GRPO, which argues std scaling up-weights near-uniform groups).
  ddof=0 (population std; the paper does not state it, ours) gives +1.73 / -0.58 for 1 correct of 4. Groups whose
  rewards are all equal get exactly 0, since centring zeroes them before any division.
  """
  if scale not in ADV_SCALES:
    raise ValueError(f"unknown advantage scale {scale!r}; expected one of {ADV_SCALES}")
  r = _f32(rewards)
  centred = r - jnp.mean(r, axis=-1, keepdims=True)
  if scale == "none":
    return centred
  std = _std(r, axis=-1, ddof=ddof) if scale == "group" else _std(r, axis=None, ddof=ddof)
  return centred / (std + eps)


def zero_variance_fraction(rewards) -> jax.Array:
  """Fraction of groups (rows of [P, G]) whose rewards are all equal: they carry no GRPO gradient signal."""
  r = _f32(rewards)
  return jnp.mean(jnp.all(r == r[..., :1], axis=-1).astype(jnp.float32))


def grpo_loss(
  logp,
  old_logp,
  ref_logp,
  advantages,
  mask,
  *,
  epsilon: float,
  epsilon_high: float | None,
  beta: float,
  kl: str,
  mode: str,
  max_len: int | None = None,
) -> tuple[Weighted, dict[str, Weighted]]:
  """Clipped-surrogate GRPO loss (negated objective of paper Eq. 15) with a per-token KL penalty. The settings have
  no defaults here: they come from the config (`configs.grpo()`, through `train.grpo.GrpoConfig`).

  logp/old_logp/ref_logp/mask are [B, T]; advantages is [B], one per response, shared by its tokens.
  epsilon_high (DAPO "clip-higher") defaults to epsilon. ref_logp may be None only when beta == 0.
  Metrics are token-weighted `Weighted`s, except "pg_loss", which is aggregated with `mode` like the loss.
  """
  logp = _f32(logp)
  m = _f32(mask)
  adv = _f32(advantages)[..., None]
  lo = 1.0 - epsilon
  hi = 1.0 + (epsilon if epsilon_high is None else epsilon_high)
  ratio = jnp.exp(logp - _f32(old_logp))
  clipped = jnp.clip(ratio, lo, hi)
  pg = -jnp.minimum(ratio * adv, clipped * adv)
  # The clipped term is the active min only where clipping removes incentive: above hi for A > 0, below lo for A < 0.
  clip_active = jnp.where(adv > 0, ratio > hi, jnp.where(adv < 0, ratio < lo, False))

  n_tok = jnp.sum(m)

  def token_mean(x):
    return Weighted(jnp.sum(jnp.where(m != 0, x * m, 0.0)), n_tok)

  metrics = {
    "clip_fraction": token_mean(clip_active.astype(jnp.float32)),
    "ratio": token_mean(ratio),
    "pg_loss": aggregate(pg, m, mode, max_len),
  }
  per_token = pg
  if ref_logp is None:
    if not (isinstance(beta, int | float) and beta == 0):
      raise ValueError(f"ref_logp is None but beta={beta!r}; the KL penalty needs reference log-probs")
  else:
    kl_tok = kl_estimate(logp, ref_logp, kl)
    metrics["kl"] = token_mean(kl_tok)
    per_token = pg + beta * kl_tok
  return aggregate(per_token, m, mode, max_len), metrics


def nll_loss(logp, mask, mode: str = "token_mean", max_len: int | None = None) -> Weighted:
  """SFT / RFT loss: negative log-likelihood of the target tokens, reduced with `aggregate`."""
  return aggregate(-_f32(logp), mask, mode, max_len)


def bce_loss(logits, labels, weights=None) -> tuple[Weighted, dict[str, Weighted]]:
  """Binary cross-entropy on [B] logits with 0/1 labels, weighted per row (default 1).

  softplus form: log(1 + exp(-x)) for y = 1 and log(1 + exp(x)) for y = 0, finite for any |x| where the naive
  log(sigmoid(x)) underflows to log(0).
  """
  x = _f32(logits)
  y = _f32(labels)
  w = jnp.ones_like(x) if weights is None else _f32(weights)
  per_row = jax.nn.softplus(-x) * y + jax.nn.softplus(x) * (1.0 - y)
  total_w = jnp.sum(w)
  correct = ((x > 0) == (y > 0.5)).astype(jnp.float32)
  return Weighted(jnp.sum(per_row * w), total_w), {"accuracy": Weighted(jnp.sum(correct * w), total_w)}


def bradley_terry_loss(scores, rewards, mask) -> tuple[Weighted, dict[str, Weighted]]:
  """Bradley–Terry loss of a scalar RM (the paper's DeepSeek-BTRM baseline, Table 2) on items of up to n responses.

  scores, rewards, mask: [B, n_max] (mask false on padding). Every ordered pair (i, j) of real responses of one item
  with rewards_i > rewards_j is one comparison, loss -log sigmoid(s_i - s_j); a multi-response item gives all its
  such pairs (a ranked list of n distinct rewards: n (n - 1) / 2), equal rewards give none. The total is over every
  pair of the batch and the weight is the pair count, so the step's loss is the mean over its pairs and an item with
  more responses counts more pairs (ours: the paper does not say how lists are reduced).

  Metrics (per pair): "accuracy" = s_i > s_j strictly, "ties" = s_i == s_j (a zero-initialised head ties every pair;
  a random tie-break would get half of them right).
  """
  m = jnp.asarray(mask, bool)
  # Padding scores are zeroed first: a NaN there would otherwise reach the gradient through where()'s other branch.
  s = jnp.where(m, _f32(scores), 0.0)
  r = jnp.where(m, _f32(rewards), 0.0)
  pair = m[:, :, None] & m[:, None, :] & (r[:, :, None] > r[:, None, :])  # [B, n, n]: response i preferred to j
  d = s[:, :, None] - s[:, None, :]
  n_pairs = jnp.sum(pair.astype(jnp.float32))

  def count(x):
    return jnp.sum(jnp.where(pair, x, 0.0).astype(jnp.float32))

  # softplus(-d) = -log sigmoid(d), finite for any |d| (see bce_loss).
  return Weighted(count(jax.nn.softplus(-d)), n_pairs), {
    "accuracy": Weighted(count((d > 0).astype(jnp.float32)), n_pairs),
    "ties": Weighted(count((d == 0).astype(jnp.float32)), n_pairs),
  }
