"""Rule-based GRPO alone (paper §3.2): G rollouts per item from the live policy, reward +1/-1 by Eq. 11.

  python -m grm_jax.main --config=experiments/grpo.py --workdir=/tmp/grpo           # from the base model
  python -m grm_jax.main --config=experiments/grpo.py:smoke --workdir=/tmp/grpo_smoke

Starts from `grpo.init` ("base" here; `spct.py` chains it after RFT with init="rft").
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"experiments/grpo.py: unknown preset {preset!r}; choose one of {PRESETS}")
  c = configs.base(("grpo",))
  c.grpo = configs.grpo()
  c.grpo.init = "base"
  c.grpo.steps = 20
  c.grpo.optim.learning_rate = 1e-6
  if preset == "smoke":
    configs.smoke(c)
  return c
