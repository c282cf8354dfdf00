"""The paper's baselines beside the SPCT GRM, trained and judged by the same stages on the same held-out items.

  python -m grm_jax.main --config=experiments/baselines.py --workdir=/tmp/spct          # embedded SmolLM2, CPU
  python -m grm_jax.main --config=experiments/baselines.py:quick --workdir=/tmp/quick    # a smaller budget for all
  python -m grm_jax.main --config=experiments/baselines.py:smoke --workdir=/tmp/bl       # tiny model, seconds

One table (`compare/report.md`) of:
- the GRM before training (`eval@baseline`: the evaluation's `baseline` params);
- the SPCT GRM: Voting@k and MetaRM@k (arXiv 2504.02495v3 Table 3);
- a Bradley-Terry scalar RM on the RL data (the training items GRPO's filter kept) without single responses
  (DeepSeek-BTRM-27B, Table 2; App. C.2);
- a pairwise LLM-as-a-Judge (App. G template: name the best response) trained by the same RFT + GRPO, its RL data
  pairwise only (App. C.2), judged with majority voting (Eq. 13) and TokenProb voting (Table 3); on RMB it judges a
  Best-of-N list as n-1 best-vs-other pairs that must all be right (§5.1, `grm_jax.eval.pairs`);
- the GRM without principle generation (the ablation of Table 4), trained by the same RFT + GRPO.
Each variant's own evaluation report sits in `<workdir>/<variant>/eval/`.

Presets:
  default  CPU, spct.py's default model, data, templates, evaluation items and budget for every system; pointed at the
           workdir of a finished spct.py run it reuses that run's RFT, GRPO, meta RM and evaluation and trains only
           the baselines
  quick    the same on a smaller budget for every system (`QUICK`: one RFT epoch, two GRPO steps). Measured on
           2026-11-29: the SPCT GRM then reaches only 53.1% at k=1 and 56.2% with Voting@4 (75.0% and 81.2% on the
           default budget): a fast check that everything runs, not a comparison to read much into
  smoke    tiny:llama, seconds (what the preset test runs)
  gemma2_27b  the paper's baselines at its scale (App. C.2), beside spct.py:gemma2_27b (its model, data, RFT, RL-data
           filter, GRPO, meta RM and evaluation): the LLM-as-a-Judge and the GRM without principles with the App. G
           templates (`judge`, `no_principles`), trained by the same RFT + GRPO (the judge's RL data pairwise only,
           as the paper's); the BT RM on the RL data after the filter minus single responses, at the preset's
           8,192-token rows (`BTRM_27B`). Compiled for a v5p-128 pod: docs/scaling.md
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "quick", "smoke", "gemma2_27b")
VARIANT_STAGES = ("rft", "grpo", "eval")
# A variant judges with its own template and nothing else changes; the meta RM and the before-training baseline are
# the SPCT run's, so its evaluation skips them.
VARIANTS = {
  "judge": "grm.template=compact_judge;eval.meta_model=;eval.baseline=",
  "no_principles": "grm.template=compact_no_principles;eval.meta_model=;eval.baseline=",
}
SYSTEMS = ("base GRM=eval@baseline;SPCT GRM=eval;BT RM=btrm;pairwise judge=judge/eval;"
           "GRM w/o principles=no_principles/eval")
# `gemma2_27b`: the systems of the paper's Table 2 (no untrained GRM: spct.py:gemma2_27b does not judge again with the
# base model) and the variants with the paper's App. G templates, not the compact CPU forms.
SYSTEMS_27B = SYSTEMS.replace("base GRM=eval@baseline;", "")
VARIANTS_27B = {name: v.replace("compact_", "") for name, v in VARIANTS.items()}
# `gemma2_27b`'s BT RM (the paper states no BTRM settings: ours): rows of the preset's 8,192 tokens (RFT's and the
# meta RM's `max_len`), 128 items per step in 8 micro-batches (16 items of up to 4 responses: at most RFT's 64 rows
# of a pass; 16 items split over 128 GPUs' data x fsdp = 16), the meta RM's lr (configs.btrm).
BTRM_27B = {"batch_size": 128, "micro_batches": 8, "max_len": 8192}
# The `quick` preset's budget for every system, beside spct.py's default: one RFT epoch instead of two (~19 SFT steps),
# two GRPO steps instead of three.
QUICK = "rft.epochs=1.0;grpo.steps=2"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  c = configs.on_spct(__file__, preset, PRESETS, preset if preset in ("smoke", "gemma2_27b") else "default")
  if preset == "quick":
    c = configs.overridden(c, QUICK, "experiments/baselines.py QUICK")
  c.btrm = configs.btrm()
  if preset == "gemma2_27b":
    c.btrm.update(BTRM_27B)
  else:
    c.btrm.batch_size, c.btrm.max_len = 4, 512
  c.variants = ml_collections.ConfigDict(dict(VARIANTS_27B if preset == "gemma2_27b" else VARIANTS))
  c.compare = configs.compare()
  c.compare.systems = SYSTEMS_27B if preset == "gemma2_27b" else SYSTEMS
  c.stages = (*c.stages, "btrm", *(f"{v}/{s}" for v in VARIANTS for s in VARIANT_STAGES), "compare")
  if preset == "smoke":
    configs.smoke(c)
  return c
