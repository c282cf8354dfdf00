"""grm_jax: DeepSeek-GRM (pointwise generative reward models, SPCT) in JAX/Flax."""

__version__ = "0.1.0"
