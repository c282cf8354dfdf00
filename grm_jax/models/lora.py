"""LoRA adapters on a loaded model: attach, split into trained and frozen parts, merge, and PEFT's adapter layout.

The decoder holds each adapter next to the projection it wraps (`attn/q_lora_a`, `attn/q_lora_b`, ..., see
`decoder._lora_delta`) whenever `ModelConfig.lora.rank` > 0, so the forward, the sampler and every sharding rule read
one param tree. Training splits that tree once (`split`): the adapters (and a scalar head, which is small and new)
are trained and held in float32 with their Adam moments; the base weights are frozen, stored in the compute dtype,
and handed to the train step as a separate argument (`train.step.make_train_step`), never copied. `adapters_off`
gives the base model's own forward (GRPO's KL reference) without a second copy of the weights: B set to zero makes
each update exactly 0.

Why our own and not qwix's `LoraProvider` (what Tunix uses): qwix creates each adapter in the dtype of the weight it
wraps, so a bfloat16 base would train bfloat16 adapters (we keep them in float32), and it finds weights by tracing
intercepted `einsum` / `dot_general` calls back to params at trace time, in every program (the fused forward, the
unrolled decode step, the scalar head); our projections are explicit, so the adapter is one line beside each, carries
our logical axis names (fsdp shards A like its weight) and maps straight onto PEFT's tensors (`peft_tensors`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from grm_jax import parallel
from grm_jax.models import weights
from grm_jax.models.config import LORA_TARGETS, Lora, ModelConfig

# transformers' module name of each projection (Llama, Qwen2 and Gemma-2 name them alike): PEFT's `target_modules`.
PEFT_MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
_SUFFIXES = ("_lora_a", "_lora_b")


def is_adapter(path: tuple[str, ...]) -> bool:
  return bool(path) and path[-1].endswith(_SUFFIXES)


def _flat(params) -> dict[tuple[str, ...], Any]:
  return traverse_util.flatten_dict(params) if params else {}


def split(params, lora: Lora, trained_roots: tuple[str, ...] = ("head",)) -> tuple[dict, dict]:
  """(trained, frozen): with adapters, the adapters plus the subtrees named in `trained_roots` (a scalar head) train
  and every base weight is frozen; without (rank 0), everything trains and nothing is frozen."""
  if not lora.rank:
    return params, {}
  flat = _flat(params)
  trained = {k: v for k, v in flat.items() if is_adapter(k) or k[0] in trained_roots}
  frozen = {k: v for k, v in flat.items() if k not in trained}
  if not any(is_adapter(k) for k in trained):
    raise ValueError(f"LoRA rank {lora.rank} but the params hold no adapters: attach them first (models.lora.attach)")
  return traverse_util.unflatten_dict(trained), traverse_util.unflatten_dict(frozen)


def join(trained, frozen):
  """The whole param tree from `split`'s two parts (no copy: the same arrays)."""
  if not frozen:
    return trained
  return traverse_util.unflatten_dict({**_flat(frozen), **_flat(trained)})


def adapters_off(params):
  """The same tree with every B at zero: the base model's forward, exactly (each update x A B is then 0), at the cost
  of the adapters' size, not the model's. The base weights are the same arrays; the adapters are new ones (a train
  step that donates the trained adapters leaves these intact)."""
  flat = _flat(params)
  return traverse_util.unflatten_dict({
    k: (jnp.zeros_like(v) if k[-1].endswith("_lora_b") else jnp.copy(v)) if is_adapter(k) else v
    for k, v in flat.items()})


# --------------------------------------------------------------------------- attaching and merging


def init_adapters(cfg: ModelConfig, seed: int = 0) -> dict:
  """Fresh adapters for `cfg` (rank > 0), created in their shardings on the current mesh: the decoder's own init, of
  which XLA keeps only the adapters."""
  shapes, names = weights.abstract_params(cfg)
  keep = lambda tree: traverse_util.unflatten_dict({k: v for k, v in _flat(tree).items() if is_adapter(k)})  # noqa: E731
  init = lambda: keep(weights.init_fn(cfg, seed)())  # noqa: E731
  if parallel.current_mesh() is None:
    return jax.jit(init)()
  shardings = keep(parallel.tree_shardings(names, shapes))
  with parallel.use_mesh(None):
    return jax.jit(init, out_shardings=shardings)()


def attach(model, lora: Lora, seed: int = 0):
  """`model` with fresh adapters (B = 0: the same logits) under `lora`; its base weights are the same arrays."""
  if model.config.lora.rank:
    raise ValueError(f"{model.source}: already has rank-{model.config.lora.rank} adapters")
  if not lora.rank:
    return model
  cfg = model.config.replace(lora=lora)
  with model.scope():
    adapters = init_adapters(cfg, seed)
  return dataclasses.replace(model, config=cfg, params=join(adapters, model.params))


def _update(a, b, scale: float):
  """scale * A B for stacked A [L, *in, r], B [L, r, *out] -> [L, *in, *out] (the weight's own layout)."""
  return scale * jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a.astype(jnp.float32), b.astype(jnp.float32))


