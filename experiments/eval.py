"""Evaluate a GRM on reward-model benchmarks with inference-time scaling (voting@k, MetaRM@k).

  python -m grm_jax.main --config=experiments/eval.py --workdir=/tmp/eval
  python -m grm_jax.main --config=experiments/eval.py:smoke --workdir=/tmp/eval_smoke
  python -m grm_jax.main --config=experiments/eval.py --workdir=DIR \
      --config.model.name=/path/to/hf_dir --config.eval.datasets=rewardbench,rm-bench \
      --config.eval.limit=200 --config.eval.sampling.k=8 --config.eval.sampling.temperature=0.5

Presets (the part after ':'):
  default  the embedded SmolLM2-135M-Instruct on 32 RewardBench items, k=4 (CPU, minutes)
  smoke    `configs.smoke`: tiny random model, 2 items, k=2, 16 new tokens (seconds; what the preset test runs)
  paper    the paper's protocol (k=32 at temperature 0.5, accelerators) on its benchmarks that can be had offline,
           RewardBench, RMB and ReaLMistake, plus RM-Bench, which is NOT one of the paper's benchmarks (an extra
           style-bias check). The paper's fourth, PPE, has no offline copy: add `ppe:PATH` to the data sets for
           the paper's Overall (arXiv 2504.02495, Table 2), which the report gives only when all of RB, PPE and
           RMB are in the run.
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke", "paper")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"experiments/eval.py: unknown preset {preset!r}; choose one of {PRESETS}")
  c = configs.base(("eval",))
  c.eval = configs.eval()

  if preset == "smoke":
    configs.smoke(c)
  elif preset == "paper":
    c.model.dtype = "bfloat16"
    c.eval.datasets = "rewardbench,rmb,rm-bench,realmistake"
    c.eval.limit = 0
    c.eval.sampling.k, c.eval.sampling.max_new_tokens, c.eval.sampling.batch_items = 32, 1024, 64
  return c
