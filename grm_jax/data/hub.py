"""Data sets by name from the Hugging Face Hub, when they are not under the benchmark root.

`load_dataset("ppe")` reads `<root>/ppe/` when it exists. Otherwise a name in `HUB_DATASETS` is read from the
Hugging Face cache, downloaded into it on first use (`grm_jax.hub_cache`: only the files the reader needs), and
offline and uncached is a one-line error with the command that fetches it. RMB and ReaLMistake are not on the hub in
the layout their papers publish (RMB's official copy is on GitHub; ReaLMistake's hub copy is gated and laid out
differently): `NOT_ON_HUB` says where to get each.

| name                  | hub data set (files)                                                               |
|-----------------------|------------------------------------------------------------------------------------|
| rewardbench           | allenai/reward-bench (`data/filtered-*`: the 2,985 filtered pairs the paper scores) |
| rm-bench              | THU-KEG/RM-Bench (`total_dataset.json`: all five domains, math included)            |
| ppe                   | lmarena-ai/PPE-Human-Preference-V1 (`data/test-*`) and the five                    |
|                       | lmarena-ai/PPE-<set>-Best-of-K correctness sets (`data/train-*`)                   |
| helpsteer2            | nvidia/HelpSteer2 (`train.jsonl.gz`, `validation.jsonl.gz`)                        |
| helpsteer2-preference | nvidia/HelpSteer2 (`preference/preference.jsonl.gz`)                               |
| ultrafeedback         | openbmb/UltraFeedback (the raw `*.jsonl`: every completion with its rating)        |
| skywork               | Skywork/Skywork-Reward-Preference-80K-v0.2 (`data/train-*`)                        |
| offsetbias            | NCSOFT/offsetbias (`train.jsonl`)                                                  |

Revisions. A hub data set can change under its name (rows added, fixed or removed by a new commit) and scores would
drift with it silently, so each repository is read at the commit in `REVISIONS`, and the eval stage writes the
commit every hub benchmark was read at into results.json (`hub_revisions`: the snapshot's sha, so an unpinned
repository's read is recorded too). A repository whose commit could not be taken from a public record when the
table was written is read at its default branch (revision None) and `UNPINNED` says why. The config's top-level
`hub_revisions` overrides them: "NAME_OR_REPO=REVISION,..." (a data set name sets all of its repositories; a revision
is a commit sha, a tag or "main").

Each PPE correctness set keeps its name through the cache's folder name (`datasets--lmarena-ai--PPE-MATH-Best-of-K`),
which is where the PPE reader takes it from.
"""

from __future__ import annotations

import dataclasses
import os

from grm_jax import hub_cache


@dataclasses.dataclass(frozen=True)
class HubFiles:
  """Files of one hub data set, and the folder under them the reader reads (e.g. "preference")."""

  repo_id: str
  patterns: tuple[str, ...]
  subfolder: str = ""


PPE_CORRECTNESS = ("MMLU-Pro", "MATH", "GPQA", "IFEval", "MBPP-Plus")

HUB_DATASETS: dict[str, tuple[HubFiles, ...]] = {
  "rewardbench": (HubFiles("allenai/reward-bench", ("data/filtered-*",)),),
  "rm-bench": (HubFiles("THU-KEG/RM-Bench", ("total_dataset.json",)),),
  "ppe": (HubFiles("lmarena-ai/PPE-Human-Preference-V1", ("data/test-*",)),
          *(HubFiles(f"lmarena-ai/PPE-{name}-Best-of-K", ("data/train-*",)) for name in PPE_CORRECTNESS)),
  "helpsteer2": (HubFiles("nvidia/HelpSteer2", ("train.jsonl.gz", "validation.jsonl.gz")),),
  "helpsteer2-preference": (HubFiles("nvidia/HelpSteer2", ("preference/preference.jsonl.gz",), "preference"),),
  "ultrafeedback": (HubFiles("openbmb/UltraFeedback", ("*.jsonl",)),),
  "skywork": (HubFiles("Skywork/Skywork-Reward-Preference-80K-v0.2", ("data/train-*",)),),
  "offsetbias": (HubFiles("NCSOFT/offsetbias", ("train.jsonl",)),),
}

