"""The paper's orderings reproduced on a laptop CPU over several seeds, each tested from a 95% interval.

  python -m grm_jax.main --config=experiments/science.py --workdir=/tmp/science          # embedded SmolLM2, CPU
  python -m grm_jax.main --config=experiments/science.py:smoke --workdir=/tmp/sci        # tiny model, seconds

Per seed s (variants `seed<s>` and `seed<s>_np`, run in `<workdir>/seed<s>/` and `<workdir>/seed<s>_np/`):
- the SPCT pipeline of spct.py's default (model, data, templates, budget): RFT, GRPO, the meta RM, and the evaluation
  at k = `K` with the base and the RFT-only params judged again on the same items (`eval.baseline="base,rft"`), and
  the Bradley-Terry scalar RM on the same items;
- the same RFT + GRPO + evaluation without principle generation (`compact_no_principles`).
The seed sets the training items' order and sampling, every sampler draw, the held-out subsample and the bootstrap.
Then the `claims` stage tests the paper's orderings (`grm_jax.eval.claims`):
  1. Voting@k rises with k (k = 1, 2, 4, 8);       2. MetaRM@k > Voting@k;
  3. RFT + GRPO > RFT alone > base;                  4. with principles > without principles;
  5. GRM Voting@k > the Bradley-Terry scalar RM,
each as holds / does not hold / inconclusive from a t-interval over the seeds (Holm over the claims), written to
`claims/report.md`, `claims/results.json` (with every seed's numbers) and `claims/claims.png`.

Presets: default (CPU, seeds 0, 1, 2; measured 2026-11-29 on a 2-core CPU: about 28 min per seed, ~83 min in all;
results in the README and docs/results/science/), smoke (tiny:llama, seconds: what the preset test runs).
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke")
SEEDS = (0, 1, 2)
K = 8  # samples per item at evaluation: the Voting@k curve at 1, 2, 4, 8
GRM_STAGES = ("rft", "grpo", "metarm", "eval", "btrm")
ABLATION_STAGES = ("rft", "grpo", "eval")
ABLATION = "grm.template=compact_no_principles;eval.meta_model=;eval.baseline="


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  c = configs.on_spct(__file__, preset, PRESETS, "smoke" if preset == "smoke" else "default")
  c.eval.sampling.k = K
  c.eval.baseline = "base,rft"
  c.btrm = configs.btrm()
  c.btrm.batch_size, c.btrm.max_len = 4, 512
  c.claims = configs.claims()
  c.claims.seeds = ",".join(str(s) for s in SEEDS)
  c.variants = ml_collections.ConfigDict()
  for s in SEEDS:
    c.variants[f"seed{s}"] = f"seed={s}"
    c.variants[f"seed{s}_np"] = f"seed={s};{ABLATION}"
  c.stages = tuple(f"seed{s}{suffix}/{stage}" for s in SEEDS
                   for suffix, stages in (("", GRM_STAGES), ("_np", ABLATION_STAGES)) for stage in stages) + ("claims",)
  if preset == "smoke":
    configs.smoke(c)
    c.eval.sampling.k = 4  # still 1, 2, 4 on the curve
  return c
