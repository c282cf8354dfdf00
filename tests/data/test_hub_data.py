"""Data sets by name from a Hugging Face cache laid out as huggingface_hub lays it out, offline; a missing one is one
line that says what to download (or, for the two not on the hub, where to get them)."""

import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grm_jax import data
from grm_jax.data import DataError, hub
from grm_jax.data.registry import load_dataset

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cached(cache, repo_id, files):
  """<cache>/datasets--org--name/{refs/main, snapshots/<commit>/<file>}: what `huggingface-cli download` leaves."""
  repo = cache / f"datasets--{repo_id.replace('/', '--')}"
  (repo / "refs").mkdir(parents=True, exist_ok=True)
  (repo / "refs" / "main").write_text(COMMIT)
  for name, rows in files.items():
    path = repo / "snapshots" / COMMIT / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # any network use would fail
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  return tmp_path / "hub"


def _pair(i):
  return {"prompt": f"What is {i} + {i}?", "chosen": str(2 * i), "chosen_model": "a", "rejected": str(2 * i + 1),
          "rejected_model": "b", "subset": "math-prm", "id": i}


def test_a_benchmark_missing_from_the_root_comes_from_the_cache(offline_cache, tmp_path):
  _cached(offline_cache, "allenai/reward-bench", {"data/filtered-00000-of-00001.parquet": [_pair(i) for i in range(3)]})
  out = load_dataset("rewardbench", root=tmp_path / "no-benchmarks")
  assert [e.responses for e in out] == [("0", "1"), ("2", "3"), ("4", "5")]
  assert out.files and str(offline_cache) in str(out.files[0])
  assert len(load_dataset("rewardbench", root=tmp_path / "no-benchmarks", limit=2)) == 2


def test_ppe_reads_its_six_hub_sets_and_names_each_correctness_set(offline_cache, tmp_path):
  pref = [{"question_id": f"q{i}", "model_a": "m1", "model_b": "m2", "winner": "model_a", "prompt": f"p{i}",
           "response_1": "a", "response_2": "b"} for i in range(2)]
  _cached(offline_cache, "lmarena-ai/PPE-Human-Preference-V1", {"data/test-00000-of-00001.parquet": pref})
  for name in hub.PPE_CORRECTNESS:
    row = {"question_id": name, "model_name": "gpt", "prompt": "Solve.", "response_1": "right", "response_2": "wrong",
           "scores": [True, False], "sampled_conflict_pairs": [[0, 1]]}
    _cached(offline_cache, f"lmarena-ai/PPE-{name}-Best-of-K", {"data/train-00000-of-00001.parquet": [row]})
  every = load_dataset("ppe", root=tmp_path / "none")
  assert len(every) == 2 + len(hub.PPE_CORRECTNESS)
  assert sorted(e.source for e in every if e.category == "PPE Correctness") == sorted(
    f"ppe/{n}" for n in hub.PPE_CORRECTNESS)
  assert [e.id for e in load_dataset("ppe", root=tmp_path / "none", split="test")] == ["q0", "q1"]
  assert len(load_dataset("ppe", root=tmp_path / "none", split="train")) == len(hub.PPE_CORRECTNESS)
  assert len(load_dataset("ppe", root=tmp_path / "none", limit=3)) == 3


def test_offline_and_not_cached_is_one_line_with_the_download_command(offline_cache, tmp_path):
  with pytest.raises(DataError) as e:
    load_dataset("skywork", root=tmp_path / "none")
  message = str(e.value)
  assert "\n" not in message and str(tmp_path / "none" / "skywork") in message
  assert ("huggingface-cli download Skywork/Skywork-Reward-Preference-80K-v0.2 --repo-type dataset --include "
          "'data/train-*'") in message
  with pytest.raises(DataError, match=r"rmb: no such folder; copy the RMB_dataset/ folder of github.com/Zhou-Zoey"):
    load_dataset("rmb", root=tmp_path / "none")


def test_every_hub_name_is_a_registry_name_and_the_root_wins(tmp_path, offline_cache):
  assert set(hub.HUB_DATASETS) | set(hub.NOT_ON_HUB) <= set(data.dataset_names())
  local = tmp_path / "root" / "rewardbench"
  local.mkdir(parents=True)
  pq.write_table(pa.Table.from_pylist([_pair(9)]), local / "filtered-00000-of-00001.parquet")
  assert [e.id for e in load_dataset("rewardbench", root=tmp_path / "root")] == ["9"]  # no cache needed
