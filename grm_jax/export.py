"""A trained stage out of grm_jax, as a transformers model directory.

  python -m grm_jax.export --workdir=/tmp/spct --stage=grpo --out=/tmp/grm-hf      # AutoModelForCausalLM
  python -m grm_jax.export --workdir=/tmp/spct --stage=judge/grpo --out=/tmp/judge # a variant's stage
  python -m grm_jax.export --workdir=/tmp/spct --stage=metarm --out=/tmp/meta-hf   # ...ForSequenceClassification
  python -m grm_jax.export --workdir=/tmp/spct --stage=grpo --out=/tmp/grm-hf --dtype=bfloat16  # half the size

A policy stage (`rft`, `grpo`, or `<variant>/<stage>`) is the run's base model (`model.name` in the workdir's
config.json, with the variant's overrides) carrying the stage's `final/` params (`grm_jax.runs.policy_model`), written
by `models.save_pretrained` with the tokenizer. Beside the weights go `grm_recipe.json`, the judging recipe
(`grm_jax.reward.recipe`: the GRM template, the run's Voting@k settings, the chat frame, and the meta RM's input
frame and bias when the run trained one), without which the model's text is no reward; and `README.md`, a model card
saying what it was trained from and how to serve it and score with it.

The meta RM (`metarm`) becomes `<Arch>ForSequenceClassification` with one label, the convention reward-model users
load with `AutoModelForSequenceClassification`: transformers scores the last non-padding token's final-normed hidden
state with `score.weight`, which is our head's kernel. Its score layer has no bias and ours has one, so the exported
score is ours minus that constant, written to config.json as `grm_jax_score_bias` (add it back for our exact logit;
rankings, which MetaRM@k uses, are the same either way). Its `meta_recipe.json` (a `MetaRecipe`) records the chat
frame its input is rendered in, its max_len and that bias, as a GRM's recipe does for its meta RM.

`--dtype` (float32, bfloat16, float16; default the params' own, float32 after training) is the written weights' dtype.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from typing import Any

import ml_dtypes
import numpy as np

from grm_jax import configs, files, models, runs
from grm_jax.models import lora, weights
from grm_jax.models.config import to_hf_config
from grm_jax.models.safetensors_io import write_sharded
from grm_jax.reward.recipe import Recipe

# The dtypes an export writes, as numpy dtypes (bfloat16 through ml_dtypes, as safetensors_io writes it).
_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
DTYPES = tuple(_NP_DTYPES)
META_RECIPE_FILE = "meta_recipe.json"
CARD_FILE = "README.md"
# Built-in base models as the Hub ids a model card's `base_model` links to (others are written as configured).
_HUB_IDS = {"builtin:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _check_dtype(dtype: str | None) -> None:
  """Before any model loads: a typo should not cost a multi-GB load first."""
  if dtype is not None and dtype not in DTYPES:
    raise ValueError(f"--dtype={dtype}: choose one of {', '.join(DTYPES)}")


def export_policy(workdir: str, stage: str, out: str, dtype: str | None = None, adapter: bool = False) -> str:
  """The base model with `<workdir>/<stage>/final` params -> an HF causal-LM directory `out`, with its judging
  recipe (`grm_recipe.json`) and model card (`README.md`). A LoRA stage's adapters are merged into the weights (in
  float32, then written in `dtype`); with `adapter` they are written as a PEFT adapter folder instead
  (`adapter_config.json`, `adapter_model.safetensors`: `peft.PeftModel.from_pretrained(base, out)`)."""
  name = configs.split_stage(stage)[1]
  if name not in runs.POLICY_STAGES:
    raise ValueError(f"--stage={stage}: export a policy stage ({', '.join(runs.POLICY_STAGES)}, or "
                     "'<variant>/<stage>') or 'metarm'")
  model, config = runs.policy_model(workdir, stage)
  if adapter:
    lora.save_peft_adapter(model, out, base=str(config.model.name))
  else:
    # Merged in float32; written in `dtype`, else as the base is stored (compute dtype under LoRA, f32 masters else).
    models.save_pretrained(lora.merged(model, dtype="float32"), out,
                           dtype=dtype or (model.config.param_dtype if model.config.lora.rank else None))
  tokenizer = model.tokenizer
  del model  # the meta RM below may be as large as the policy: never hold both
  meta = None
  folder = runs.meta_folder(workdir, stage)
  if folder is not None:
    meta_model, meta_params, _ = runs.load_meta(folder)
    meta = runs.meta_recipe(folder, meta_model, meta_params)
  recipe = runs.recipe(workdir, stage, tokenizer, meta)
  recipe.save(out)
  with open(os.path.join(out, CARD_FILE), "w", encoding="utf-8") as f:
    # The folder by its own name, not this machine's path: the card travels with the folder (e.g. to the Hub).
    f.write(model_card(config, recipe, stage, path="./" + os.path.basename(os.path.normpath(out))))
  return out


def export_meta_rm(workdir: str, stage: str, out: str, dtype: str | None = None) -> str:
  """The metarm stage folder -> an HF `<Arch>ForSequenceClassification` directory with one label (module docstring)."""
  folder = os.path.join(workdir, stage)
  model, params, _ = runs.load_meta(folder)
  cfg = model.config
  tensors = weights.export_tensors(cfg, lora.merge_params(params["decoder"], cfg.lora, "float32"))
  tensors.pop("lm_head.weight", None)
  kernel = np.asarray(params["head"]["kernel"], np.float32)
  tensors["score.weight"] = kernel[None, :].astype(next(iter(tensors.values())).dtype)
  if dtype is not None:
    tensors = {k: v.astype(_NP_DTYPES[dtype], copy=False) for k, v in tensors.items()}
  bias = float(np.asarray(params["head"]["bias"]))
  hf = to_hf_config(cfg, model.bos_id, model.eos_id, model.pad_id)
  hf["architectures"] = [a.replace("ForCausalLM", "ForSequenceClassification") for a in hf["architectures"]]
  hf["torch_dtype"] = hf["dtype"] = dtype or hf["torch_dtype"]
  hf.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, grm_jax_score_bias=bias,
            grm_jax_max_len=int(files.read_json(os.path.join(folder, "model.json")).get("max_len", 0)))
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  write_sharded(out, tensors)
  if model.tokenizer is not None:
    model.tokenizer.save_pretrained(out)
    meta = dataclasses.asdict(runs.meta_recipe(folder, model, params))
    meta["chat"] = list(meta["chat"])
    with open(os.path.join(out, META_RECIPE_FILE), "w", encoding="utf-8") as f:
      json.dump(meta, f, indent=2, ensure_ascii=False)
      f.write("\n")
  return out


def export(workdir: str, stage: str, out: str, dtype: str | None = None, adapter: bool = False) -> str:
  _check_dtype(dtype)
  if configs.split_stage(stage)[1] == "metarm":
    if adapter:
      raise ValueError("--adapter: write a policy stage's LoRA adapters (rft, grpo); the meta RM is exported merged")
    return export_meta_rm(workdir, stage, out, dtype)
  return export_policy(workdir, stage, out, dtype, adapter)


# ---------------------------------------------------------------------------------------------------- model card


def _get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
  """A config value by dotted key, or `default`: a card describes whatever the run's config.json holds, and runs
  written by other versions (or other experiments) lack some groups."""
  node: Any = config
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      return default
    node = node[part]
  return node


def _settings(config: dict[str, Any], group: str, keys: tuple[str, ...]) -> str:
  """`key=value` of those of a group's keys the config has (the optimizer's learning rate as `lr`)."""
  parts = [f"{k}={_get(config, f'{group}.{k}')}" for k in keys if _get(config, f"{group}.{k}") is not None]
  lr = _get(config, f"{group}.optim.learning_rate")
  if lr is not None:
    parts.append(f"lr={lr}")
  return ", ".join(parts)


def model_card(config: Any, recipe: Recipe, stage: str, path: str = "PATH") -> str:
  """README.md of an exported GRM: YAML front matter for the Hub, what it was trained from and how, how it judges
  (the recipe), and how to serve it and score with it. `config` is the run's config (a ConfigDict or a dict); `path`
  is the folder as the usage commands name it (the export's --out, so they run as written where it was exported)."""
  config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  base = str(_get(config, "model.name", "") or "unknown")
  stages = configs.stage_list(_get(config, "stages", ()) or ())
  ran = {configs.split_stage(s)[1] for s in stages} if stages else set(config)  # no stage list: the groups it has
  lines = ["---", "library_name: transformers"]
  lines.append(f"base_model: {json.dumps(_HUB_IDS.get(base, base))}")  # a JSON string is a YAML string
  lines += ["tags: [reward-model, generative-reward-model, grm_jax]", "---", ""]
  lines += [
    f"# Generative reward model: `{stage}` stage of a grm_jax run",
    "",
    "A pointwise generative reward model (DeepSeek-GRM, SPCT): shown a query and one or more responses, it writes "
    "principles and critiques and ends with a score per response. Reward = the scores parsed from its text, voted "
    "over k samples; `grm_recipe.json` beside the weights says exactly how.",
    "",
    "## Training",
    "",
    f"- Base model: `{base}`",
    f"- This model: the params of the run's `{stage}` stage",
  ]
  if stages:
    lines.append(f"- The run's stages: {', '.join(f'`{s}`' for s in stages)}")
  template = _get(config, "grm.template")
  if template is not None:
    lines.append(f"- GRM template: `{template}`")
  rft = _settings(config, "rft", ("steps", "epochs", "sampling.k", "hinted", "batch_size", "max_len"))
  if rft and "rft" in ran:
    lines.append(f"- RFT (rejective fine-tuning): {rft}")
  grpo = _settings(config, "grpo", ("init", "steps", "prompts_per_step", "group_size", "beta", "sampling.temperature"))
  if grpo and "grpo" in ran:
    lines.append(f"- GRPO (rule-based online RL): {grpo}")
  for key, what in (("train", "Training data"), ("test", "Held-out data")):
    spec = _get(config, f"data.{key}")
    if spec:
      limit = _get(config, f"data.{key}_limit")
      lines.append(f"- {what}: `{spec}`" + (f" (at most {limit} items)" if limit else ""))
  lo, hi = recipe.score_range
  sh = shlex.quote(path)
  k_meta = recipe.k_meta if recipe.k_meta is not None else "ceil(k / 2)"
  lines += [
    "",
    "## Judging recipe (`grm_recipe.json`)",
    "",
    f"- Template: `{recipe.template}` for 2 or more responses, `{recipe.single_template}` for one",
    f"- Scores: {lo} to {hi}; at most {recipe.max_responses} responses per prompt",
    f"- Voting@k: k={recipe.k}, temperature={recipe.temperature}, top_p={recipe.top_p}, "
    f"max_new_tokens={recipe.max_new_tokens}",
    "- Meta RM: " + (f"k_meta={k_meta}, max_len={recipe.meta.max_len}, score_bias={recipe.meta.score_bias:.6g} "
                      "(export the run's `metarm` stage to serve it)" if recipe.meta is not None else "none"),
    "",
    "## Usage",
    "",
    "Serve it with any OpenAI-compatible server, named `grm` (the recipe's model name):",
    "",
    "```bash",
    f"vllm serve {sh} --served-model-name grm  # vLLM",
    f"python -m sglang.launch_server --model-path {sh} --served-model-name grm --port 8000  # SGLang",
    f"python -m grm_jax.serve --model {sh}  # grm_jax's own server (JAX)",
    "```",
    "",
    "then score responses with the recipe in this folder (`pip install grm_jax`; the client needs no jax):",
    "",
    "```python",
    "from grm_jax.reward import RewardClient",
    "",
    f'client = RewardClient("http://localhost:8000/v1", recipe={json.dumps(path)})',
    'print(client.score("What is 2 + 2?", ["4", "5"]))  # one voted score per response',
    "```",
    "",
  ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  # argparse, not absl flags: grm_jax.main already defines --workdir, and both modules may share one process.
  import argparse  # noqa: PLC0415

  parser = argparse.ArgumentParser(prog="python -m grm_jax.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="the run's folder (holds config.json and the stage folders)")
  parser.add_argument("--stage", default="grpo", help="rft, grpo, <variant>/<stage>, or metarm")
  parser.add_argument("--out", required=True, help="the HF directory to write")
  parser.add_argument("--dtype", default=None, help=f"the written weights' dtype: {', '.join(DTYPES)} (default the "
                      "params' own, float32 after training; bfloat16 halves the folder)")
  parser.add_argument("--adapter", action="store_true", help="a LoRA stage's adapters as a PEFT adapter folder "
                      "(load with peft.PeftModel.from_pretrained onto the base) instead of merged weights")
  args = parser.parse_args(argv)
  try:
    out = export(args.workdir, args.stage, args.out, args.dtype, args.adapter)
  except (ValueError, FileNotFoundError) as e:
    print(f"grm_jax.export: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"grm_jax.export: wrote {out}")


if __name__ == "__main__":
  main()
