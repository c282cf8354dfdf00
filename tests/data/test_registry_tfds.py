"""`load_dataset` name resolution, and the TFDS builder's array_record round trip without TensorFlow."""

import sys

import huggingface_hub.constants
import pytest

from grm_jax import data


def test_names_with_root(bench_root):
  assert len(data.load_dataset("rm_bench", root=bench_root, limit=10)) == 10
  assert len(data.load_dataset("RewardBench", root=bench_root, split="test", limit=3)) == 3
  assert len(data.load_dataset("realmistake", root=bench_root, limit=5)) == 5
  assert len(data.load_dataset(f"rmb_bon:{bench_root / 'rmb' / 'RMB_dataset' / 'BoN_set' / 'Harmlessness'}")) == 1677


def test_registry_errors(tmp_path, monkeypatch):
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a missing benchmark is looked up offline
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  with pytest.raises(ValueError, match="unknown data set 'nope'"):
    data.load_dataset("nope")
  with pytest.raises(ValueError, match="evaluation-only: split must be None or 'test'"):
    data.load_dataset("rewardbench", root=tmp_path, split="train")
  with pytest.raises(ValueError, match="'jsonl' needs a path"):
    data.load_dataset("jsonl")
  with pytest.raises(data.DataError, match="rewardbench: no such folder, and allenai/reward-bench at revision "
                                           "[0-9a-f]{40}: not in the Hugging Face cache"):
    data.load_dataset("rewardbench", root=tmp_path)
  with pytest.raises(data.DataError, match="none.jsonl: no such file or directory"):  # a path named: no hub lookup
    data.load_dataset(f"math:{tmp_path}/none.jsonl")


def test_synthetic_by_name():
  ex = data.load_dataset("synthetic:seed=3,n=2,tasks=add+sub", limit=20)
  assert ex == data.synthetic("train", size=20, seed=3, n=2, tasks=("add", "sub"))
  assert len(data.load_dataset("synthetic", split="test", limit=7)) == 7
  with pytest.raises(ValueError, match="unknown synthetic option 'sed'"):
    data.load_dataset("synthetic:sed=1")


def test_dataset_names():
  assert {"rewardbench", "rmb", "rmb_bon", "rm-bench", "realmistake", "jsonl", "synthetic"} <= set(data.dataset_names())


def test_tfds_round_trip_without_tensorflow(tmp_path):
  from grm_jax.data import tfds_builder

  manual = tmp_path / "manual"
  manual.mkdir()
  train = data.synthetic("train", size=40, seed=1)
  test = data.synthetic("test", size=12, seed=1)
  data.write_examples(train, str(manual / "train.jsonl"))
  data.write_examples(test, str(manual / "test.jsonl"))
  tfds_builder.build("jsonl", data_dir=tmp_path / "tfds", manual_dir=manual)
  assert list(tfds_builder.data_source("jsonl", data_dir=tmp_path / "tfds", split="train")) == list(train)
  src = tfds_builder.data_source("jsonl", data_dir=tmp_path / "tfds", split="test")
  assert len(src) == 12 and src[-1] == test[-1] and src[2:4] == test[2:4]
  raw = src.source[0]
  assert raw["id"] == test[0].id.encode() and int(raw["n"]) == test[0].n
  assert not list((tmp_path / "tfds").rglob("*.tfrecord*"))
  assert list((tmp_path / "tfds").rglob("*.array_record*"))
  assert "tensorflow" not in sys.modules  # tfds ran on its TF-free path


def test_tfds_benchmark_config(tmp_path, bench_root, rm_bench):
  from grm_jax.data import tfds_builder

  tfds_builder.build("rm_bench", data_dir=tmp_path, manual_dir=bench_root)
  assert list(tfds_builder.data_source("rm_bench", data_dir=tmp_path, split="test")) == list(rm_bench)


def test_tfds_has_no_realmistake_config():
  from grm_jax.data import tfds_builder

  names = {c.name for c in tfds_builder.GrmPreferences.BUILDER_CONFIGS}
  assert "realmistake" not in names and {"jsonl", "rewardbench", "rmb", "rm_bench", "synthetic"} <= names
