"""Losses against independent float64 NumPy references written with explicit loops (paper Eq. 15, Dr.GRPO, DAPO)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.train import losses as L

TOL = dict(rtol=1e-6, atol=1e-6)
# The paper's GRPO settings (27B: beta 0.08, Eq. 15's per-sequence mean, original GRPO's k3 KL) with our clip 0.2 (not
# stated in the paper), for the tests that are not about one of them (`losses.grpo_loss` has no defaults).
PAPER = dict(epsilon=0.2, epsilon_high=None, beta=0.08, kl="k3", mode="seq_mean_token_mean")


def grpo_loss(*args, **kw):
  return L.grpo_loss(*args, **{**PAPER, **kw})

# --------------------------------------------------------------------------- NumPy references (loops on purpose)


def ref_advantages(rewards, ddof=0, scale="group", eps=1e-6):
  rewards = np.asarray(rewards, np.float64)
  out = np.zeros_like(rewards)
  all_r = rewards.ravel()
  n_all = len(all_r)
  batch_std = math.sqrt(sum((v - all_r.mean()) ** 2 for v in all_r) / max(n_all - ddof, 1))
  for p, row in enumerate(rewards):
    g = len(row)
    mu = sum(row) / g
    std = math.sqrt(sum((v - mu) ** 2 for v in row) / max(g - ddof, 1))
    for i, v in enumerate(row):
      if scale == "none":
        out[p, i] = v - mu
      else:
        out[p, i] = (v - mu) / ((std if scale == "group" else batch_std) + eps)
  return out


def ref_kl(lp, rlp, kind):
  r = rlp - lp
  return {"k1": -r, "k2": 0.5 * r * r, "k3": math.exp(r) - r - 1}[kind]


def ref_grpo(logp, old, ref, adv, mask, eps=0.2, eps_high=None, beta=0.08, kind="k3", mode="seq_mean_token_mean",
             max_len=None):
  """Returns (loss, mean token kl, clipped-token count, token count) in float64."""
  hi = 1 + (eps if eps_high is None else eps_high)
  lo = 1 - eps
  seq_terms, all_tok, kls, n_clip = [], [], [], 0
  for i in range(logp.shape[0]):
    row = []
    for t in range(logp.shape[1]):
      if not mask[i, t]:
        continue
      ratio = math.exp(float(logp[i, t]) - float(old[i, t]))
      a = float(adv[i])
      surrogate = min(ratio * a, min(max(ratio, lo), hi) * a)
      k = ref_kl(float(logp[i, t]), float(ref[i, t]), kind)
      kls.append(k)
      n_clip += (a > 0 and ratio > hi) or (a < 0 and ratio < lo)
      row.append(-surrogate + beta * k)
    all_tok += row
    if row:
      seq_terms.append(sum(row) / len(row) if mode == "seq_mean_token_mean" else sum(row) / (max_len or 1))
  loss = sum(all_tok) / len(all_tok) if mode == "token_mean" else sum(seq_terms) / len(seq_terms)
  return loss, sum(kls) / len(kls), n_clip, len(all_tok)


# --------------------------------------------------------------------------- fixtures


def golden_batch(seed=0):
  """3 prompts x G=4, lengths 1..7 (ragged), rewards +-1 with group 2 all equal; old_logp perturbed so some clip."""
  rng = np.random.default_rng(seed)
  P, G, T = 3, 4, 7
  lengths = np.array([1, 7, 3, 5, 2, 6, 4, 7, 7, 1, 5, 3])
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
  logp = rng.uniform(-3.0, -0.05, (P * G, T)).astype(np.float32)
  old = (logp + rng.normal(0, 0.3, logp.shape)).astype(np.float32)
  ref = (logp + rng.normal(0, 0.2, logp.shape)).astype(np.float32)
  rewards = np.array([[1, -1, -1, -1], [1, 1, -1, 1], [-1, -1, -1, -1]], np.float32)
  return logp, old, ref, rewards, mask


# --------------------------------------------------------------------------- advantages


def test_paper_example_one_correct_of_four():
  """1 correct of 4 (a worked example from a secondary analysis, not the paper): +1.73 / -0.58, population std."""
  adv = np.asarray(L.group_advantages(jnp.array([[1.0, -1.0, -1.0, -1.0]])))
  np.testing.assert_allclose(adv[0], [math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)],
                             rtol=1e-5)
  assert adv[0, 0] == pytest.approx(1.732, abs=1e-3) and adv[0, 1] == pytest.approx(-0.577, abs=1e-3)


@pytest.mark.parametrize("ddof, scale", [(0, "group"), (1, "group"), (0, "batch"), (1, "batch"), (0, "none")])
def test_group_advantages_match_reference(ddof, scale):
  rewards = np.array([[1, -1, -1, -1], [0.5, 2.0, -1.0, 0.0], [3, 3, 3, 3]], np.float32)
  adv = np.asarray(L.group_advantages(rewards, ddof=ddof, scale=scale))
  np.testing.assert_allclose(adv, ref_advantages(rewards, ddof, scale), **TOL)
  assert np.all(adv[2] == 0.0)  # zero-variance group: exactly zero, not merely small


def test_singleton_groups_give_zero_not_nan():
  for ddof in (0, 1):
    for scale in ("group", "batch"):
      adv = np.asarray(L.group_advantages(jnp.array([[1.0], [-1.0]]), ddof=ddof, scale=scale))
      assert np.all(adv == 0.0), (ddof, scale, adv)


def test_zero_variance_fraction():
  rewards = jnp.array([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 2.0]])
  assert float(L.zero_variance_fraction(rewards)) == 0.5


# --------------------------------------------------------------------------- GRPO golden values


@pytest.mark.parametrize(
  "mode, kind, eps_high, beta",
  [
    ("seq_mean_token_mean", "k3", None, 0.08),  # paper Eq. 15, beta from the paper
    ("token_mean", "k3", None, 0.08),
    ("seq_mean_token_sum_norm", "k3", None, 0.08),
    ("seq_mean_token_mean", "k1", 0.28, 0.5),  # asymmetric clip-higher
    ("token_mean", "k2", 0.28, 0.5),
  ],
)
def test_grpo_loss_golden(mode, kind, eps_high, beta):
  logp, old, ref, rewards, mask = golden_batch()
  adv = L.group_advantages(rewards).reshape(-1)
  np.testing.assert_allclose(np.asarray(adv), ref_advantages(rewards).ravel(), **TOL)
  max_len = 7 if mode == "seq_mean_token_sum_norm" else None
  loss, metrics = grpo_loss(logp, old, ref, adv, mask, epsilon=0.2, epsilon_high=eps_high, beta=beta, kl=kind,
                              mode=mode, max_len=max_len)
  want, want_kl, n_clip, n_tok = ref_grpo(logp, old, ref, ref_advantages(rewards).ravel(), mask, 0.2, eps_high, beta,
                                          kind, mode, max_len)
  np.testing.assert_allclose(float(loss.value), want, **TOL)
  np.testing.assert_allclose(float(metrics["kl"].value), want_kl, **TOL)
  assert float(metrics["clip_fraction"].total) == n_clip and float(metrics["clip_fraction"].weight) == n_tok
  assert n_clip > 0  # the batch really exercises clipping
  # pg_loss is the beta=0 loss, aggregated the same way.
  want_pg = ref_grpo(logp, old, ref, ref_advantages(rewards).ravel(), mask, 0.2, eps_high, 0.0, kind, mode, max_len)[0]
  np.testing.assert_allclose(float(metrics["pg_loss"].value), want_pg, **TOL)


def test_modes_differ_and_beta_zero_allows_no_reference():
  logp, old, ref, rewards, mask = golden_batch()
  adv = L.group_advantages(rewards).reshape(-1)
  values = {m: float(grpo_loss(logp, old, ref, adv, mask, mode=m, max_len=7)[0].value) for m in L.AGG_MODES}
  assert len(set(values.values())) == 3, values
  loss, metrics = grpo_loss(logp, old, None, adv, mask, beta=0.0)
  assert "kl" not in metrics
  np.testing.assert_allclose(float(loss.value), float(metrics["pg_loss"].value), **TOL)
  with pytest.raises(ValueError, match="beta"):
    grpo_loss(logp, old, None, adv, mask, beta=0.08)


def test_grpo_loss_jits():
  logp, old, ref, rewards, mask = golden_batch()
  adv = L.group_advantages(rewards).reshape(-1)
  f = jax.jit(functools.partial(L.grpo_loss, **{**PAPER, "mode": "token_mean"}))
  loss, _ = f(logp, old, ref, adv, mask)
  eager, _ = grpo_loss(logp, old, ref, adv, mask, mode="token_mean")
  np.testing.assert_allclose(float(loss.value), float(eager.value), **TOL)


# --------------------------------------------------------------------------- gradient


@pytest.mark.parametrize("mode", L.AGG_MODES)
def test_gradient_at_ratio_one(mode):
  logp, _, ref, rewards, mask = golden_batch(seed=1)
  mask[5] = 0.0  # an empty row must not count in the sequence denominator
  adv = np.asarray(L.group_advantages(rewards)).reshape(-1)
  beta, max_len = 0.08, 9
  old = logp.copy()  # ratio == 1 exactly: on-policy first inner step

  def f(lp):
    return grpo_loss(lp, old, ref, adv, mask, beta=beta, mode=mode, max_len=max_len)[0].value

  g = np.asarray(jax.grad(f)(jnp.asarray(logp)))
  lengths = mask.sum(1)
  n_rows = int((lengths > 0).sum())
  want = np.zeros_like(logp, dtype=np.float64)
  for i in range(logp.shape[0]):
    for t in range(logp.shape[1]):
      if not mask[i, t]:
        continue
      d_tok = -adv[i] + beta * (1.0 - math.exp(float(ref[i, t]) - float(logp[i, t])))
      norm = {"seq_mean_token_mean": n_rows * lengths[i], "token_mean": mask.sum(),
              "seq_mean_token_sum_norm": n_rows * max_len}[mode]
      want[i, t] = d_tok / norm
  np.testing.assert_allclose(g, want, **TOL)
  assert np.all(g[mask == 0] == 0.0)


# --------------------------------------------------------------------------- exact accumulation


@pytest.mark.parametrize("mode", L.AGG_MODES)
def test_micro_batch_accumulation_is_exact(mode):
  rng = np.random.default_rng(3)
  B, T = 8, 9
  lengths = np.array([9, 1, 4, 0, 7, 2, 9, 3])  # unequal, one empty row
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
  logp = rng.uniform(-2, 0, (B, T)).astype(np.float32)
  old = (logp + rng.normal(0, 0.3, (B, T))).astype(np.float32)
  ref = (logp + rng.normal(0, 0.2, (B, T))).astype(np.float32)
  adv = rng.normal(size=B).astype(np.float32)
  kw = dict(mode=mode, max_len=T)
  full_loss, full_metrics = grpo_loss(logp, old, ref, adv, mask, **kw)
  parts = [grpo_loss(logp[s], old[s], ref[s], adv[s], mask[s], **kw) for s in np.split(np.arange(B), 4)]
  acc_loss, acc_metrics = functools.reduce(L.combine, parts)
  np.testing.assert_allclose(float(acc_loss.value), float(full_loss.value), rtol=1e-6, atol=1e-7)
  for k in full_metrics:
    np.testing.assert_allclose(float(acc_metrics[k].value), float(full_metrics[k].value), rtol=1e-6, atol=1e-7)
  # The naive mean of micro-batch means is wrong here, which is why Weighted exists (except Dr.GRPO's constant norm).
  naive = np.mean([float(p[0].value) for p in parts])
  if mode != "seq_mean_token_sum_norm":
    assert abs(naive - float(full_loss.value)) > 1e-4
  # Weighted.__add__ agrees with combine and is not tuple concatenation.
  summed = functools.reduce(lambda a, b: a + b, [p[0] for p in parts])
  assert isinstance(summed, L.Weighted) and len(summed) == 2
  np.testing.assert_allclose(float(summed.value), float(full_loss.value), rtol=1e-6)


def test_empty_weight_gives_zero_value():
  w = L.aggregate(jnp.full((2, 3), 5.0), jnp.zeros((2, 3)), "seq_mean_token_mean")
  assert float(w.value) == 0.0 and float(w.weight) == 0.0


# --------------------------------------------------------------------------- bad input


def test_bad_names_raise():
  x, m = jnp.zeros((2, 3)), jnp.ones((2, 3))
  with pytest.raises(ValueError, match="tokens_mean"):
    L.aggregate(x, m, "tokens_mean")
  with pytest.raises(ValueError, match="k4"):
    L.kl_estimate(x, x, "k4")
  with pytest.raises(ValueError, match="max_len"):
    L.aggregate(x, m, "seq_mean_token_sum_norm")
  with pytest.raises(ValueError, match="max_len"):
    grpo_loss(x, x, x, jnp.zeros(2), m, mode="seq_mean_token_sum_norm")
  with pytest.raises(ValueError, match="std_all"):
    L.group_advantages(x, scale="std_all")


def test_k3_is_finite_for_extreme_log_ratios():
  k = np.asarray(L.kl_estimate(jnp.array([-200.0, 0.0, -1e-3]), jnp.array([0.0, -200.0, -1e-3])))
  assert np.all(np.isfinite(k)) and np.all(k >= 0) and k[2] == 0.0


# --------------------------------------------------------------------------- SFT / BCE


def test_nll_token_mean():
  logp = np.array([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]], np.float32)
  mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  w = L.nll_loss(logp, mask)
  assert float(w.weight) == 3.0
  np.testing.assert_allclose(float(w.value), (1 + 2 + 4) / 3, **TOL)
  np.testing.assert_allclose(float(L.nll_loss(logp, mask, "seq_mean_token_mean").value), (1.5 + 4) / 2, **TOL)


def test_bce_matches_reference_and_is_stable():
  logits = np.array([-80.0, -3.0, -0.5, 0.0, 0.7, 4.0, 80.0, 80.0, -80.0], np.float32)
  labels = np.array([0, 1, 0, 1, 1, 0, 1, 0, 1], np.float32)
  weights = np.array([1, 2, 1, 1, 0.5, 1, 3, 1, 1], np.float32)

  def ref_row(x, y):  # log1p(exp(-|x|)) + max(..) form, in float64
    x = float(x)
    sp = lambda z: max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    return y * sp(-x) + (1 - y) * sp(x)

  rows = [ref_row(x, y) for x, y in zip(logits, labels, strict=True)]
  acc = [float((x > 0) == (y > 0.5)) for x, y in zip(logits, labels, strict=True)]
  loss, metrics = L.bce_loss(logits, labels)
  assert np.isfinite(float(loss.value))
  np.testing.assert_allclose(float(loss.value), np.mean(rows), **TOL)
  np.testing.assert_allclose(float(metrics["accuracy"].value), np.mean(acc), **TOL)
  wloss, wmetrics = L.bce_loss(logits, labels, weights)
  np.testing.assert_allclose(float(wloss.value), np.dot(rows, weights) / weights.sum(), **TOL)
  np.testing.assert_allclose(float(wmetrics["accuracy"].value), np.dot(acc, weights) / weights.sum(), **TOL)
  g = np.asarray(jax.grad(lambda x: L.bce_loss(x, labels)[0].value)(jnp.asarray(logits)))
  assert np.all(np.isfinite(g))


# --------------------------------------------------------------------------- Bradley–Terry (the BTRM baseline)


def ref_bradley_terry(scores, rewards, ns):
  """float64 loops: every ordered pair of an item's first n responses with r_i > r_j; (mean loss, acc, ties, pairs)."""
  losses, acc, ties = [], [], []
  for s, r, n in zip(scores, rewards, ns, strict=True):
    for i in range(n):
      for j in range(n):
        if r[i] > r[j]:
          d = float(s[i]) - float(s[j])
          losses.append(max(-d, 0.0) + math.log1p(math.exp(-abs(d))))  # -log sigmoid(d)
          acc.append(float(d > 0))
          ties.append(float(d == 0))
  return np.mean(losses), np.mean(acc), np.mean(ties), len(losses)


