"""Data sets by name from a Hugging Face cache laid out as huggingface_hub lays it out, offline; a missing one is one
line that says what to download (or, for the two not on the hub, where to get them). A cached snapshot that lacks
some requested files is completed from the hub (a fake one here) or, offline, is one line naming them. Each
repository is read at its pinned revision."""

import gzip
import json
import re

import huggingface_hub
import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grm_jax import data
from grm_jax.data import DataError, hub, registry
from grm_jax.data.registry import load_dataset

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cached(cache, repo_id, files, commit=None):
  """<cache>/datasets--org--name/{refs/main, snapshots/<commit>/<file>}: what `hf download` leaves. The commit is the
  repository's pinned revision (`hub.REVISIONS`), else COMMIT. Rows go to parquet, or gzipped JSON lines for .gz."""
  commit = commit or hub.REVISIONS.get(repo_id) or COMMIT
  repo = cache / f"datasets--{repo_id.replace('/', '--')}"
  (repo / "refs").mkdir(parents=True, exist_ok=True)
  (repo / "refs" / "main").write_text(commit)
  for name, rows in files.items():
    path = repo / "snapshots" / commit / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".gz"):
      path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    else:
      pq.write_table(pa.Table.from_pylist(rows), path)
  return repo / "snapshots" / commit


_cached = cached


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
  assert ("hf download Skywork/Skywork-Reward-Preference-80K-v0.2 --repo-type dataset --include "
          "'data/train-*'") in message
  with pytest.raises(DataError, match=r"rmb: no such folder; copy the RMB_dataset/ folder of github.com/Zhou-Zoey"):
    load_dataset("rmb", root=tmp_path / "none")


def test_every_hub_name_is_a_registry_name_and_the_root_wins(tmp_path, offline_cache):
  assert set(hub.HUB_DATASETS) | set(hub.NOT_ON_HUB) <= set(data.dataset_names())
  local = tmp_path / "root" / "rewardbench"
  local.mkdir(parents=True)
  pq.write_table(pa.Table.from_pylist([_pair(9)]), local / "filtered-00000-of-00001.parquet")
  assert [e.id for e in load_dataset("rewardbench", root=tmp_path / "root")] == ["9"]  # no cache needed


def _helpsteer2_row(i):
  return {"prompt": f"p{i // 2}", "response": f"r{i}", "helpfulness": i % 5, "correctness": 3, "coherence": 4,
          "complexity": 1, "verbosity": 2}


def test_a_snapshot_without_the_requested_files_offline_is_one_line_naming_them(offline_cache):
  # HelpSteer2-Preference was read first: the snapshot folder of nvidia/HelpSteer2 holds its preference/ file only.
  cached(offline_cache, "nvidia/HelpSteer2", {"preference/preference.jsonl.gz": [{"x": 1}]})
  (folder,) = hub.local_paths("helpsteer2-preference")
  assert folder.endswith("preference")
  with pytest.raises(FileNotFoundError) as e:
    hub.local_paths("helpsteer2")
  message, rev = str(e.value), hub.REVISIONS["nvidia/HelpSteer2"]
  assert "\n" not in message
  assert message.startswith(f"nvidia/HelpSteer2 at revision {rev}: no file matching train.jsonl.gz, "
                            "validation.jsonl.gz in the Hugging Face cache")
  assert (f"`hf download nvidia/HelpSteer2 --repo-type dataset --revision {rev} --include 'train.jsonl.gz' "
          "--include 'validation.jsonl.gz'`") in message


def test_a_snapshot_without_the_requested_files_online_downloads_them(offline_cache, tmp_path, monkeypatch):
  rev = hub.REVISIONS["nvidia/HelpSteer2"]
  remote = {"train.jsonl.gz": [_helpsteer2_row(i) for i in range(4)], "validation.jsonl.gz": [_helpsteer2_row(9)],
            "preference/preference.jsonl.gz": [{"x": 1}], "disagreements/disagreements.jsonl.gz": [{"x": 2}]}
  cached(offline_cache, "nvidia/HelpSteer2", {"preference/preference.jsonl.gz": [{"x": 1}]})
  real, online = huggingface_hub.snapshot_download, []

  def fake_hub(repo_id, *, local_files_only=False, **kwargs):
    """The hub: a download writes the repository's files that match allow_patterns into the cache's snapshot."""
    if local_files_only:
      return real(repo_id, local_files_only=True, **kwargs)
    online.append((repo_id, kwargs["revision"], tuple(kwargs["allow_patterns"])))
    wanted = {n: rows for n, rows in remote.items()
              if any(re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), n) for p in kwargs["allow_patterns"])}
    return str(cached(offline_cache, repo_id, wanted, commit=kwargs["revision"]))

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub)
  (folder,) = hub.local_paths("helpsteer2")
  assert online == [("nvidia/HelpSteer2", rev, ("train.jsonl.gz", "validation.jsonl.gz"))]
  assert sorted(p.name for p in (offline_cache / "datasets--nvidia--HelpSteer2" / "snapshots" / rev).rglob("*.gz")) \
    == ["preference.jsonl.gz", "train.jsonl.gz", "validation.jsonl.gz"]
  assert len(load_dataset("helpsteer2", root=tmp_path / "none")) == 2  # train: 2 prompts x 2 responses; validation: 1
  hub.local_paths("helpsteer2")
  hub.local_paths("helpsteer2-preference")
  assert len(online) == 1, "complete snapshots come from the cache"


