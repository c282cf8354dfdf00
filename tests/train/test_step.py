"""The train step: exact gradient accumulation, chunked log-probs, sharded == single device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import models, parallel, sampling
from grm_jax.models.config import tiny
from grm_jax.stages import common
from grm_jax.train import losses
from grm_jax.train.logprobs import token_logprobs
from grm_jax.train.optimizer import learning_rate_schedule, make_optimizer
from grm_jax.train.step import init_state, make_train_step, place_batch, split_micro_batches
from tests.optim import optim

OPTIM = optim(1e-2, schedule="cosine", warmup_steps=1, weight_decay=0.01, grad_clip=1.0)


def ragged_batch(cfg, rows=8, length=24, seed=0):
  """Right-padded rows of unequal lengths; the loss covers a different tail span of each row."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, cfg.vocab_size, (rows, length)).astype(np.int32)
  lengths = rng.integers(5, length + 1, rows)
  lengths[0] = length
  mask = np.arange(length)[None] < lengths[:, None]
  starts = rng.integers(1, lengths - 1)
  loss_mask = mask & (np.arange(length)[None] >= starts[:, None])
  tokens = np.where(mask, tokens, 0)
  return {"tokens": tokens, "mask": mask, "loss_mask": loss_mask.astype(np.float32)}


def sft_loss_fn(cfg, mode="token_mean"):
  def loss_fn(params, mb):
    logp, ent = token_logprobs(cfg, params, mb["tokens"], mb["mask"], chunk=8)
    loss = losses.nll_loss(logp, mb["loss_mask"], mode=mode)
    return loss, {"entropy": losses.aggregate(ent, mb["loss_mask"], "token_mean")}

  return loss_fn


def test_chunked_logprobs_equal_full_log_softmax():
  cfg = tiny("llama")
  model = models.from_config(cfg, seed=1)
  batch = ragged_batch(cfg)
  full = jax.nn.log_softmax(models.logits(model, batch["tokens"], batch["mask"]) / 0.7, axis=-1)
  want = np.take_along_axis(np.asarray(full[:, :-1]), batch["tokens"][:, 1:, None], -1)[..., 0]
  got, ent = jax.jit(lambda p, t, m: token_logprobs(cfg, p, t, m, 0.7, chunk=5))(
    model.params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["mask"]))
  m = batch["mask"][:, 1:]
  np.testing.assert_allclose(np.asarray(got[:, 1:])[m], want[m], atol=1e-5)
  p = np.exp(np.asarray(full[:, :-1]))
  want_ent = -(p * np.asarray(full[:, :-1])).sum(-1)
  np.testing.assert_allclose(np.asarray(ent[:, 1:])[m], want_ent[m], atol=1e-4)
  assert np.all(np.asarray(got[:, 0]) == 0)


def test_head_chunks_with_no_loss_position_are_skipped_and_the_rest_are_unchanged():
  """`needed` (the loss mask): the loss positions' log-probs, entropies and gradients equal the unmasked forward's;
  a chunk with no loss position in any row reads exactly 0 (its head was not run), one with any is computed."""
  cfg = tiny("llama")
  params = models.from_config(cfg, seed=3).params
  batch = ragged_batch(cfg, rows=4, length=24)
  batch["loss_mask"][:] = 0
  # The head reads tokens 1..23 as its positions 0..22, in six chunks of 4: token t is head position t - 1.
  batch["loss_mask"][0, 16:19] = 1  # head positions 15-17: the end of chunk 3 and the start of chunk 4
  batch["loss_mask"][2, 4] = 1  # head position 3, chunk 0: one position in one row keeps the chunk
  tokens, mask, lm = (jnp.asarray(batch[k]) for k in ("tokens", "mask", "loss_mask"))
  logprobs = jax.jit(lambda p, needed: token_logprobs(cfg, p, tokens, mask, chunk=4, needed=needed))
  full, part = logprobs(params, None), logprobs(params, lm)
  keep = np.asarray(lm) > 0
  for f, p in zip(full, part, strict=True):
    np.testing.assert_array_equal(np.asarray(p)[keep], np.asarray(f)[keep])
  head = np.asarray(part[0])[:, 1:]  # the head's [B, T-1] positions, chunked by 4
  live = {0, 3, 4}
  for c in range(6):
    values = head[:, 4 * c:4 * c + 4]
    assert np.all(values == 0) == (c not in live), (c, values)

  grad = jax.jit(jax.grad(lambda p, needed: jnp.sum(logprobs(p, needed)[0] * lm)))
  g_full, g_part = grad(params, None), grad(params, lm)
  for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_part), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean"])
