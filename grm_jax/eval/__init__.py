"""Evaluation: official benchmark metrics from voted scores, and inference-time scaling curves.

`score_benchmark(name, examples, votes, key)` turns per-example scores into a benchmark's official numbers;
`scaling_curve(scores, valid, ...)` gives Voting@k / MetaRM@k for k = 1, 2, 4, ..., k_max from one pool of samples;
`eval.paper` holds the paper's Overall and its Table 2 rows; `eval.stats` the intervals every report carries.
"""

from grm_jax.eval.metrics import (
  accuracy,
  benchmark_names,
  bootstrap_official,
  example_correct,
  official_with_interval,
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
from grm_jax.eval.stats import auc_standard_error, bootstrap_interval, wilson_interval

__all__ = [
  "accuracy",
  "auc_standard_error",
  "benchmark_names",
  "bootstrap_interval",
  "bootstrap_official",
  "default_ks",
  "example_correct",
  "official_with_interval",
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
  "wilson_interval",
]
