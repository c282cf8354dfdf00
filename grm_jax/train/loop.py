"""The resumable training loop every stage runs: restore, step, log, checkpoint, stop cleanly on preemption.

A stage passes `step_fn(state, step) -> (state, metrics)` that does everything one optimizer step needs (build
the batch for `step`, sample rollouts, update). Because a step's data and randomness are a pure function of
(seed, step), restoring the state of step s and running steps s+1... reproduces an uninterrupted run exactly;
the checkpoint's meta records the step so nothing else has to be remembered.

A step whose update the train step refused (metric "skipped" = 1: its loss or gradient norm was not finite, see
`train.step`) leaves the state as it was; `max_nonfinite` such steps in a row stop the stage with `TrainingDiverged`,
before anything is written as the stage's output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import tqdm
from absl import logging

from grm_jax import files
from grm_jax.train.checkpoint import Checkpointer, abstract_like
from grm_jax.train.errors import Preempted, TrainingDiverged
from grm_jax.train.metrics import MetricsWriter


def run_loop(
  *,
  name: str,
  state: Any,
  step_fn: Callable[[Any, int], tuple[Any, dict]],
  num_steps: int,
  out_dir: str,
  save_every: int,
  keep: int,
  progress: bool = True,
  meta: dict | None = None,
  max_nonfinite: int = 3,
) -> tuple[Any, list[dict]]:
  """Runs steps [restored step, num_steps) and returns (final state, metrics of the steps run now).

  Writes `out_dir/checkpoints/` (orbax) and `out_dir/metrics.jsonl` (+ TensorBoard in `out_dir/tb` if available).
  The last step is always checkpointed, so a finished loop restarts as a no-op. `max_nonfinite`: skipped steps in a
  row (see the module docstring) that stop the stage; 0 = never stop.
  """
  ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"), keep=keep, save_every=max(1, int(save_every)))
  start = 0
  try:
    if ckpt.latest_step() is not None:
      state, saved = ckpt.restore(abstract_like(state))
      start = int(saved["step"])
      logging.info("%s: resumed from step %d", name, start)
    bar = tqdm.tqdm(total=num_steps, initial=start, desc=name, unit="step",
                    disable=not progress or not files.is_writer(), leave=False)
    writer = MetricsWriter(
      os.path.join(out_dir, "metrics.jsonl"), tensorboard_dir=os.path.join(out_dir, "tb"), resume_from_step=start,
      pbar=bar,
    )
    history = []
    bad_in_a_row = 0
    for step in range(start, num_steps):
      state, metrics = step_fn(state, step)
      record = writer.write(step + 1, metrics)
      history.append(record)
      bar.update(1)
      bad_in_a_row = bad_in_a_row + 1 if record.get("skipped") else 0
      if max_nonfinite and bad_in_a_row >= max_nonfinite:
        last = ckpt.latest_step()
        where = f"step {last} in {ckpt.directory}" if last is not None else "none (no checkpoint was saved yet)"
        raise TrainingDiverged(
          f"{name}: step {step + 1}: the loss or gradient norm was not finite in {bad_in_a_row} steps in a row (each "
          f"skipped, see {os.path.join(out_dir, 'metrics.jsonl')}); nothing was written as the stage's output. Last "
          f"good checkpoint: {where}. Lower the learning rate (or raise optim.max_nonfinite_steps) and rerun.")
      done = step + 1 == num_steps
      if done or ckpt.should_save(step + 1):
        ckpt.save(step + 1, state, {"step": step + 1, **(meta or {})}, force=True)
      if ckpt.preempted and not done:
        raise Preempted(f"{name}: preempted; state saved at step {step + 1}. Rerun the same command to resume.")
    writer.close()
    bar.close()
    return state, history
  finally:
    ckpt.close()
