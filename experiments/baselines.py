"""The paper's baselines beside the SPCT GRM, trained and judged by the same stages on the same held-out items.

  python -m grm_jax.main --config=experiments/baselines.py --workdir=/tmp/spct        # embedded SmolLM2, CPU
  python -m grm_jax.main --config=experiments/baselines.py:smoke --workdir=/tmp/bl    # tiny model, seconds

The SPCT pipeline is `experiments/spct.py`'s (same preset, same keys, same stage folders), so pointing this at the
workdir of a finished spct.py run reuses its RFT, GRPO, meta RM and evaluation and trains only the baselines:
- the GRM before training (`eval@baseline`: the evaluation's `baseline` params);
- the SPCT GRM: Voting@k and MetaRM@k (arXiv 2504.02495v3 Table 3);
- a Bradley-Terry scalar RM on the same training items without single responses (DeepSeek-BTRM-27B, Table 2);
- a pairwise LLM-as-a-Judge (App. G template: name the best response) trained by the same RFT + GRPO, judged with
  majority voting (Eq. 13) and TokenProb voting (Table 3);
- the GRM without principle generation (the ablation of Table 4), trained by the same RFT + GRPO.
`compare/report.md` holds the one table; each variant's own evaluation report sits in `<workdir>/<variant>/eval/`.

Presets: default (CPU: the spct.py default's model, data and budgets, the compact templates' judge and
no-principles forms), smoke (tiny:llama, seconds: what the preset test runs).
"""

import importlib.util
import os

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke")
VARIANT_STAGES = ("rft", "grpo", "evaluate")
# A variant judges with its own template and nothing else changes; the meta RM and the before-training baseline are
# the SPCT run's, so its evaluation skips them.
VARIANTS = {
  "judge": "grm.template=compact_judge;eval.meta_model=;eval.baseline=",
  "no_principles": "grm.template=compact_no_principles;eval.meta_model=;eval.baseline=",
}
SYSTEMS = ("base GRM=eval@baseline;SPCT GRM=eval;BT RM=btrm;pairwise judge=judge/eval;"
           "GRM w/o principles=no_principles/eval")


def _spct():
  """experiments/spct.py, loaded from beside this file (experiment files are not an installed package)."""
  spec = importlib.util.spec_from_file_location("grm_jax_experiment_spct", os.path.join(os.path.dirname(__file__),
                                                                                         "spct.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"experiments/baselines.py: unknown preset {preset!r}; choose one of {PRESETS}")
  c = _spct().get_config(preset)
  c.btrm = configs.btrm()
  c.btrm.batch_size, c.btrm.max_len = 4, 512
  c.variants = ml_collections.ConfigDict(dict(VARIANTS))
  c.compare = configs.compare()
  c.compare.systems = SYSTEMS
  c.stages = (*c.stages, "btrm", *(f"{v}/{s}" for v in VARIANTS for s in VARIANT_STAGES), "compare")
  if preset == "smoke":
    configs.smoke(c)
  return c