def test_four_micro_batches_give_the_same_update_as_one(mode):
  cfg = tiny("qwen2")
  params = models.from_config(cfg, seed=2).params
  # eps 1e-4: Adam's first update is ~lr * g / (|g| + eps), and with eps 1e-8 a gradient element near 1e-8 turns a
  # summation-order difference of ~1e-10 into a visible update difference.
  optimizer, schedule = make_optimizer(dict(OPTIM, eps=1e-4), total_steps=10)
  step = make_train_step(sft_loss_fn(cfg, mode), optimizer, schedule, donate=False)
  batch = ragged_batch(cfg, rows=8)
  state = init_state(params, optimizer)
  one, m1 = step(state, place_batch(split_micro_batches(batch, 1)))
  four, m4 = step(state, place_batch(split_micro_batches(batch, 4)))
  np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-6)
  np.testing.assert_allclose(float(m4["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
  lr = float(schedule(0))
  assert lr > 0
  for a, b, p in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params), jax.tree.leaves(params), strict=True):
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-4 * lr
    assert np.abs(np.asarray(a) - np.asarray(p)).max() > 0  # the step moved every tensor
  if mode != "token_mean":
    return
  # A mean of per-micro-batch token means would differ: the micro-batches hold different numbers of tokens.
  per_micro = [
    float(sft_loss_fn(cfg, mode)(params, {k: v[i * 2 : i * 2 + 2] for k, v in batch.items()})[0].value)
    for i in range(4)
  ]
  assert abs(np.mean(per_micro) - float(m1["loss"])) > 1e-4


def test_sft_steps_lower_the_loss():
  cfg = tiny("llama")
  params = models.from_config(cfg, seed=3).params
  optimizer, schedule = make_optimizer(optim(3e-3), total_steps=30)
  step = make_train_step(sft_loss_fn(cfg), optimizer, schedule)
  batch = place_batch(split_micro_batches(ragged_batch(cfg, seed=4), 2))
  state = init_state(params, optimizer)
  seen = []
  for _ in range(30):
    state, m = step(state, batch)
    seen.append(float(m["loss"]))
  assert seen[-1] < 0.5 * seen[0], seen
  assert int(state.step) == 30


def test_sharded_training_matches_single_device_for_three_steps():
  cfg = tiny("llama")
  optimizer, schedule = make_optimizer(OPTIM, total_steps=10)
  batch = split_micro_batches(ragged_batch(cfg, rows=16, seed=5), 2)
  single = init_state(models.from_config(cfg, seed=6).params, optimizer)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with parallel.use_mesh(mesh, parallel.DEFAULT_RULES):
    sharded = init_state(models.from_config(cfg, seed=6).params, optimizer)
    # Made under the scope: the step keeps it (it is called below from outside any scope).
    step8 = make_train_step(sft_loss_fn(cfg), optimizer, schedule)
    sharded_batch = place_batch(batch)
  assert tuple(sharded_batch["tokens"].sharding.spec)[:2] == (None, ("data", "fsdp"))  # rows over data x fsdp
  # Adam's moments live next to their params (fsdp-sharded), not replicated.
  mu = sharded.opt_state[1][0].mu
  q_mu, q_param = mu["layers"]["attn"]["q"], sharded.params["layers"]["attn"]["q"]
  assert q_mu.sharding.spec == q_param.sharding.spec and q_param.sharding.spec != jax.sharding.PartitionSpec()
  step1 = make_train_step(sft_loss_fn(cfg), optimizer, schedule)
  for i in range(3):
    single, m1 = step1(single, place_batch(batch))
    sharded, m8 = step8(sharded, sharded_batch)
    assert abs(float(m1["loss"]) - float(m8["loss"])) <= 1e-5, (i, float(m1["loss"]), float(m8["loss"]))
  # Adam divides by sqrt(v): where a gradient is ~0, float noise of 1e-9 becomes an lr-sized step, so params
  # are compared at a fraction of the learning rate (1e-2), the losses above at 1e-5.
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_bad_micro_batch_split_names_the_key():
  with pytest.raises(ValueError, match="micro_batches"):
    split_micro_batches({"tokens": np.zeros((6, 4))}, 4)


def test_sampler_reads_the_params_the_train_step_wrote():
  """The GRPO sampler reads the trained params directly (`common.with_params(model, state.params)`, as the stage's
  step does): after a train step the policy holds the state's own buffers (no copy), and the sampler's log-probs of
  what it sampled are the trainer's under the updated params, not under the starting ones."""
  cfg = tiny("llama")
  model = models.from_config(cfg, seed=7)
  start = jax.tree.map(np.asarray, model.params)  # host copies: the step below donates the params' buffers
  optimizer, schedule = make_optimizer(optim(3e-2), total_steps=10)
  step = make_train_step(sft_loss_fn(cfg), optimizer, schedule)
  state, _ = step(init_state(model.params, optimizer),
                  place_batch(split_micro_batches(ragged_batch(cfg, seed=8), 2)))
  policy = common.with_params(model, state.params)
  assert all(a is b for a, b in zip(jax.tree.leaves(policy.params), jax.tree.leaves(state.params), strict=True))
  prompt = [3, 17, 42, 9, 100]
  out = sampling.generate(policy, [prompt], n=1, max_new_tokens=8, temperature=1.0, seed=0, stop_token_ids=[])
  tokens = np.asarray([prompt + out.tokens[0][0]], np.int32)
  sampled = np.asarray(out.logprobs[0][0])
  assert len(sampled) == 8
  mask = np.ones_like(tokens, bool)
  trained = np.asarray(token_logprobs(cfg, state.params, jnp.asarray(tokens), jnp.asarray(mask))[0])[0, len(prompt):]
  before = np.asarray(token_logprobs(cfg, start, jnp.asarray(tokens), jnp.asarray(mask))[0])[0, len(prompt):]
  print(f"sampler vs trainer (updated params): {np.abs(sampled - trained).max():.2e}; "
        f"vs starting params: {np.abs(sampled - before).max():.2e}")
  np.testing.assert_allclose(sampled, trained, atol=1e-5)
  assert np.abs(sampled - before).max() > 1e-3  # the step changed the distribution the sampler must follow


def test_warmup_never_spends_a_step_at_lr_zero():
  s = learning_rate_schedule(optim(1.0, warmup_steps=4), total_steps=10)
  np.testing.assert_allclose([float(s(i)) for i in range(6)], [0.25, 0.5, 0.75, 1.0, 1.0, 1.0], rtol=1e-6)
  s = learning_rate_schedule(optim(2.0, warmup_steps=1, schedule="cosine", final_lr_fraction=0.1),
                             total_steps=11)
  assert float(s(0)) == 2.0 and abs(float(s(11)) - 0.2) < 1e-6


def test_gradient_taken_on_the_compute_copy_is_the_same_gradient():
  """bf16 compute with f32 masters: differentiating the bf16 copy (compute_dtype) gives the update of
  differentiating the f32 params through the decoder's own cast, up to bf16 rounding of the summed gradient."""
  cfg = tiny("llama", dtype="bfloat16")  # params float32, compute bfloat16
  params = models.from_config(cfg, seed=4).params
  batch = split_micro_batches(ragged_batch(cfg, rows=8, seed=4), 2)
  optimizer, schedule = make_optimizer(OPTIM, 10)
  states, metrics = [], []
  for dtype in (None, "bfloat16"):
    step = make_train_step(sft_loss_fn(cfg), optimizer, schedule, donate=False, compute_dtype=dtype)
    state, m = step(init_state(params, optimizer), batch)
    states.append(state)
    metrics.append(m)
  assert float(metrics[0]["loss"]) == pytest.approx(float(metrics[1]["loss"]), rel=1e-6)
  assert float(metrics[0]["grad_norm"]) == pytest.approx(float(metrics[1]["grad_norm"]), rel=2e-2)
  mu = [s.opt_state[1][0].mu for s in states]
  for a, b in zip(jax.tree.leaves(mu[0]), jax.tree.leaves(mu[1]), strict=True):
    assert a.dtype == b.dtype == jnp.float32  # accumulated and kept in the params' dtype
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-2 * float(np.abs(np.asarray(a)).max()) + 1e-9)