def test_every_hub_repository_is_pinned_or_says_why_not():
  repos = {f.repo_id for files in hub.HUB_DATASETS.values() for f in files}
  assert set(hub.REVISIONS) == repos
  for repo, rev in hub.REVISIONS.items():
    if rev is None:
      assert hub.UNPINNED[repo], repo
    else:
      assert re.fullmatch(r"[0-9a-f]{40}", rev), (repo, rev)  # a commit: a branch or tag can move
      assert repo not in hub.UNPINNED
  assert hub.REVISIONS["allenai/reward-bench"] is not None  # the paper's main benchmark


def test_revisions_are_overridden_from_the_config(offline_cache, tmp_path):
  assert hub.revisions("rewardbench") == {"allenai/reward-bench": hub.REVISIONS["allenai/reward-bench"]}
  over = hub.revisions("ppe", "ppe=main,lmarena-ai/PPE-MATH-Best-of-K=" + COMMIT)
  assert over["lmarena-ai/PPE-MATH-Best-of-K"] == COMMIT
  assert {r for repo, r in over.items() if repo != "lmarena-ai/PPE-MATH-Best-of-K"} == {"main"}
  with pytest.raises(ValueError, match=r"^config hub_revisions: 'reward-bench' is neither a hub data set"):
    hub.parse_revisions("reward-bench=main")
  with pytest.raises(ValueError, match=r"^config hub_revisions: entry 'rewardbench' is not NAME_OR_REPO=REVISION"):
    hub.parse_revisions("rewardbench")
  # The override is the revision read: a cache holding RewardBench at another commit serves it.
  cached(offline_cache, "allenai/reward-bench", {"data/filtered-00000-of-00001.parquet": [_pair(5)]}, commit=COMMIT)
  with pytest.raises(DataError, match="--revision " + hub.REVISIONS["allenai/reward-bench"]):
    load_dataset("rewardbench", root=tmp_path / "none")
  out = load_dataset("rewardbench", root=tmp_path / "none", hub_revisions=f"rewardbench={COMMIT}")
  assert [e.id for e in out] == ["5"]
  assert registry.hub_source("rewardbench", root=tmp_path / "none", hub_revisions=f"rewardbench={COMMIT}") == {
    "allenai/reward-bench": COMMIT}
  # A branch (or an unpinned repository's default branch) is recorded as the commit its files came from.
  assert registry.hub_source("rewardbench", root=tmp_path / "none", hub_revisions="rewardbench=main") == {
    "allenai/reward-bench": (offline_cache / "datasets--allenai--reward-bench" / "refs" / "main").read_text()}
  assert registry.hub_source("synthetic", root=tmp_path / "none") is None


def test_a_misspelt_hub_revision_fails_at_config_validation():
  from experiments import eval as eval_experiment  # noqa: PLC0415
  from grm_jax import configs  # noqa: PLC0415

  c = eval_experiment.get_config("smoke")
  assert c.hub_revisions == ""
  c.hub_revisions = "rewardbnch=main"
  with pytest.raises(ValueError, match=r"^config hub_revisions: 'rewardbnch' is neither"):
    configs.validate(c)
  c.hub_revisions = "rewardbench=main"
  configs.validate(c)


def test_current_commits_ask_the_hub_for_each_unpinned_repository():
  """`python -m grm_jax.data.hub` prints a hub_revisions string pinning every unpinned repository at its current
  commit (a fake hub answers here); the string parses back to those pins."""
  import types  # noqa: PLC0415

  asked = []

  class FakeApi:
    def dataset_info(self, repo):
      asked.append(repo)
      return types.SimpleNamespace(sha=f"{abs(hash(repo)):040x}"[:40])

  pins = hub.current_commits(api=FakeApi())
  assert sorted(asked) == sorted(hub.UNPINNED) == sorted(pins)
  assert hub.parse_revisions(",".join(f"{r}={s}" for r, s in pins.items())) == pins
