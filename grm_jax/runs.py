"""A finished run's folder as a user takes it away: a policy stage's model, its meta RM and its judging recipe.

`grm_jax.export` writes them out as transformers folders and `grm_jax.serve` serves them; both read a run through
these functions, so what is exported is what is served.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from grm_jax import configs, files, models
from grm_jax.judges.meta_rm import load_meta_rm, meta_max_len
from grm_jax.models import lora
from grm_jax.reward.recipe import MetaRecipe, Recipe, chat_frame, recipe_from_config
from grm_jax.train.checkpoint import restore_trained

POLICY_STAGES = ("rft", "grpo")


def run_config(workdir: str, variant: str | None = None) -> Any:
  """The run's config (its config.json), with a variant's overrides when the stage is a variant's."""
  path = os.path.join(workdir, "config.json")
  if not files.exists(path):
    raise ValueError(f"--workdir={workdir}: no config.json (not a grm_jax run folder)")
  config = ml_collections.ConfigDict(files.read_json(path))
  return configs.variant_config(config, variant) if variant else config


def policy_model(workdir: str, stage: str, dtype: str | None = None) -> tuple[Any, Any]:
  """(model with `<workdir>/<stage>/final` params, the run's config): a trained GRM ready to sample, placed on the
  current mesh scope."""
  variant, name = configs.split_stage(stage)
  if name not in POLICY_STAGES:
    raise ValueError(f"--stage={stage}: a policy stage is one of {', '.join(POLICY_STAGES)} (or '<variant>/<stage>')")
  final = os.path.join(workdir, stage, "final")
  if not files.exists(final):
    raise ValueError(f"--stage={stage}: {final} does not exist (the stage has not finished in {workdir})")
  config = run_config(workdir, variant)
  spec = lora.from_config(config.model)
  model = models.load(str(config.model.name), dtype=dtype or str(config.model.dtype),
                      param_dtype=dtype or str(config.model.dtype) if spec.rank else None)
  model = lora.attach(model, spec)  # a LoRA stage saved its adapters only: they go onto the base
  return dataclasses.replace(model, params=restore_trained(final, model.params, spec)), config


def meta_folder(workdir: str, stage: str) -> str | None:
  """The meta RM trained beside a policy stage (`<workdir>[/<variant>]/metarm`), or None when there is none."""
  variant, _ = configs.split_stage(stage)
  folder = os.path.join(workdir, variant, "metarm") if variant else os.path.join(workdir, "metarm")
  return folder if files.exists(os.path.join(folder, "model.json")) else None


def meta_recipe(folder: str, model: Any, params: Any, name: str = "meta-rm") -> MetaRecipe:
  """How the meta RM at `folder` reads a judgement: its chat frame, its max_len and its head's bias."""
  import numpy as np  # noqa: PLC0415

  return MetaRecipe(chat=tuple(chat_frame(model.tokenizer, with_assistant=True)), max_len=meta_max_len(folder),
                    score_bias=float(np.asarray(params["head"]["bias"])), model=name)


def recipe(workdir: str, stage: str, tokenizer: Any, meta: MetaRecipe | None = None, model_name: str = "grm") -> Recipe:
  """The judging recipe of a run's stage: its GRM template, its evaluation's sampling settings, its chat frame."""
  variant, _ = configs.split_stage(stage)
  config = run_config(workdir, variant)
  out = recipe_from_config(config.to_dict(), tokenizer, meta, base_model=str(config.model.name), stage=stage,
                           workdir=str(workdir))
  return out.replace(model=model_name)


def load_meta(folder: str, dtype: str | None = None) -> tuple[Any, Any, int]:
  """(model, params, max_len) of a trained meta RM, as evaluation and the server use it, on the current mesh scope."""
  model, params = load_meta_rm(folder, dtype=dtype)
  return model, params, meta_max_len(folder)
