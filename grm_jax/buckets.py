"""Shape buckets: lengths and batch sizes rounded so that a handful of compiled programs serve every call.

One module for the sampler's prompt lengths and batches and the training rows' lengths, so a reader finds every
rounding rule in one place.
"""

from __future__ import annotations

import math


def length_bucket(n: int, minimum: int = 16) -> int:
  """Prompt-length bucket: powers of two up to 64, then multiples of 64 up to 1,024, then of
  256. Prefill cost is linear in the padded length, so fine buckets (<= ~20% padding past 64
  tokens) are worth the few extra compiled programs."""
  n = max(n, minimum)
  if n <= 64:
    return 1 << (n - 1).bit_length()
  step = 64 if n <= 1024 else 256
  return -(-n // step) * step


def batch_bucket(n: int, multiple: int = 1) -> int:
  """Batch bucket: the next power of two, made a multiple of `multiple` (the devices a batch splits over)."""
  b = 1 << max(n - 1, 0).bit_length()
  return math.lcm(b, multiple) if b % multiple else b


def row_bucket(n: int, multiple: int = 64) -> int:
  """Training-row length bucket: the next multiple of `multiple` (at least one)."""
  return max(multiple, -(-n // multiple) * multiple)
