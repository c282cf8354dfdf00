"""`load_dataset`: one entry point from a config string to `Examples`.

Names (the part before an optional ":"):

| name                              | reader                            | default location under `root`  |
|-----------------------------------|-----------------------------------|--------------------------------|
| rewardbench                       | read_rewardbench                  | rewardbench/                   |
| rmb / rmb_pairwise / rmb_bon      | read_rmb (both sets / one set)    | rmb/                           |
| rm-bench (rm_bench, rmbench)      | read_rm_bench                     | rm-bench/                      |
| realmistake                       | read_realmistake (in memory)      | realmistake/data.zip           |
| ppe                               | read_ppe                          | ppe/                           |
| helpsteer2                        | read_helpsteer2                   | helpsteer2/                    |
| helpsteer2-preference             | read_helpsteer2_preference        | helpsteer2/preference/         |
| ultrafeedback                     | read_ultrafeedback                | ultrafeedback/                 |
| skywork                           | read_skywork                      | skywork/                       |
| jsonl                             | read_jsonl                        | (path required)                |
| synthetic                         | synthetic                         | (generated)                    |

`name:PATH` reads PATH instead of the default location (`rewardbench:/data/filtered.parquet`,
`jsonl:my.jsonl`); a bare path to a .jsonl/.json file means `jsonl:`. For `synthetic`, the part after
":" holds options: `synthetic:seed=1,n=2,size=500,tasks=add+reverse` (`n` and `tasks` join with "+").

Default locations mirror the HF repositories (nvidia/HelpSteer2 holds the ratings at its top level and
the preference set in `preference/`), so a clone or snapshot can be dropped under `root` as is.

The paper's benchmarks are RewardBench, PPE, RMB and ReaLMistake (arXiv 2504.02495, §5.1). RM-Bench is NOT one
of them: it is here as an extra check of style bias, scored by its own strict rule (`eval.metrics`).

`root` is the benchmark folder from the config; the default is `../shared/benchmarks` next to the
repository, resolved from this file so it does not depend on the working directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from etils import epath

from grm_jax.data import benchmarks, formats
from grm_jax.data.example import Examples
from grm_jax.data.io import OnError, PathLike
from grm_jax.data.synthetic import synthetic

DEFAULT_ROOT = str(Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks")
"""`<repo>/../shared/benchmarks`; pass `root=` (from config) to read elsewhere."""

Reader = Callable[..., Examples]

# name -> (reader, default folder under root or None, fixed reader options, reader takes `split`)
_READERS: dict[str, tuple[Reader, str | None, dict[str, Any], bool]] = {
  "rewardbench": (benchmarks.read_rewardbench, "rewardbench", {}, False),
  "rmb": (benchmarks.read_rmb, "rmb", {"sets": ("pairwise", "bon")}, False),
  "rmb_pairwise": (benchmarks.read_rmb, "rmb", {"sets": ("pairwise",)}, False),
  "rmb_bon": (benchmarks.read_rmb, "rmb", {"sets": ("bon",)}, False),
  "rm-bench": (benchmarks.read_rm_bench, "rm-bench", {}, False),
  "realmistake": (benchmarks.read_realmistake, "realmistake/data.zip", {}, False),
  "ppe": (formats.read_ppe, "ppe", {}, True),
  "helpsteer2": (formats.read_helpsteer2, "helpsteer2", {}, True),
  "helpsteer2-preference": (formats.read_helpsteer2_preference, "helpsteer2/preference", {}, True),
  "ultrafeedback": (formats.read_ultrafeedback, "ultrafeedback", {}, True),
  "skywork": (formats.read_skywork, "skywork", {}, True),
  "jsonl": (formats.read_jsonl, None, {}, True),
}
_ALIASES = {
  "rm_bench": "rm-bench",
  "rmbench": "rm-bench",
  "reward-bench": "rewardbench",
  "reward_bench": "rewardbench",
  "rmb-bon": "rmb_bon",
  "rmb-pairwise": "rmb_pairwise",
  "helpsteer2_preference": "helpsteer2-preference",
  "hs2": "helpsteer2",
  "json": "jsonl",
}
BENCHMARK_SPLITS = (None, "test")  # the four paper benchmarks are evaluation-only


def dataset_names() -> tuple[str, ...]:
  """Every name `load_dataset` accepts before the ':' (aliases excluded)."""
  return (*_READERS, "synthetic")


def _parse_synthetic(options: str) -> dict[str, Any]:
  kwargs: dict[str, Any] = {}
  for item in filter(None, options.split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep:
      raise ValueError(f"synthetic option {item!r} is not key=value")
    if key in ("seed", "size"):
      kwargs[key] = int(value)
    elif key == "n":
      kwargs["n"] = tuple(int(v) for v in value.split("+"))
    elif key == "tasks":
      kwargs["tasks"] = tuple(value.split("+"))
    else:
      raise ValueError(f"unknown synthetic option {key!r}; expected seed, size, n, tasks")
  return kwargs


def load_dataset(
  name_or_path: str,
  *,
  root: PathLike = DEFAULT_ROOT,
  split: str | None = None,
  limit: int | None = None,
  on_error: OnError = "raise",
  **options: Any,
) -> Examples:
  """Reads a data set by name (see the module docstring) into `Examples`.

  Args:
    name_or_path: "rewardbench", "rmb_bon", "jsonl:PATH", "synthetic:seed=1", a .jsonl path, ...
    root: folder holding the benchmarks (`rewardbench/`, `rmb/`, ...), from config.
    split: for the benchmarks only None/"test"; for synthetic "train"/"test" (default "train");
      for HF-layout folders the `{split}-*` / `{split}.*` files (HelpSteer2-Preference: its split column).
    limit: keep only the first `limit` examples (synthetic: the size of the set).
    on_error: "raise" (default) or "skip" malformed rows, counted in `.skipped`.
    **options: passed to the reader (e.g. `include_ties=True` for PPE, `n=2` for synthetic).
  """
  name, sep, arg = name_or_path.partition(":")
  key = _ALIASES.get(name.lower(), name.lower())
  if key == "synthetic":
    kwargs = {**_parse_synthetic(arg), **options}
    if limit is not None:
      kwargs["size"] = limit if "size" not in kwargs else min(limit, kwargs["size"])
    return synthetic(split or "train", **kwargs)
  if key not in _READERS:
    if Path(name_or_path).suffix in (".jsonl", ".json", ".gz") or epath.Path(name_or_path).is_file():
      key, arg, sep = "jsonl", name_or_path, ":"
    else:
      raise ValueError(f"unknown data set {name_or_path!r}; expected one of {dataset_names()} or a .jsonl path")
  reader, folder, fixed, takes_split = _READERS[key]
  if sep and arg:
    path = epath.Path(arg)
  elif folder is not None:
    path = epath.Path(root) / folder
  else:
    raise ValueError(f"{key!r} needs a path: '{key}:PATH'")
  kwargs = {**fixed, **options, "on_error": on_error, "limit": limit}
  if takes_split:
    kwargs["split"] = split
  elif split not in BENCHMARK_SPLITS:
    raise ValueError(f"{key!r} is evaluation-only: split must be None or 'test', got {split!r}")
  return reader(path, **kwargs)
