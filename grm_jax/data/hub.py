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

NOT_ON_HUB = {
  "rmb": "copy the RMB_dataset/ folder of github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark there",
  "realmistake": "copy data.zip of github.com/psunlpgroup/ReaLMistake there",
}


def local_paths(name: str, cache_dir: str | None = None) -> list[str]:
  """The local folders to read data set `name` from: its hub files, from the cache or downloaded into it."""
  return [os.path.join(hub_cache.snapshot(f.repo_id, f.patterns, repo_type="dataset", cache_dir=cache_dir,
                                          instead=f"or put the data set where the config's benchmark_root expects "
                                                  f"{name}"), f.subfolder)
          for f in HUB_DATASETS[name]]