@jax.jit
def _merge_tree(params, scale):
  flat = _flat(params)
  out = {}
  for k, v in flat.items():
    if is_adapter(k):
      continue
    a = flat.get(k[:-1] + (k[-1] + "_lora_a",))
    if a is None:
      out[k] = v
    else:
      w = v.astype(jnp.float32) + _update(a, flat[k[:-1] + (k[-1] + "_lora_b",)], scale)
      out[k] = w.astype(v.dtype)
  return traverse_util.unflatten_dict(out)


def merge_params(params, spec: Lora, dtype: str | None = None):
  """Decoder params with adapters -> plain params whose weights are W + (alpha / rank) A B (taken in float32, stored in
  `dtype`, default each weight's own). Without adapters (rank 0), `params` as they are."""
  if not spec.rank:
    return params
  if dtype is not None:  # widen (or narrow) the base first, so the merge is not rounded to the old store
    params = jax.tree_util.tree_map_with_path(
      lambda p, x: x if is_adapter(tuple(k.key for k in p)) else x.astype(dtype), params)
  return _merge_tree(params, spec.scale)


def merged(model, dtype: str | None = None):
  """A plain model (no adapters) with the merged weights (`merge_params`): what transformers or vLLM load."""
  lora = model.config.lora
  if not lora.rank:
    return model
  with model.scope():
    params = merge_params(model.params, lora, dtype)
  cfg = model.config.replace(lora=Lora(), param_dtype=dtype or model.config.param_dtype)
  return dataclasses.replace(model, config=cfg, params=params)


# --------------------------------------------------------------------------- PEFT's adapter folder


def peft_tensors(cfg: ModelConfig, params) -> dict[str, np.ndarray]:
  """The adapters as PEFT names and lays them out for a transformers causal LM: lora_A.weight [r, in_features],
  lora_B.weight [out_features, r] per layer, in and out features flattened in transformers' order (ours keeps heads
  and head_dim apart: q's B is [r, heads, head_dim], transformers' q_proj rows are heads x head_dim)."""
  flat = _flat(params)
  r = cfg.lora.rank
  out = {}
  for name in cfg.lora.targets:
    group = "attn" if name in ("q", "k", "v", "o") else "mlp"
    a = parallel.to_host(flat[("layers", group, f"{name}_lora_a")])
    b = parallel.to_host(flat[("layers", group, f"{name}_lora_b")])
    for i in range(cfg.num_layers):
      stem = f"base_model.model.model.layers.{i}.{PEFT_MODULES[name]}"
      out[f"{stem}.lora_A.weight"] = np.ascontiguousarray(np.asarray(a[i], np.float32).reshape(-1, r).T)
      out[f"{stem}.lora_B.weight"] = np.ascontiguousarray(np.asarray(b[i], np.float32).reshape(r, -1).T)
  return out


def peft_config(cfg: ModelConfig, base: str) -> dict[str, Any]:
  """adapter_config.json for `peft.PeftModel.from_pretrained(base_model, folder)`."""
  lora = cfg.lora
  return {
    "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "inference_mode": True,
    "r": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout, "bias": "none", "fan_in_fan_out": False,
    "use_rslora": False, "use_dora": False, "init_lora_weights": True, "modules_to_save": None,
    "target_modules": sorted(PEFT_MODULES[t].split(".")[-1] for t in lora.targets),
  }


def save_peft_adapter(model, out_dir: str, base: str) -> None:
  """A PEFT adapter folder (adapter_config.json, adapter_model.safetensors) for `model`'s adapters over `base` (the
  transformers name or folder of the base model). Every process calls it (adapters sharded across processes are
  gathered); process 0 writes."""
  from safetensors.numpy import save_file

  if not model.config.lora.rank:
    raise ValueError(f"{model.source}: no LoRA adapters to write (the model was trained with lora.rank 0)")
  tensors = peft_tensors(model.config, model.params)
  if jax.process_index() != 0:
    return
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
    json.dump(peft_config(model.config, base), f, indent=2)
  save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})


def from_config(model_group: Mapping[str, Any]) -> Lora:
  """`Lora` from a config's `model` group (its `lora` subgroup: rank, alpha, targets as a comma-separated string or a
  tuple, dropout); a config written before LoRA existed has none: no adapters (and one written before dropout, 0)."""
  group = model_group.get("lora") if hasattr(model_group, "get") else None
  if not group:
    return Lora()
  targets = group["targets"]
  if isinstance(targets, str):
    targets = tuple(t.strip() for t in targets.split(",") if t.strip())
  return Lora(rank=int(group["rank"]), alpha=float(group["alpha"]), targets=tuple(targets),
              dropout=float(group.get("dropout", 0.0)))


__all__ = ["LORA_TARGETS", "PEFT_MODULES", "adapters_off", "attach", "from_config", "init_adapters", "is_adapter",
           "join", "merge_params", "merged", "peft_config", "peft_tensors", "save_peft_adapter", "split"]
