"""Independent references for tests: random transformers (PyTorch) models from our configs."""

from __future__ import annotations

import numpy as np

from grm_jax.models import ModelConfig, to_hf_config


def random_hf_model(cfg: ModelConfig, seed: int = 0):
  """A transformers CausalLM with cfg's architecture and every weight random (norms too)."""
  import torch
  from transformers import AutoConfig, AutoModelForCausalLM

  hf = to_hf_config(cfg, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  hf_cfg = AutoConfig.for_model(hf.pop("model_type"), **hf)
  hf_cfg._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="eager").float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      # Nonzero norm offsets and biases, so a swapped or missing tensor cannot go unnoticed.
      p.add_(torch.randn_like(p) * (0.1 if "norm" in name or "bias" in name else 0.02))
  return model


def hf_logits(model, tokens: np.ndarray, mask: np.ndarray | None = None, positions: np.ndarray | None = None):
  import torch

  kw = {}
  if mask is not None:
    kw["attention_mask"] = torch.tensor(np.asarray(mask), dtype=torch.long)
  if positions is not None:
    kw["position_ids"] = torch.tensor(np.asarray(positions), dtype=torch.long)
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens), dtype=torch.long), **kw).logits.float().numpy()