def test_bradley_terry_matches_reference_on_pairs_and_lists():
  rng = np.random.default_rng(0)
  # Pairs, lists of 3 and 4 with tied rewards, an all-tied item (no pair) and padding up to n_max = 4.
  ns = [2, 2, 3, 4, 4, 3, 2, 1]
  rewards = np.full((len(ns), 4), np.nan, np.float32)  # NaN padding: must not reach the loss or its gradient
  rewards[0, :2] = [1, 0]
  rewards[1, :2] = [0, 1]
  rewards[2, :3] = [2, 1, 1]  # 2 pairs
  rewards[3, :4] = [3, 1, 3, 0]  # 5 pairs
  rewards[4, :4] = rng.integers(0, 4, 4)
  rewards[5, :3] = [1, 1, 1]  # no pair
  rewards[6, :2] = [0.2, 0.7]
  rewards[7, :1] = [1]
  scores = rng.normal(size=(len(ns), 4)).astype(np.float32) * 3
  scores[0, 1] = scores[0, 0]  # a tie in scores
  mask = np.arange(4)[None, :] < np.asarray(ns)[:, None]
  scores_padded = np.where(mask, scores, np.nan).astype(np.float32)
  want_loss, want_acc, want_ties, pairs = ref_bradley_terry(scores, rewards, ns)
  loss, metrics = jax.jit(L.bradley_terry_loss)(scores_padded, rewards, mask)
  assert float(loss.weight) == pairs >= 1 + 1 + 2 + 5 + 1
  np.testing.assert_allclose(float(loss.value), want_loss, **TOL)
  np.testing.assert_allclose(float(metrics["accuracy"].value), want_acc, **TOL)
  np.testing.assert_allclose(float(metrics["ties"].value), want_ties, **TOL)
  g = np.asarray(jax.grad(lambda s: L.bradley_terry_loss(s, rewards, mask)[0].total)(jnp.asarray(scores_padded)))
  assert np.all(np.isfinite(g)) and np.all(g[~mask] == 0)
  # The gradient of the summed loss: d/ds_i sum -log sigmoid(s_w - s_l) = -(1 - sigmoid(d)) for a winner.
  assert g[0, 0] < 0 < g[0, 1]
  # A batch without any pair (single responses, all-tied lists) is 0 / 0 -> 0, not NaN.
  empty, _ = L.bradley_terry_loss(scores[5:6], rewards[5:6], mask[5:6])
  assert float(empty.weight) == 0 and float(empty.value) == 0


def test_bradley_terry_micro_batches_add_up():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(6, 3)).astype(np.float32)
  rewards = rng.integers(0, 3, (6, 3)).astype(np.float32)
  mask = rng.random((6, 3)) < 0.8
  whole, _ = L.bradley_terry_loss(scores, rewards, mask)
  parts = L.combine(L.bradley_terry_loss(scores[:2], rewards[:2], mask[:2])[0],
                    L.bradley_terry_loss(scores[2:], rewards[2:], mask[2:])[0])
  np.testing.assert_allclose(float(parts.value), float(whole.value), **TOL)
