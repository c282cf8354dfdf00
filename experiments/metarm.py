"""The meta RM alone (paper §4): scalar head on the base model, BCE on (prompt, judgement, correct?).

  python -m grm_jax.main --config=experiments/metarm.py --workdir=DIR   # DIR may hold rft/ and grpo/ outputs
  python -m grm_jax.main --config=experiments/metarm.py:smoke --workdir=/tmp/metarm_smoke

`--config.metarm.method=probe --config.metarm.init=policy --config.metarm.policy=grpo` (spct.py's CPU default)
fits a logistic probe on the GRPO policy's frozen states instead of fine-tuning every weight.
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"experiments/metarm.py: unknown preset {preset!r}; choose one of {PRESETS}")
  c = configs.base(("metarm",))
  c.metarm = configs.metarm()
  c.metarm.policy = "base"
  if preset == "smoke":
    configs.smoke(c)
  return c
