"""A TFDS builder over the preference readers, stored as array_record so it reads back without TensorFlow.

Why TFDS at all: a prepared data set is a versioned folder of random-access records that many hosts
of a pod can index (`tfds.data_source`) without re-parsing raw JSON or parquet. `file_format=
"array_record"` plus `tfds.data_source` is the TensorFlow-free path (the default tfrecord path imports
TF); `build` and `data_source` here always use it.

Each record holds the example as JSON text (`PreferenceExample.to_json`) plus `source`, `category`,
`id` and `n` as plain features for cheap filtering; `data_source` decodes records back to equal
`PreferenceExample`s. Records keep the reader's order (shuffling disabled): evaluation reports follow it.

Configs (`GrmPreferences.BUILDER_CONFIGS`):
  - jsonl: MANUAL_DIR holds `<split>.jsonl` files in the plain form; one split per file.
  - rewardbench, rmb, rmb_bon, rm_bench: MANUAL_DIR is the benchmark root (the folder holding
    `rewardbench/`, `rmb/`, `rm-bench/`); one "test" split.
  - synthetic: no manual files; "train" and "test" from `synthetic(seed=0)` at default sizes.
ReaLMistake has no config on purpose: a prepared data set is plain text on disk, and its authors ask
that it never be published in plain text. Read it with `read_realmistake` (in memory) instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from grm_jax.data.example import DataError, PreferenceExample
from grm_jax.data.formats import read_examples
from grm_jax.data.registry import load_dataset
from grm_jax.data.synthetic import DEFAULT_SIZES, synthetic

FILE_FORMAT = "array_record"


@dataclasses.dataclass(eq=False)
class GrmPreferencesConfig(tfds.core.BuilderConfig):
  """`dataset` is a `load_dataset` name; "jsonl" and "synthetic" are handled specially."""

  dataset: str = "jsonl"


class GrmPreferences(tfds.core.GeneratorBasedBuilder):
  """Preference examples (query, n responses, ground truth) from any reader of `grm_jax.data`."""

  VERSION = tfds.core.Version("1.0.0")
  # TFDS derives this from the package via `importlib_resources` (a backport not installed here) and
  # fails on import of that name; the builder's own file is what it wants (for checksums, unused).
  code_path = epath.Path(__file__)
  RELEASE_NOTES = {"1.0.0": "PreferenceExample as JSON text plus source/category/id/n."}
  BUILDER_CONFIGS = [
    GrmPreferencesConfig(name="jsonl", dataset="jsonl", description="<split>.jsonl files in MANUAL_DIR"),
    GrmPreferencesConfig(name="rewardbench", dataset="rewardbench", description="RewardBench (filtered)"),
    GrmPreferencesConfig(name="rmb", dataset="rmb", description="RMB pairwise + BoN"),
    GrmPreferencesConfig(name="rmb_bon", dataset="rmb_bon", description="RMB BoN lists"),
    GrmPreferencesConfig(name="rm_bench", dataset="rm-bench", description="RM-Bench 3x3 style sets"),
    GrmPreferencesConfig(name="synthetic", dataset="synthetic", description="built-in verifiable set, seed 0"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  jsonl: put <split>.jsonl files (one PreferenceExample.to_dict() per line) in MANUAL_DIR.
  rewardbench / rmb / rmb_bon / rm_bench: point MANUAL_DIR at the benchmark root, the folder holding
  rewardbench/, rmb/ and rm-bench/ (the config's `benchmark_root`).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="Preference data for generative reward models: a query, n responses, ground-truth rewards.",
      features=tfds.features.FeaturesDict(
        {
          "json": tfds.features.Text(),
          "source": tfds.features.Text(),
          "category": tfds.features.Text(),
          "id": tfds.features.Text(),
          "n": tfds.features.Scalar(dtype=np.int32),
        }
      ),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator[Any]]:
    name = self.builder_config.dataset
    if name == "synthetic":
      return {s: self._generate_examples(lambda s=s: synthetic(s)) for s in DEFAULT_SIZES}
    manual = Path(dl_manager.manual_dir)
    if name == "jsonl":
      files = sorted(manual.glob("*.jsonl"))
      if not files:
        raise DataError("no <split>.jsonl files", file=str(manual))
      return {f.name.removesuffix(".jsonl"): self._generate_examples(lambda f=f: read_examples(f)) for f in files}
    return {"test": self._generate_examples(lambda: load_dataset(name, root=manual))}

  def _generate_examples(self, load: Callable[[], Sequence[PreferenceExample]]) -> Iterator[tuple[int, dict]]:
    for i, ex in enumerate(load()):
      yield i, encode(ex)


def encode(ex: PreferenceExample) -> dict[str, Any]:
  """The record of one example (see the module docstring)."""
  return {"json": ex.to_json(), "source": ex.source, "category": ex.category, "id": ex.id, "n": ex.n}


def decode(record: dict[str, Any]) -> PreferenceExample:
  """A record read by `tfds.data_source` (text features arrive as bytes) back to the example."""
  return PreferenceExample.from_json(record["json"])


class PreferenceDataSource(Sequence[PreferenceExample]):
  """Random access to a prepared split, decoding records to `PreferenceExample` on the fly."""

  def __init__(self, source: Any):
    self.source = source  # the tfds ArrayRecordDataSource (raw records: source[i])

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> PreferenceExample:  # type: ignore[override]
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]  # type: ignore[return-value]
    size = len(self)
    if not -size <= index < size:  # IndexError (not the reader's ValueError) ends iteration
      raise IndexError(f"index {index} out of range for {size} records")
    return decode(self.source[index % size])


def build(config: str, *, data_dir: str | Path, manual_dir: str | Path | None = None) -> GrmPreferences:
  """Prepares `grm_preferences/<config>` under `data_dir` as array_record (no TensorFlow needed)."""
  builder = GrmPreferences(config=config, data_dir=str(data_dir), file_format=FILE_FORMAT)
  download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir is not None else None
  builder.download_and_prepare(download_config=download_config)
  return builder


def data_source(config: str, *, data_dir: str | Path, split: str) -> PreferenceDataSource:
  """Reads a prepared split back through `tfds.data_source`, as `PreferenceExample`s."""
  return PreferenceDataSource(tfds.data_source(f"grm_preferences/{config}", data_dir=str(data_dir), split=split))