def test_a_non_finite_step_leaves_the_state_as_it_was():
  """A NaN loss (here: a poisoned micro-batch) must reach neither the params nor Adam's moments; the step says so."""
  params = {"w": jnp.ones((3,)), "b": jnp.zeros(())}

  def loss_fn(p, mb):
    err = jnp.sum((p["w"] * mb["x"] + p["b"] - mb["y"]) ** 2)
    return losses.Weighted(err, jnp.float32(mb["x"].shape[0])), {}

  optimizer, _ = make_optimizer(optim(0.1), 10)
  step = make_train_step(loss_fn, optimizer, donate=False)
  state = init_state(params, optimizer)
  good = {"x": np.ones((1, 2, 3), np.float32), "y": np.zeros((1, 2, 3), np.float32)}
  state, m = step(state, good)
  assert float(m["skipped"]) == 0.0 and int(state.step) == 1
  before = jax.tree.map(np.asarray, state)
  bad = {"x": good["x"].copy(), "y": good["y"].copy()}
  bad["y"][0, 1, 2] = np.nan
  after, m = step(state, bad)
  assert float(m["skipped"]) == 1.0 and not np.isfinite(float(m["loss"]))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.tree.map(np.asarray, after)), strict=True):
    np.testing.assert_array_equal(a, b)
  # An infinite gradient with a finite loss is refused too.
  inf = {"x": np.full((1, 2, 3), 1e30, np.float32), "y": np.zeros((1, 2, 3), np.float32)}
  _, m = step(state, inf)
  assert float(m["skipped"]) == 1.0
