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
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from grm_jax import files, models, parallel
from grm_jax.data.registry import load_dataset
from grm_jax.train.loop import StageStopped


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


@jax.jit
def _all_finite(params) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))


class NonFiniteParams(StageStopped):
  """Params with NaN or infinite values were about to be written as a stage's output."""


def save_params(path: str, params) -> None:
  """Params only (no optimizer state): what later stages and users load. Refuses params that are not all finite: the
  next stage would start from them (the train step already skips non-finite updates; this is the last guard)."""
  if not bool(parallel.to_host(_all_finite(params))):
    raise NonFiniteParams(f"{path}: refusing to save params with NaN or infinite values")
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(files.absolute(path), params, force=True)
    ckpt.wait_until_finished()


def restore_params(path: str, like) -> Any:
  """Params saved by `save_params`, placed like `like` (same shapes and shardings)."""
  path = files.absolute(path)
  if not path.is_dir():
    raise FileNotFoundError(f"{path}: no saved params (run the stage that writes it first)")
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like)
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(path, target)


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


def correctness(judgements, examples) -> np.ndarray:
  """bool [B, k]: each sampled judgement right under Eq. 10 (the one rule RFT, GRPO and the meta RM share)."""
  from grm_jax.grm import rules  # noqa: PLC0415

  n_max = judgements.scores.shape[-1]
  rewards = np.zeros((len(examples), n_max))
  for i, ex in enumerate(examples):
    rewards[i, : ex.n] = ex.rewards
  return np.asarray(rules.is_correct(judgements.scores, judgements.valid, rewards[:, None], judgements.response_mask[
    :, None]))


def training_prompt_ids(model, example, perm, template: str) -> list[int]:
  """The un-hinted GRM prompt for one sample's response order: what SFT and the meta RM condition on."""
  from grm_jax.grm.prompts import grm_prompt  # noqa: PLC0415

  prompt = grm_prompt(list(example.context), example.responses, perm=perm, template=template)
  return [int(t) for t in model.encode_chat(prompt.messages)]


def completion_ids(model, tokens, stopped: bool) -> list[int]:
  """A sampled judgement as an SFT target: its tokens plus the end-of-turn token when it ended on one, so the
  model learns to stop."""
  ids = [int(t) for t in tokens]
  if stopped and model.eos_id is not None:
    ids.append(int(model.eos_id))
  return ids


write_jsonl = files.write_jsonl
read_jsonl = files.read_jsonl


def fingerprint(config, *keys: str) -> str:
  """A stable digest of the config parts that decide a stage's outputs (reuse them only if it matches)."""
  import hashlib  # noqa: PLC0415

  parts = {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys if k in config}
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
