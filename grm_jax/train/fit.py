"""The supervised fit loop every SFT-like training shares (RFT's SFT, the meta RM, the baselines): shuffled epochs
of rows in fixed-size batches through the one train step, resumable.

A caller gives its loss function, `make_batch(row indices) -> {name: [B, ...] host array}` and its group's
`FitConfig`; `fit` takes the number of optimizer steps from `steps` (the paper states RFT as 900 steps at batch 1,024)
or, with `steps` 0, derives it from the rows, `epochs` and `batch_size`, builds the
optimizer from `optim`, splits each batch into `micro_batches`, and runs `train.loop.run_loop` (checkpoints and metrics
in `out_dir`). A step's rows are a fixed function of (seed, step) (`batch_indices`), so a resumed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from grm_jax import seeds
from grm_jax.models import lora
from grm_jax.train import settings as settings_lib
from grm_jax.train.loop import run_loop
from grm_jax.train.optimizer import OptimConfig, make_optimizer
from grm_jax.train.step import LossFn, init_state, make_train_step, place_batch, split_micro_batches


def epoch_order(num: int, seed: int, epoch: int) -> np.ndarray:
  """The item order of one epoch: a fixed function of (seed, epoch), so a resumed run sees the same order."""
  return np.random.default_rng([seed, epoch]).permutation(num)


def batch_indices(num: int, batch: int, step: int, seed: int) -> np.ndarray:
  """Item indices of optimizer step `step` (0-based) when walking shuffled epochs in batches of `batch`."""
  out = []
  pos = step * batch
  while len(out) < batch:
    epoch, offset = divmod(pos, num)
    take = min(batch - len(out), num - offset)
    out.extend(epoch_order(num, seed, epoch)[offset : offset + take])
    pos += take
  return np.asarray(out)


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """What `fit` reads of a training group (`configs.rft()`, `configs.metarm()`), typed and checked once."""

  epochs: float
  steps: int
  batch_size: int
  micro_batches: int
  save_every: int
  keep: int
  optim: OptimConfig

  @classmethod
  def from_config(cls, group: Mapping[str, Any], name: str) -> FitConfig:
    out = settings_lib.read(cls, {**group["checkpoint"], **group}, name,
                        optim=OptimConfig.from_config(group["optim"], f"{name}.optim"))
    settings_lib.check(name, (
      (out.epochs > 0, "epochs", out.epochs, "must be > 0"),
      (out.steps >= 0, "steps", out.steps, "optimizer steps must be >= 0 (0: derive them from epochs)"),
      (out.batch_size >= 1, "batch_size", out.batch_size, "at least 1"),
      (out.micro_batches >= 1, "micro_batches", out.micro_batches, "at least 1 (it must also divide batch_size: "
       "configs.validate checks that against the mesh)"),
      (out.save_every >= 1, "checkpoint.save_every", out.save_every, "at least 1"),
      (out.keep >= 1, "checkpoint.keep", out.keep, "at least 1"),
    ))
    return out


def num_steps(num_rows: int, epochs: float, batch_size: int, steps: int = 0) -> int:
  """`steps` if set, else the optimizer steps for `epochs` passes over `num_rows` rows (fractional epochs allowed;
  at least one step). Fixed steps walk the shuffled epochs as far as they reach (0.73 of one for the paper's RFT)."""
  if steps:
    return int(steps)
  return max(1, math.ceil(num_rows * float(epochs) / int(batch_size)))


def fit(*, name: str, params: Any, loss_fn: LossFn, make_batch: Callable[[np.ndarray], Mapping[str, np.ndarray]],
        num_rows: int, settings: FitConfig, out_dir: str, seed: int, compute_dtype: str | None = None,
        donate: bool = False, progress: bool = True, frozen: Any = None,
        on_step: Callable[[Any, int], Mapping[str, float]] | None = None) -> tuple[Any, list[dict]]:
  """Trains `params` on `num_rows` rows for `settings.steps` (or `epochs`); returns (params, metrics of the steps run
  now), its batches placed on the current mesh. `donate`: the train state takes over the params' buffers (deleted
  afterwards; no second copy on the device). `frozen`: params the loss reads and nothing trains (LoRA's base weights:
  `params` are then the adapters, `models.lora.split`).
  `on_step(params, step)`: more metrics of that step from the updated params, joined with `frozen` (a held-out
  check), logged with it."""
  s = settings
  steps = num_steps(num_rows, s.epochs, s.batch_size, s.steps)
  optimizer, schedule = make_optimizer(s.optim, steps)
  train_step = make_train_step(loss_fn, optimizer, schedule, compute_dtype=compute_dtype,
                               rng_seed=seeds.seed_for(seed, "lora_dropout"))

  def step_fn(state, step):
    batch = make_batch(batch_indices(num_rows, s.batch_size, step, seed))
    state, metrics = train_step(state, place_batch(split_micro_batches(batch, s.micro_batches)), frozen)
    if on_step is None:
      return state, metrics
    return state, {**metrics, **on_step(lora.join(state.params, frozen), step)}

  state = init_state(params, optimizer, donate=donate)
  state, history = run_loop(name=name, state=state, step_fn=step_fn, num_steps=steps, out_dir=out_dir,
                            save_every=s.save_every, keep=s.keep, progress=progress,
                            max_nonfinite=s.optim.max_nonfinite_steps)
  return state.params, history
