"""The whole SPCT recipe: RFT -> GRPO -> meta RM -> evaluation (voting@k and MetaRM@k).

  python -m grm_jax.main --config=experiments/spct.py --workdir=/tmp/spct              # embedded SmolLM2, CPU
  python -m grm_jax.main --config=experiments/spct.py:gemma2_27b --workdir=/mnt/shared/spct  # the paper, TPU pod
  python -m grm_jax.main --config=experiments/spct.py:qwen2_5_1_5b --workdir=/content/spct  # Colab A100

Presets (the part after ':'):
  default      SmolLM2-135M-Instruct (embedded) on the built-in synthetic verifiable preferences (first / last letter
               and upper-case tasks, pairs), f32, every stage real but small: ~17 min on 2 CPU cores
  smoke        tiny:llama, a few items and steps (what the preset test runs; seconds)
  gemma2_2b    Gemma-2-2B-it from an HF directory: f32 weights, bf16 compute and Adam moments, the KL reference in host
               memory; one 80 GB GPU (A100 / H100), or a TPU v5e-8 / v4-8 slice with micro-batches that split over its
               chips (docs/scaling.md)
  qwen2_5_1_5b Qwen2.5-1.5B-Instruct, the same recipe: one 40 GB GPU (Colab's A100 runtime). Neither preset trains
               on a 16 GB card or a single-chip Colab TPU (v5e-1): compiled, the RFT step alone needs ~2x its HBM
  gemma2_27b   the paper: Gemma-2-27B, RFT lr 5e-6 x 900 steps at batch 1024, GRPO lr 4e-7 x 900 steps at batch 512
               rollouts (G=4), beta 0.08, meta RM lr 1e-5 batch 512; mesh fsdp x tensor for a v5p-128 pod / 128 GPUs
Every key can be overridden on the command line (`--config.grpo.beta=0.02`); an unknown key fails at start.
"""

import ml_collections

from grm_jax import configs

