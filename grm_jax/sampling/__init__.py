"""The jitted KV-cache sampler: prefill once per distinct prompt, decode n samples in one while_loop."""

from grm_jax.sampling.filters import sample_token, sampling_logits, top_k_mask, top_p_mask
from grm_jax.sampling.generate import GenerateOutput, batch_bucket, generate, length_bucket

__all__ = [
  "GenerateOutput",
  "batch_bucket",
  "generate",
  "length_bucket",
  "sample_token",
  "sampling_logits",
  "top_k_mask",
  "top_p_mask",
]
