"""Evaluate a GRM on reward-model benchmarks with inference-time scaling (voting@k, MetaRM@k).

  python -m grm_jax.main --config=experiments/eval.py --workdir=/tmp/eval
  python -m grm_jax.main --config=experiments/eval.py:smoke --workdir=/tmp/eval_smoke
  python -m grm_jax.main --config=experiments/eval.py --workdir=DIR \
      --config.model.name=/path/to/hf_dir --config.eval.datasets=rewardbench,rm-bench \
      --config.eval.limit=200 --config.eval.k=8 --config.eval.temperature=0.5

Presets (the part after ':'):
  default  the embedded SmolLM2-135M-Instruct on 32 RewardBench items, k=4 (CPU, minutes)
  smoke    2 items, k=2, 32 new tokens (what the preset test runs)
  paper    the paper's protocol: all four benchmarks, k=32 at temperature 0.5 (accelerators)
"""

import ml_collections

from grm_jax import parallel

PRESETS = ("default", "smoke", "paper")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"experiments/eval.py: unknown preset {preset!r}; choose one of {PRESETS}")
  c = ml_collections.ConfigDict()
  c.stages = ("evaluate",)
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "builtin:smollm2-135m-instruct"  # builtin:..., an HF directory, or a .gguf file
  c.model.dtype = "float32"  # bfloat16 on GPU / TPU

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  c.mesh.rules = tuple(parallel.DEFAULT_RULES)

  c.eval = ml_collections.ConfigDict()
  c.eval.datasets = "rewardbench"  # comma-separated grm_jax.data registry names
  c.eval.benchmark_root = "../shared/benchmarks"  # relative to the current directory
  c.eval.limit = 32  # items per dataset (0 = all)
  c.eval.subsample = "random"  # which `limit` items: "random" (seeded, across subsets) or "first"
  c.eval.k = 4  # samples per item (k_max of the scaling curves)
  c.eval.temperature = 0.5  # the paper's sampling temperature for voting
  c.eval.top_p = 1.0
  c.eval.max_new_tokens = 256
  c.eval.batch_items = 8  # items judged per sampler call (memory bound)
  c.eval.num_subsets = 8  # random k-subsets averaged per point of the scaling curve
  c.eval.meta_model = ""  # meta RM checkpoint for MetaRM@k ('' = voting only)

  if preset == "smoke":
    c.eval.limit = 2
    c.eval.k = 2
    c.eval.max_new_tokens = 32
    c.eval.num_subsets = 2
  elif preset == "paper":
    c.model.dtype = "bfloat16"
    c.eval.datasets = "rewardbench,rmb,rm-bench,realmistake"
    c.eval.limit = 0
    c.eval.k = 32
    c.eval.max_new_tokens = 1024
    c.eval.batch_items = 64
  return c
