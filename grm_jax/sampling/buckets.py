"""Shape buckets: prompt lengths and batch sizes rounded so that a handful of compiled programs serve all calls."""

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
  b = 1 << max(n - 1, 0).bit_length()
  return math.lcm(b, multiple) if b % multiple else b
