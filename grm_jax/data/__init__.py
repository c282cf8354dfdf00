"""Data: `PreferenceExample`, readers per format, the `load_dataset` registry, a synthetic verifiable set.

The TFDS builder lives in `grm_jax.data.tfds_builder` and is not imported here, so reading data does not
pay for importing tensorflow_datasets.
"""

from grm_jax.data.benchmarks import (
  REALMISTAKE_PASSWORD,
  REWARDBENCH_SECTIONS,
  REWARDBENCH_UNSECTIONED,
  RM_BENCH_STYLES,
  read_realmistake,
  read_rewardbench,
  read_rm_bench,
  read_rmb,
  rm_bench_level,
  rm_bench_pairs,
)
from grm_jax.data.example import DataError, Examples, PreferenceExample, write_examples
from grm_jax.data.formats import (
  read_examples,
  read_helpsteer2,
  read_helpsteer2_preference,
  read_offsetbias,
  read_ppe,
  read_skywork,
  read_ultrafeedback,
)
from grm_jax.data.registry import DEFAULT_ROOT, MixturePart, dataset_names, load_dataset, load_mixture, parse_mixture
from grm_jax.data.synthetic import SYNTHETIC_TASKS, synthetic
from grm_jax.data.verifiable import answers_match, last_boxed, normalize_answer, read_math

__all__ = [
  "DEFAULT_ROOT",
  "DataError",
  "Examples",
  "MixturePart",
  "PreferenceExample",
  "REALMISTAKE_PASSWORD",
  "REWARDBENCH_SECTIONS",
  "REWARDBENCH_UNSECTIONED",
  "RM_BENCH_STYLES",
  "SYNTHETIC_TASKS",
  "dataset_names",
  "answers_match",
  "last_boxed",
  "load_dataset",
  "load_mixture",
  "normalize_answer",
  "parse_mixture",
  "read_helpsteer2",
  "read_helpsteer2_preference",
  "read_examples",
  "read_math",
  "read_offsetbias",
  "read_ppe",
  "read_realmistake",
  "read_rewardbench",
  "read_rm_bench",
  "read_rmb",
  "read_skywork",
  "read_ultrafeedback",
  "rm_bench_level",
  "rm_bench_pairs",
  "synthetic",
  "write_examples",
]
