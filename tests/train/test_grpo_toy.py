"""GRPO learns: a tiny model judging a toy verifiable task goes from chance to clearly above it.

Toy GRM: the prompt shows two "responses" as quality tokens a, b (distinct, 0..9); the model answers with two score
tokens (scores 1..10). The reward is the paper's rule (`rules.rl_reward`, Eq. 11): +1 when the better response gets
the strictly higher score, else -1 (an unparseable answer, here a non-score token, is -1). Rollouts come from the
real sampler reading the live training params; the update is `train.grpo.GrpoUpdater`, the one the stage uses.
"""

import jax
import numpy as np

from grm_jax import models, sampling
from grm_jax.grm import rules
from grm_jax.models.config import tiny
from grm_jax.train.grpo import GrpoConfig, GrpoUpdater, reference_params
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.step import init_state
from tests.optim import optim

BOS, EOS, SCORE0 = 0, 1, 2  # tokens 2..11 are scores 1..10; tokens 12..21 show qualities 0..9
G, PROMPTS = 4, 16


def config(**kw):
  g = dict(sampling=dict(temperature=1.0, max_new_tokens=2), epsilon=0.2, epsilon_high=0.0, beta=0.0, kl="k3",
           loss_agg="seq_mean_token_mean", adv_scale="group", adv_ddof=0, adv_eps=1e-6, inner_updates=1,
           micro_batches=2, reference_on_host=False)
  for key in ("temperature", "max_new_tokens"):
    if key in kw:
      g["sampling"][key] = kw.pop(key)
  g.update(kw)
  return GrpoConfig.from_config(g)


def toy_prompts(rng, count):
  pairs = [rng.choice(10, 2, replace=False) for _ in range(count)]
  return [[BOS, 12 + int(a), 12 + int(b)] for a, b in pairs], np.array(pairs, np.float64)


def score(tokens_per_prompt, qualities):
  """[P, G, 2] scores + valid from the sampled tokens, then the Eq. 11 reward against the qualities."""
  P = len(tokens_per_prompt)
  scores = np.zeros((P, G, 2))
  valid = np.zeros((P, G), bool)
  for i, samples in enumerate(tokens_per_prompt):
    for j, toks in enumerate(samples):
      ok = len(toks) == 2 and all(SCORE0 <= t < SCORE0 + 10 for t in toks)
      valid[i, j] = ok
      if ok:
        scores[i, j] = [t - SCORE0 + 1 for t in toks]
  return np.asarray(rules.rl_reward(scores, valid, qualities[:, None, :]))


def run(steps, seed=0, **kw):
  cfg = tiny("llama", vocab_size=24, num_layers=2)
  model = models.from_config(cfg, seed=seed, eos_ids=(EOS,), pad_id=BOS, bos_id=BOS)
  g = config(**kw)
  optimizer, schedule = make_optimizer(optim(3e-3), steps)
  updater = GrpoUpdater(cfg, g, optimizer, schedule)
  state = init_state(model.params, optimizer)
  ref = model.params
  rng = np.random.default_rng(seed)
  history = []
  for step in range(steps):
    prompts, qualities = toy_prompts(rng, PROMPTS)
    policy = models.Model(cfg, state.params, None, BOS, (EOS,), BOS)  # the live params, no copy
    out = sampling.generate(policy, prompts, n=G, max_new_tokens=2, temperature=1.0, seed=step, stop_token_ids=[EOS])
    rewards = score(out.tokens, qualities)
    flat = [(p, out.tokens[i][j], out.logprobs[i][j]) for i, p in enumerate(prompts) for j in range(G)]
    state, m = updater.update(state, ref, [f[0] for f in flat], [list(f[1]) for f in flat], [f[2] for f in flat],
                              rewards, pad_id=BOS, max_len=8)
    history.append(m)
  return history