# The commit each repository is read at, taken from public write-ups that pinned these repositories (none could be
# checked against the hub from here): RewardBench's is a snapshot whose filtered split has the 2,985 pairs;
# HelpSteer2's was its main branch in September 2026; UltraFeedback's its main branch in August 2026 (63,967 rows).
REVISIONS: dict[str, str | None] = {
  "allenai/reward-bench": "168d848cdbbea9764fae4a544dc9ca1e6cca4931",
  "nvidia/HelpSteer2": "990b2711a36180dd19d9c94b8627844866f8982a",
  "openbmb/UltraFeedback": "40b436560ca83a8dba36114c22ab3c66e43f6d5e",
  "THU-KEG/RM-Bench": None,
  "lmarena-ai/PPE-Human-Preference-V1": None,
  **{f"lmarena-ai/PPE-{name}-Best-of-K": None for name in PPE_CORRECTNESS},
  "Skywork/Skywork-Reward-Preference-80K-v0.2": None,
  "NCSOFT/offsetbias": None,
}
_NO_RECORD = ("no commit of this repository was found in a public record when the table was written (2026-12-07); "
              "pin one with the config's hub_revisions (`python -m grm_jax.data.hub` prints each one's current commit)")
UNPINNED: dict[str, str] = {repo: _NO_RECORD for repo, rev in REVISIONS.items() if rev is None}

NOT_ON_HUB = {
  "rmb": "copy the RMB_dataset/ folder of github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark there",
  "realmistake": "copy data.zip of github.com/psunlpgroup/ReaLMistake there",
}


def parse_revisions(text: str, key: str = "hub_revisions") -> dict[str, str]:
  """ "NAME_OR_REPO=REVISION,..." -> {repo_id: revision}; a data set name stands for each of its repositories, and a
  later entry wins. An unknown name or a malformed entry is a one-line ValueError naming `key`."""
  out: dict[str, str] = {}
  for part in (p.strip() for p in str(text or "").split(",")):
    if not part:
      continue
    name, eq, revision = (s.strip() for s in part.partition("="))
    if not eq or not name or not revision:
      raise ValueError(f"config {key}: entry {part!r} is not NAME_OR_REPO=REVISION (e.g. 'rm-bench=main')")
    if name in HUB_DATASETS:
      out.update((f.repo_id, revision) for f in HUB_DATASETS[name])
    elif name in REVISIONS:
      out[name] = revision
    else:
      raise ValueError(f"config {key}: {name!r} is neither a hub data set {sorted(HUB_DATASETS)} nor one of their "
                       f"repositories {sorted(REVISIONS)}")
  return out


def revisions(name: str, overrides: str = "") -> dict[str, str | None]:
  """{repo_id: revision} that data set `name` is read at: `REVISIONS`, then the config's `hub_revisions`."""
  chosen = parse_revisions(overrides)
  return {f.repo_id: chosen.get(f.repo_id, REVISIONS[f.repo_id]) for f in HUB_DATASETS[name]}


def commits_read(name: str, cache_dir: str | None = None, overrides: str = "") -> dict[str, str]:
  """{repo_id: the commit sha} data set `name` was read at: the name of its snapshot folder in the Hugging Face cache
  (`<cache>/datasets--org--name/snapshots/<sha>`), so an unpinned repository (`UNPINNED`) or a branch given in
  `hub_revisions` is recorded as the exact commit its files came from."""
  at = revisions(name, overrides)
  folders = {f.repo_id: hub_cache.snapshot(f.repo_id, f.patterns, repo_type="dataset", revision=at[f.repo_id],
                                          cache_dir=cache_dir) for f in HUB_DATASETS[name]}
  return {repo: os.path.basename(os.path.normpath(folder)) for repo, folder in folders.items()}


def local_paths(name: str, cache_dir: str | None = None, overrides: str = "") -> list[str]:
  """The local folders to read data set `name` from: its hub files at their revisions (`revisions`), from the cache
  or downloaded into it."""
  at = revisions(name, overrides)
  return [os.path.join(hub_cache.snapshot(f.repo_id, f.patterns, repo_type="dataset", revision=at[f.repo_id],
                                          cache_dir=cache_dir,
                                          instead=f"or put the data set where the config's benchmark_root expects "
                                                  f"{name}"), f.subfolder)
          for f in HUB_DATASETS[name]]


def current_commits(repos=None, api=None) -> dict[str, str]:
  """{repo_id: the sha its default branch points at now} (asks the hub: needs network), for the repositories of
  `UNPINNED` unless `repos` names others: what to paste into `REVISIONS`, or pass as the config's `hub_revisions`."""
  if api is None:
    from huggingface_hub import HfApi  # noqa: PLC0415

    api = HfApi(token=os.environ.get("HF_TOKEN") or None)
  return {repo: api.dataset_info(repo).sha for repo in (repos or UNPINNED)}


if __name__ == "__main__":  # python -m grm_jax.data.hub: the pins for the unpinned repositories, as hub_revisions
  print(",".join(f"{repo}={sha}" for repo, sha in current_commits().items()))
