"""Weights & Biases tracking, optional: `--config.logging.wandb=True` (with `logging.wandb_mode="offline"` the run is
written under `<workdir>/wandb/` for a later `wandb sync`).

One W&B run per job (its workdir): `grm_jax.main` starts it, every `MetricsWriter` of every stage adds its scalars
under the stage's path in the workdir ("rft/loss", "seed1/grpo/reward_mean"), each stage with its own step axis
("rft/step"), and main finishes it. The run id is a digest of the workdir, so a job resumed or split over several
commands (`--config.stages=...`) keeps adding to the same run. Only the writing process (process 0) talks to W&B.
The metrics JSONL stays the record; W&B is a view of it.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from typing import Any

from grm_jax import files

MODES = ("online", "offline")

_state: dict[str, Any] = {"run": None, "root": None, "axes": set()}


def run_id(workdir: str) -> str:
  """The W&B run id of a job: stable for its workdir, so resuming appends to the same run."""
  return hashlib.sha256(os.path.abspath(os.fspath(workdir)).encode()).hexdigest()[:16]


def start(settings: Mapping[str, Any], workdir: str, config: Mapping[str, Any]) -> Any:
  """Start (or resume) the job's W&B run when `settings["wandb"]` (the `config.logging` group); returns the run or
  None. `config` is recorded with the run."""
  if not settings.get("wandb") or not files.is_writer():
    return None
  import wandb  # noqa: PLC0415  (optional dependency: configs.validate says how to install it)

  root = os.path.abspath(os.fspath(workdir))
  run = wandb.init(project=settings.get("wandb_project") or "grm_jax", entity=settings.get("wandb_entity") or None,
                   mode=settings.get("wandb_mode", "online"), name=os.path.basename(root), id=run_id(root),
                   resume="allow", dir=root, config=dict(config))
  _state.update(run=run, root=root, axes=set())
  return run


def log(metrics_path: str, step: int, record: Mapping[str, float]) -> None:
  """One step of a stage's metrics (what `MetricsWriter` wrote to `metrics_path`) to the job's run, if any."""
  run = _state["run"]
  if run is None:
    return
  prefix = os.path.relpath(os.path.dirname(os.path.abspath(metrics_path)), _state["root"]).replace(os.sep, "/")
  axis = f"{prefix}/step"
  if prefix not in _state["axes"]:
    run.define_metric(axis)
    run.define_metric(f"{prefix}/*", step_metric=axis)
    _state["axes"].add(prefix)
  scalars = {f"{prefix}/{k}": v for k, v in record.items() if k != "step" and math.isfinite(v)}
  run.log({axis: int(step), **scalars})


def finish() -> None:
  run = _state["run"]
  _state.update(run=None, root=None, axes=set())
  if run is not None:
    run.finish()
