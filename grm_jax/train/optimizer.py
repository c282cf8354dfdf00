"""The optimizer: AdamW with a warmup + cosine or constant schedule and global-norm clipping, from config.

The paper reports only learning rates and batch sizes (RFT 5e-6, GRPO 4e-7, meta RM 1e-5, DeepSeek-GRM paper §2-§4);
AdamW with linear warmup is the common choice of every peer (Tunix, verl, TRL) and is what the presets use.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(optim: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """Linear warmup over `warmup_steps` (step s < warmup uses (s + 1) / warmup of `learning_rate`, so no step is
  spent at lr 0), then constant or cosine decay to `final_lr_fraction * learning_rate` at `total_steps`."""
  lr = float(optim["learning_rate"])
  warmup = int(optim["warmup_steps"])
  kind = optim["schedule"]
  if kind not in SCHEDULES:
    raise ValueError(f"config optim.schedule={kind!r}; choose one of {SCHEDULES}")
  if lr <= 0:
    raise ValueError(f"config optim.learning_rate must be > 0, got {lr}")
  if kind == "constant":
    main = optax.constant_schedule(lr)
  else:
    decay_steps = max(int(total_steps) - warmup, 1)
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=float(optim["final_lr_fraction"]))
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(lr / warmup, lr, warmup - 1), main], [warmup])


MOMENT_DTYPES = ("float32", "bfloat16")


def scale_by_adam_stored_as(b1: float, b2: float, eps: float, dtype) -> optax.GradientTransformation:
  """Adam's scaling with both moments *stored* in `dtype` (bf16 halves the optimizer's memory) and updated in
  float32; the state has optax's `ScaleByAdamState` shape, so the moments shard like their params."""
  dtype = jnp.dtype(dtype)

  def init(params):
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, dtype), params)
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=jax.tree.map(jnp.copy, zeros))

  def update(updates, state, params=None):
    del params
    f32 = jnp.float32
    mu = jax.tree.map(lambda m, g: b1 * m.astype(f32) + (1 - b1) * g.astype(f32), state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v.astype(f32) + (1 - b2) * jnp.square(g.astype(f32)), state.nu, updates)
    count = optax.safe_increment(state.count)
    c1, c2 = 1 - b1 ** count.astype(f32), 1 - b2 ** count.astype(f32)
    out = jax.tree.map(lambda m, v, g: ((m / c1) / (jnp.sqrt(v / c2) + eps)).astype(g.dtype), mu, nu, updates)
    store = functools.partial(jax.tree.map, lambda x: x.astype(dtype))
    return out, optax.ScaleByAdamState(count=count, mu=store(mu), nu=store(nu))

  return optax.GradientTransformation(init, update)


def make_optimizer(optim: Mapping[str, Any], total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule) for an `optim` config group (`configs.optim()`, where the defaults live): learning_rate,
  schedule, warmup_steps, final_lr_fraction, weight_decay, b1, b2, eps, grad_clip (0 = off), moment_dtype (float32 |
  bfloat16: how Adam's two moments are stored; bf16 saves a third of the f32 training state)."""
  schedule = learning_rate_schedule(optim, total_steps)
  parts = []
  clip = float(optim["grad_clip"])
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  b1, b2, eps = float(optim["b1"]), float(optim["b2"]), float(optim["eps"])
  decay = float(optim["weight_decay"])
  moments = str(optim["moment_dtype"])
  if moments not in MOMENT_DTYPES:
    raise ValueError(f"config optim.moment_dtype={moments!r}; choose one of {MOMENT_DTYPES}")
  if moments == "float32":
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=decay))
  else:  # optax.adamw's chain with the moments stored in bf16
    parts.append(optax.chain(scale_by_adam_stored_as(b1, b2, eps, moments), optax.add_decayed_weights(decay),
                             optax.scale_by_learning_rate(schedule)))
  return optax.chain(*parts), schedule
