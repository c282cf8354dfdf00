"""A trained stage out of grm_jax, as a transformers model directory.

  python -m grm_jax.export --workdir=/tmp/spct --stage=grpo --out=/tmp/grm-hf      # AutoModelForCausalLM
  python -m grm_jax.export --workdir=/tmp/spct --stage=judge/grpo --out=/tmp/judge # a variant's stage
  python -m grm_jax.export --workdir=/tmp/spct --stage=metarm --out=/tmp/meta-hf   # ...ForSequenceClassification

A policy stage (`rft`, `grpo`, or `<variant>/<stage>`) is the run's base model (`model.name` in the workdir's
config.json, with the variant's overrides) carrying the stage's `final/` params, written by `models.save_pretrained`
with the tokenizer.

The meta RM (`metarm`) becomes `<Arch>ForSequenceClassification` with one label, the convention reward-model users
load with `AutoModelForSequenceClassification`: transformers scores the last non-padding token's final-normed hidden
state with `score.weight`, which is our head's kernel. Its score layer has no bias and ours has one, so the exported
score is ours minus that constant, written to config.json as `grm_jax_score_bias` (add it back for our exact logit;
rankings, which MetaRM@k uses, are the same either way).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import ml_collections
import numpy as np

from grm_jax import configs, files, models
from grm_jax.grm.meta_rm import load_meta_rm
from grm_jax.models import weights
from grm_jax.models.config import to_hf_config
from grm_jax.models.safetensors_io import write_sharded
from grm_jax.train.checkpoint import restore_params

POLICY_STAGES = ("rft", "grpo")


def run_config(workdir: str, variant: str | None) -> Any:
  """The run's config (its config.json), with a variant's overrides when the stage is a variant's."""
  path = os.path.join(workdir, "config.json")
  if not files.exists(path):
    raise ValueError(f"--workdir={workdir}: no config.json (not a grm_jax run folder)")
  config = ml_collections.ConfigDict(files.read_json(path))
  return configs.variant_config(config, variant) if variant else config


def export_policy(workdir: str, stage: str, out: str) -> str:
  """The base model with `<workdir>/<stage>/final` params -> an HF causal-LM directory `out`."""
  variant, name = configs.split_stage(stage)
  if name not in POLICY_STAGES:
    raise ValueError(f"--stage={stage}: export a policy stage ({', '.join(POLICY_STAGES)}, or '<variant>/<stage>') "
                     "or 'metarm'")
  final = os.path.join(workdir, stage, "final")
  if not files.exists(final):
    raise ValueError(f"--stage={stage}: {final} does not exist (the stage has not finished in {workdir})")
  config = run_config(workdir, variant)
  model = models.load(str(config.model.name), dtype=str(config.model.dtype))
  model = dataclasses.replace(model, params=restore_params(final, model.params))
  models.save_pretrained(model, out)
  return out


def export_meta_rm(workdir: str, stage: str, out: str) -> str:
  """The metarm stage folder -> an HF `<Arch>ForSequenceClassification` directory with one label (module docstring)."""
  folder = os.path.join(workdir, stage)
  model, params = load_meta_rm(folder)
  cfg = model.config
  tensors = weights.export_tensors(cfg, params["decoder"])
  tensors.pop("lm_head.weight", None)
  kernel = np.asarray(params["head"]["kernel"], np.float32)
  tensors["score.weight"] = kernel[None, :].astype(next(iter(tensors.values())).dtype)
  bias = float(np.asarray(params["head"]["bias"]))
  hf = to_hf_config(cfg, model.bos_id, model.eos_id, model.pad_id)
  hf["architectures"] = [a.replace("ForCausalLM", "ForSequenceClassification") for a in hf["architectures"]]
  hf.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, grm_jax_score_bias=bias,
            grm_jax_max_len=int(files.read_json(os.path.join(folder, "model.json")).get("max_len", 0)))
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  write_sharded(out, tensors)
  if model.tokenizer is not None:
    model.tokenizer.save_pretrained(out)
  return out


def export(workdir: str, stage: str, out: str) -> str:
  if configs.split_stage(stage)[1] == "metarm":
    return export_meta_rm(workdir, stage, out)
  return export_policy(workdir, stage, out)


def main(argv: list[str] | None = None) -> None:
  # argparse, not absl flags: grm_jax.main already defines --workdir, and both modules may share one process.
  import argparse  # noqa: PLC0415

  parser = argparse.ArgumentParser(prog="python -m grm_jax.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="the run's folder (holds config.json and the stage folders)")
  parser.add_argument("--stage", default="grpo", help="rft, grpo, <variant>/<stage>, or metarm")
  parser.add_argument("--out", required=True, help="the HF directory to write")
  args = parser.parse_args(argv)
  try:
    out = export(args.workdir, args.stage, args.out)
  except (ValueError, FileNotFoundError) as e:
    print(f"grm_jax.export: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"grm_jax.export: wrote {out}")


if __name__ == "__main__":
  main()