PRESETS = ("default", "smoke", "gemma2_2b", "qwen2_5_1_5b", "gemma2_27b")
SYNTHETIC = "synthetic:n=2,tasks=letter+upper"  # the CPU presets' data (train and held-out test split)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"experiments/spct.py: unknown preset {preset!r}; choose one of {PRESETS}")
  c = configs.base(("rft", "grpo", "metarm", "evaluate"))
  c.rft = configs.rft()
  c.grpo = configs.grpo()
  c.metarm = configs.metarm()
  c.eval = configs.evaluation()
  c.eval.policy = "grpo"
  c.eval.datasets = SYNTHETIC  # its test split: problems disjoint from training
  c.eval.meta_model = "metarm"

  if preset in ("default", "smoke"):
    # CPU-sized: n=2 synthetic items, the compact template (the paper's rubric alone is ~700 tokens per prompt),
    # and RFT trajectories from the rule-based synthetic critic, standing in for the paper's strong pretrained
    # sampler (SmolLM2-135M writes no parseable judgement on its own; see grm_jax/grm/synthetic_critic.py).
    c.grm.template = "compact"
    # Tasks SmolLM2-135M can already answer (first / last letter 12 of 12, upper-casing 9 of 12 asked plainly): a
    # judge must know the answer to compare responses, and ~20 SFT steps teach the judging format, not arithmetic.
    # With all 13 tasks this budget ends at chance (README, "the default run").
    c.data.train, c.data.train_limit = SYNTHETIC, 48
    c.data.test, c.data.test_limit = SYNTHETIC, 32
    c.rft.sampler = "synthetic-critic"
    # Small batches and a high learning rate: at ~12 s per 4 x 256-token step, updates are what the CPU budget buys.
    c.rft.batch_size, c.rft.epochs, c.rft.max_len = 4, 2.0, 512
    c.rft.optim.learning_rate = 1.5e-4
    # The critic's judgements are ~45-70 tokens (a worked reference answer, a verdict and score per response).
    c.rft.max_new_tokens = c.grpo.max_new_tokens = c.metarm.max_new_tokens = c.eval.max_new_tokens = 96
    c.grpo.steps, c.grpo.prompts_per_step, c.grpo.group_size = 3, 2, 4
    c.grpo.micro_batches = 2  # 4 rows of ~300 tokens per pass: a 16-row pass without remat needs ~26 GB
    c.grpo.optim.learning_rate, c.grpo.optim.warmup_steps, c.grpo.beta = 5e-6, 0, 0.02
    c.metarm.samples_per_item, c.metarm.epochs, c.metarm.batch_size, c.metarm.max_len = 1, 0.25, 8, 512
    c.metarm.optim.learning_rate, c.metarm.optim.warmup_steps = 2e-5, 1
    c.eval.limit, c.eval.k, c.eval.batch_items, c.eval.baseline = 32, 4, 32, "base"
  if preset == "smoke":
    configs.smoke(c)
  elif preset in ("gemma2_2b", "qwen2_5_1_5b"):
    c.model.name = "/content/gemma-2-2b-it" if preset == "gemma2_2b" else "/content/Qwen2.5-1.5B-Instruct"
    c.model.arch = "gemma2-2b" if preset == "gemma2_2b" else "qwen2.5-1.5b"
    c.model.dtype = "bfloat16"
    c.model.remat = True
    c.data.train = "helpsteer2-preference"
    c.data.train_limit = 20000
    c.data.test, c.data.test_limit = "rewardbench", 0
    # Sized by compiling for one device (python -m grm_jax.aot, docs/scaling.md): 2 rows of ~4,096 tokens per
    # pass, 8 items per sampler call, Adam's moments stored in bf16 and GRPO's KL reference in host memory; the f32
    # weights, moments and gradients take most of the device's memory.
    c.rft.batch_size, c.rft.micro_batches, c.rft.max_len, c.rft.max_new_tokens, c.rft.batch_items = (
      32, 16, 4096, 1024, 8)
    c.rft.optim.learning_rate = 5e-6
    c.grpo.steps, c.grpo.prompts_per_step, c.grpo.micro_batches, c.grpo.max_new_tokens = 300, 16, 32, 1024
    c.grpo.batch_items = 8
    c.grpo.optim.learning_rate = 1e-6
    c.metarm.batch_size, c.metarm.micro_batches, c.metarm.max_len, c.metarm.batch_items = 32, 16, 4096, 8
    c.eval.datasets, c.eval.limit, c.eval.k, c.eval.max_new_tokens, c.eval.batch_items = "rewardbench", 0, 8, 1024, 8
    c.rft.optim.moment_dtype = c.grpo.optim.moment_dtype = c.metarm.optim.moment_dtype = "bfloat16"
    c.grpo.reference_on_host = True
  elif preset == "gemma2_27b":
    c.model.name = "/data/gemma-2-27b"  # an HF checkpoint directory (safetensors), on every host
    c.model.arch = "gemma2-27b"
    c.model.dtype = "bfloat16"
    c.model.remat = True
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 8
    c.data.train = "helpsteer2-preference"
    c.data.train_limit = 0
    c.data.test, c.data.test_limit = "rewardbench", 0
    # Micro-batches sized by compiling for v5p-128 (python -m grm_jax.aot, docs/scaling.md): 8 rows of 8,192 tokens
    # per data x fsdp group; at 16 rows the saved activations alone exceed a v5p chip's 95 GiB.
    c.rft.batch_size, c.rft.micro_batches, c.rft.max_len, c.rft.max_new_tokens, c.rft.batch_items = (
      1024, 16, 8192, 2048, 256)
    c.rft.epochs = 0.73  # 900 steps x 1024 of the paper's 1256K set
    c.rft.optim.learning_rate = 5e-6
    c.rft.checkpoint.save_every = 100
    c.grpo.steps, c.grpo.prompts_per_step, c.grpo.group_size = 900, 128, 4  # 512 rollouts per step
    c.grpo.micro_batches, c.grpo.max_new_tokens, c.grpo.beta = 16, 2048, 0.08
    c.grpo.optim.learning_rate = 4e-7
    c.grpo.checkpoint.save_every = 50
    c.metarm.batch_size, c.metarm.micro_batches, c.metarm.max_len = 512, 16, 8192
    c.metarm.samples_per_item, c.metarm.optim.learning_rate = 3, 1e-5
    # The paper's benchmarks but PPE (no offline copy: add ppe:PATH for its Overall), plus RM-Bench (not the paper's).
    c.eval.datasets = "rewardbench,rmb,rm-bench,realmistake"
    c.eval.limit, c.eval.k, c.eval.max_new_tokens, c.eval.batch_items = 0, 32, 2048, 64
  return c
