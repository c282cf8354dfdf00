"""What the training stages share: the mesh and model from config, params on disk, stage markers, item batches.

Workdir layout (one folder per stage, written only by that stage):
  config.json                 the resolved config of the last run
  timings.jsonl               seconds per stage, one line per stage and invocation (main.run)
  rft/judgements.jsonl        every non-hinted RFT sample with its correctness (meta-RM data)
  rft/accepted.jsonl          the accepted trajectories (the SFT set) and rft/stats.json (acceptance rates)
  <stage>/checkpoints/        orbax train states (params, optimizer, step, data position), newest `keep`
  <stage>/metrics.jsonl       one line of scalars per step (TensorBoard events next to it when available)
  <stage>/final/              the stage's output params (orbax); <stage>/done.json marks the stage complete
  eval/                       report.md, results.json, plots
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax

from grm_jax import files, models, parallel
from grm_jax.data.registry import load_dataset


def make_mesh(config) -> tuple[Any, tuple]:
  """The mesh from `config.mesh` (None on a single device: plain jit) and the logical-axis rules."""
  rules = tuple(tuple(r) for r in config.mesh.rules)
  if jax.device_count() == 1:
    return None, rules
  return parallel.make_mesh({"data": config.mesh.data, "fsdp": config.mesh.fsdp, "tensor": config.mesh.tensor}), rules


def load_base(config, mesh=None, rules=parallel.DEFAULT_RULES, name: str | None = None) -> models.Model:
  return models.load(
    name or config.model.name,
    dtype=config.model.dtype,
    param_dtype=config.model.param_dtype,
    mesh=mesh,
    rules=rules,
    remat=bool(config.model.remat),
  )


def grm_template(config) -> str:
  """The GRM prompt template for n >= 2 items (`config.grm.template`; "default" when the config has no grm group)."""
  return str(config.grm.template) if "grm" in config else "default"


def stage_dir(workdir: str, stage: str) -> str:
  path = os.path.join(os.fspath(workdir), stage)
  files.makedirs(path)
  return path


def with_params(model: models.Model, params) -> models.Model:
  """The same model reading other params (no copy): the GRPO sampler uses the live training params this way."""
  return dataclasses.replace(model, params=params)


def read_done(stage_path: str) -> dict | None:
  path = os.path.join(stage_path, "done.json")
  return files.read_json(path) if files.exists(path) else None


def write_done(stage_path: str, info: dict) -> None:
  files.write_json(os.path.join(stage_path, "done.json"), info)


def training_items(config, split: str = "train"):
  """The RM training (or held-out) items named by `config.data`."""
  name = config.data.train if split == "train" else config.data.test
  limit = config.data.train_limit if split == "train" else config.data.test_limit
  kwargs = {"split": split} if name.split(":", 1)[0] == "synthetic" else {}
  return load_dataset(name, root=config.data.benchmark_root, limit=int(limit) or None, **kwargs)




def fingerprint(config, *keys: str) -> str:
  """A stable digest of the config parts that decide a stage's outputs (reuse them only if it matches)."""
  parts = {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys if k in config}
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
