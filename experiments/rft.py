"""Rejective fine-tuning alone (paper §3.2, App. C.1): sample N_RFT judgements per item, keep the right ones, SFT
on them.

  python -m grm_jax.main --config=experiments/rft.py --workdir=/tmp/rft
  python -m grm_jax.main --config=experiments/rft.py:smoke --workdir=/tmp/rft_smoke

Presets: default (the embedded SmolLM2-135M on the built-in synthetic data, CPU), smoke (tiny:llama, seconds).
The full recipe is `experiments/spct.py`; this file builds the same `rft` group.
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"experiments/rft.py: unknown preset {preset!r}; choose one of {PRESETS}")
  c = configs.base(("rft",))
  c.rft = configs.rft()
  c.rft.optim.learning_rate = 2e-5
  if preset == "smoke":
    configs.smoke(c)
  return c
