"""The jitted sampler: a continuous-batching engine (row slots refilled as samples end, prefixes shared by a
prompt's samples) behind `generate`; the static one-loop-per-call sampler kept as the baseline (`static`)."""

from grm_jax.buckets import batch_bucket, length_bucket
from grm_jax.sampling.filters import sample_token, sampling_logits, top_k_mask, top_p_mask
from grm_jax.sampling.generate import GenerateOutput, generate

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
