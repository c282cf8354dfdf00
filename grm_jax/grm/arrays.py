"""numpy or jax.numpy, whichever the caller's arrays belong to, without importing jax here.

The paper's rules and voting (`rules`, `voting`) run on the host with numpy, under `jax.jit` with jax.numpy, and in
a process that has no jax at all (`grm_jax.reward` inside a PyTorch RL stack). Looking jax up in `sys.modules`
instead of importing it keeps that last case working: an array can only be a jax array if jax is already imported.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def array_module(*arrays: Any):
  """jax.numpy if any input is a jax array or tracer, else numpy."""
  jax = sys.modules.get("jax")
  if jax is not None and any(isinstance(a, jax.Array) for a in arrays):
    return sys.modules.get("jax.numpy") or __import__("jax.numpy", fromlist=["numpy"])
  return np
