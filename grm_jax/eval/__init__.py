"""Evaluation: official benchmark metrics from voted scores, and inference-time scaling curves.

`score_benchmark(name, examples, votes, key)` turns per-example scores into a benchmark's official numbers;
`scaling_curve(scores, valid, ...)` gives Voting@k / MetaRM@k for k = 1, 2, 4, ..., k_max from one pool of samples;
`eval.paper` holds the paper's Overall and its Table 2 rows.
"""

from grm_jax.eval.metrics import (
  accuracy,
  benchmark_names,
  example_correct,
  pad,
  ppe,
  realmistake,
  rewardbench,
  rm_bench,
  rmb,
  roc_auc,
  score_benchmark,
)
from grm_jax.eval.scaling import default_ks, scaling_curve, subset_mask, subset_votes

__all__ = [
  "accuracy",
  "benchmark_names",
  "default_ks",
  "example_correct",
  "pad",
  "ppe",
  "realmistake",
  "rewardbench",
  "rm_bench",
  "rmb",
  "roc_auc",
  "scaling_curve",
  "score_benchmark",
  "subset_mask",
  "subset_votes",
]
