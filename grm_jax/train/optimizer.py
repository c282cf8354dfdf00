"""The optimizer: AdamW with a warmup + cosine or constant schedule and global-norm clipping, from config.

The paper reports only learning rates and batch sizes (RFT 5e-6, GRPO 4e-7, meta RM 1e-5, DeepSeek-GRM paper §2-§4);
AdamW with linear warmup is the common choice of every peer (Tunix, verl, TRL) and is what the presets use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(optim: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """Linear warmup over `warmup_steps` (step s < warmup uses (s + 1) / warmup of `learning_rate`, so no step is
  spent at lr 0), then constant or cosine decay to `final_lr_fraction * learning_rate` at `total_steps`."""
  lr = float(optim["learning_rate"])
  warmup = int(optim.get("warmup_steps", 0))
  kind = optim.get("schedule", "constant")
  if kind not in SCHEDULES:
    raise ValueError(f"config optim.schedule={kind!r}; choose one of {SCHEDULES}")
  if lr <= 0:
    raise ValueError(f"config optim.learning_rate must be > 0, got {lr}")
  if kind == "constant":
    main = optax.constant_schedule(lr)
  else:
    decay_steps = max(int(total_steps) - warmup, 1)
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=float(optim.get("final_lr_fraction", 0.1)))
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(lr / warmup, lr, warmup - 1), main], [warmup])


def make_optimizer(optim: Mapping[str, Any], total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule) for a config group with keys learning_rate, schedule, warmup_steps,
  final_lr_fraction, weight_decay, b1, b2, eps, grad_clip (0 = off)."""
  schedule = learning_rate_schedule(optim, total_steps)
  parts = []
  clip = float(optim.get("grad_clip", 1.0))
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  parts.append(
    optax.adamw(
      schedule,
      b1=float(optim.get("b1", 0.9)),
      b2=float(optim.get("b2", 0.95)),
      eps=float(optim.get("eps", 1e-8)),
      weight_decay=float(optim.get("weight_decay", 0.0)),
    )
  )
  return optax.chain(*parts), schedule
