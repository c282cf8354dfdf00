"""Weights & Biases tracking, optional: `--config.logging.wandb=True` (with `logging.wandb_mode="offline"` the run is
written under `<workdir>/wandb/` for a later `wandb sync`; for a `gs://…` workdir under
`~/.cache/grm_jax/wandb/<run id>/wandb/`, since wandb writes its files with plain `open`).

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


def _root(workdir: str) -> str:
  """The workdir as one string per job: a local folder made absolute, a `gs://…` URL as it is (`os.path.abspath`
  would turn it into `<cwd>/gs:/…`)."""
  workdir = os.fspath(workdir)
  return workdir.rstrip("/") if files.is_remote(workdir) else os.path.abspath(workdir)


def run_id(workdir: str) -> str:
  """The W&B run id of a job: stable for its workdir, so resuming appends to the same run."""
  return hashlib.sha256(_root(workdir).encode()).hexdigest()[:16]


def local_dir(workdir: str) -> str:
  """Where wandb keeps its files (it writes them with plain `open`): the workdir itself when local; for a workdir on
  an object store, a local cache folder named by the run id (`$XDG_CACHE_HOME` or `~/.cache`, `grm_jax/wandb/<id>`),
  the same on every invocation of the job so an offline run stays in one place for `wandb sync`."""
  root = _root(workdir)
  if not files.is_remote(root):
    return root
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  out = os.path.join(cache, "grm_jax", "wandb", run_id(root))
  os.makedirs(out, exist_ok=True)
  return out


def _name(root: str) -> str:
  return root.rsplit("/", 1)[-1] if files.is_remote(root) else os.path.basename(root)


def start(settings: Mapping[str, Any], workdir: str, config: Mapping[str, Any]) -> Any:
  """Start (or resume) the job's W&B run when `settings["wandb"]` (the `config.logging` group); returns the run or
  None. `config` is recorded with the run."""
  if not settings.get("wandb") or not files.is_writer():
    return None
  import wandb  # noqa: PLC0415  (optional dependency: configs.validate says how to install it)

  root = _root(workdir)
  run = wandb.init(project=settings.get("wandb_project") or "grm_jax", entity=settings.get("wandb_entity") or None,
                   mode=settings.get("wandb_mode", "online"), name=_name(root), id=run_id(root),
                   resume="allow", dir=local_dir(root), config=dict(config))
  _state.update(run=run, root=root, axes=set())
  return run


def log(metrics_path: str, step: int, record: Mapping[str, float]) -> None:
  """One step of a stage's metrics (what `MetricsWriter` wrote to `metrics_path`) to the job's run, if any."""
  run = _state["run"]
  if run is None:
    return
  prefix = _stage_prefix(metrics_path, _state["root"])
  axis = f"{prefix}/step"
  if prefix not in _state["axes"]:
    run.define_metric(axis)
    run.define_metric(f"{prefix}/*", step_metric=axis)
    _state["axes"].add(prefix)
  scalars = {f"{prefix}/{k}": v for k, v in record.items() if k != "step" and math.isfinite(v)}
  run.log({axis: int(step), **scalars})


def _stage_prefix(metrics_path: str, root: str) -> str:
  """The stage's folder relative to the workdir ("seed0/rft"), for a local or a remote workdir alike."""
  folder = os.path.dirname(_root(metrics_path))
  if files.is_remote(root):
    return folder[len(root) + 1 :] if folder.startswith(root + "/") else folder.rsplit("/", 1)[-1]
  return os.path.relpath(folder, root).replace(os.sep, "/")


def finish() -> None:
  run = _state["run"]
  _state.update(run=None, root=None, axes=set())
  if run is not None:
    run.finish()
