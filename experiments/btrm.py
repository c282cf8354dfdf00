"""The Bradley–Terry scalar RM baseline alone (paper Table 2, DeepSeek-BTRM-27B): a scalar head on the base model
trained on the RM data minus single-response items, scored on the evaluation items the GRM is scored on.

  python -m grm_jax.main --config=experiments/btrm.py --workdir=/tmp/btrm
  python -m grm_jax.main --config=experiments/btrm.py:smoke --workdir=/tmp/btrm_smoke

Presets (the part after ':'):
  default  the embedded SmolLM2-135M-Instruct on the built-in synthetic pairs, evaluated on their test split (CPU)
  smoke    `configs.smoke`: tiny random model, a few items, one step (seconds; what the preset test runs)
The GRM's own run (experiments/spct.py) carries the same `btrm` group: with the same data and eval settings, adding
"btrm" to its stages scores the baseline on exactly the GRM's evaluation items.
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke")
SYNTHETIC = "synthetic:n=2,tasks=letter+upper"  # spct.py's CPU data: train split to learn, test split to evaluate


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"experiments/btrm.py: unknown preset {preset!r}; choose one of {PRESETS}")
  c = configs.base(("btrm",))
  c.btrm = configs.btrm()
  c.eval = configs.eval()
  c.data.train, c.data.test = SYNTHETIC, SYNTHETIC
  c.eval.datasets = SYNTHETIC
  c.btrm.batch_size, c.btrm.max_len = 4, 512
  if preset == "smoke":
    configs.smoke(c)
  return c
