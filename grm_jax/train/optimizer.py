"""The optimizer: AdamW with a warmup + cosine or constant schedule and global-norm clipping, from config.

The paper reports only learning rates and batch sizes (RFT 5e-6, GRPO 4e-7, meta RM 1e-5); the
optimizer, schedule and warmup are not stated in the paper. AdamW with linear warmup is the common choice
of every peer (Tunix, verl, TRL) and is what the presets use (ours).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from grm_jax.train import settings

SCHEDULES = ("constant", "cosine")
MOMENT_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """An `optim` config group (`configs.optim()`, where the defaults and their meaning live), typed and checked once."""

  learning_rate: float
  schedule: str
  warmup_steps: int
  final_lr_fraction: float
  weight_decay: float
  b1: float
  b2: float
  eps: float
  grad_clip: float  # 0 = off
  moment_dtype: str
  max_nonfinite_steps: int

  @classmethod
  def from_config(cls, optim: Mapping[str, Any] | OptimConfig, name: str = "optim") -> OptimConfig:
    if isinstance(optim, OptimConfig):
      return optim
    out = settings.read(cls, optim, name)
    settings.check(name, (
      (out.learning_rate > 0, "learning_rate", out.learning_rate, "must be > 0"),
      (out.schedule in SCHEDULES, "schedule", out.schedule, f"choose one of {SCHEDULES}"),
      (out.warmup_steps >= 0, "warmup_steps", out.warmup_steps, "must be >= 0"),
      (out.moment_dtype in MOMENT_DTYPES, "moment_dtype", out.moment_dtype, f"choose one of {MOMENT_DTYPES}"),
      (out.grad_clip >= 0, "grad_clip", out.grad_clip, "must be >= 0 (0 = off)"),
      (out.max_nonfinite_steps >= 0, "max_nonfinite_steps", out.max_nonfinite_steps, "must be >= 0 (0 = never stop)"),
    ))
    return out


def learning_rate_schedule(optim: Mapping[str, Any] | OptimConfig, total_steps: int) -> optax.Schedule:
  """Linear warmup over `warmup_steps` (step s < warmup uses (s + 1) / warmup of `learning_rate`, so no step is
  spent at lr 0), then constant or cosine decay to `final_lr_fraction * learning_rate` at `total_steps`."""
  o = OptimConfig.from_config(optim)
  lr, warmup = o.learning_rate, o.warmup_steps
  if o.schedule == "constant":
    main = optax.constant_schedule(lr)
  else:
    decay_steps = max(int(total_steps) - warmup, 1)
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=o.final_lr_fraction)
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(lr / warmup, lr, warmup - 1), main], [warmup])



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


def make_optimizer(optim: Mapping[str, Any] | OptimConfig,
                   total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule) for an `optim` config group: AdamW with global-norm clipping; `moment_dtype` says how
  Adam's two moments are stored (bf16 saves a third of the f32 training state)."""
  o = OptimConfig.from_config(optim)
  schedule = learning_rate_schedule(o, total_steps)
  parts = []
  if o.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(o.grad_clip))
  if o.moment_dtype == "float32":
    parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay))
  else:  # optax.adamw's chain with the moments stored in bf16
    parts.append(optax.chain(scale_by_adam_stored_as(o.b1, o.b2, o.eps, o.moment_dtype),
                             optax.add_decayed_weights(o.weight_decay), optax.scale_by_learning_rate(schedule)))
  return optax.chain(*parts), schedule