def test_grpo_lifts_the_reward_of_a_toy_verifiable_task():
  history = run(150)
  before = np.mean([h["accuracy"] for h in history[:5]])
  after = np.mean([h["accuracy"] for h in history[-5:]])
  print(f"toy GRPO accuracy: first 5 steps {before:.3f}, last 5 steps {after:.3f}")
  assert before < 0.45  # chance: a valid answer ranks the pair right ~45% of the time, invalid ones are -1
  assert after > 0.8, [round(h["accuracy"], 3) for h in history]
  # At every step the rollouts' sampler log-probs equal the trainer's at the same params (f32).
  assert max(h["logp_diff_sampler_trainer"] for h in history) <= 1e-4
  assert all(abs(h["ratio"] - 1.0) < 1e-4 for h in history)  # mu = 1: old log-probs are the current ones


def test_kl_to_the_reference_grows_from_zero():
  history = run(6, beta=0.08)
  assert abs(history[0]["kl"]) < 1e-6  # step 0: policy == reference
  assert history[-1]["kl"] > 1e-6


def test_inner_updates_move_the_ratio_and_clip():
  """mu > 1: later inner steps see ratio != 1 against the fixed old log-probs, and large steps get clipped."""
  history = run(3, inner_updates=4, epsilon=0.01)
  assert all(abs(h["ratio"] - 1.0) > 1e-4 for h in history)  # the metrics are those of the last inner step
  assert max(h["clip_fraction"] for h in history) > 0


def test_one_inner_update_with_detached_logprobs_equals_a_separate_old_forward():
  """mu = 1 reuses the loss's own log-probs (detached) as the old ones; a separate forward must give the same step."""
  cfg = tiny("llama", vocab_size=24, num_layers=2)
  model = models.from_config(cfg, seed=3, eos_ids=(EOS,), pad_id=BOS, bos_id=BOS)
  optimizer, schedule = make_optimizer(optim(3e-3), 1)
  prompts, qualities = toy_prompts(np.random.default_rng(3), 4)
  out = sampling.generate(model, prompts, n=G, max_new_tokens=2, temperature=1.0, seed=3, stop_token_ids=[EOS])
  rewards = score(out.tokens, qualities)
  flat = [(p, list(out.tokens[i][j]), out.logprobs[i][j]) for i, p in enumerate(prompts) for j in range(G)]
  results = []
  for detached, on_host in ((True, False), (False, False), (True, True)):
    updater = GrpoUpdater(cfg, config(beta=0.04), optimizer, schedule)
    updater.detached_old = detached
    ref = reference_params(cfg, model.params, config(beta=0.04, reference_on_host=on_host))
    state, m = updater.update(init_state(model.params, optimizer), ref, *map(list, zip(*flat, strict=True)),
                              rewards, pad_id=BOS, max_len=8)
    results.append((state.params, m))
  (p1, m1), (p2, m2), (p3, m3) = results
  # The reference kept in host memory (grpo.reference_on_host) gives the same step.
  assert m3["kl"] == m1["kl"] and all(np.array_equal(a, b) for a, b in zip(
    jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p3), strict=True))
  diffs = [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
    jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2), strict=True)]
  assert max(diffs) < 1e-6
  assert abs(m1["loss"] - m2["loss"]) < 1e-6 and abs(m1["ratio"] - 1.0) < 1e-6
  assert m1["logp_diff_sampler_trainer"] <= 1e-4 and abs(m1["logp_diff_sampler_trainer"] - m2[
    "logp_diff_sampler_trainer"]) < 1e-6


def test_grpo_config_is_checked_once_naming_the_key():
  import pytest  # noqa: PLC0415

  from grm_jax import configs  # noqa: PLC0415

  base = configs.grpo().to_dict()
  assert GrpoConfig.from_config(base).has_kl and not GrpoConfig.from_config({**base, "beta": 0.0}).has_kl
  for key, bad in (("kl", "k4"), ("loss_agg", "sum"), ("inner_updates", 0), ("beta", -1.0)):
    with pytest.raises(ValueError, match=rf"config grpo\.{key}="):
      GrpoConfig.from_config({**base, key: bad})
  with pytest.raises(ValueError, match=r"config grpo\.sampling\.temperature=0\.0"):
    GrpoConfig.from_config({**base, "sampling": {**base["sampling"], "temperature": 0.0}})
  with pytest.raises(ValueError, match=r"missing key\(s\) \['reference_on_host'\]"):
    GrpoConfig.from_config({k: v for k, v in base.items() if k != "reference_on_host"})
