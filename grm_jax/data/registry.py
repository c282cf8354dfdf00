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
| offsetbias                        | read_offsetbias                   | offsetbias/                    |
| math / math-single                | read_math (pairs / n=1 items)     | (path required)                |
| jsonl                             | read_examples                     | (path required)                |
| synthetic                         | synthetic                         | (generated)                    |

`name:PATH` reads PATH instead of the default location (`rewardbench:/data/filtered.parquet`,
`jsonl:my.jsonl`); a bare path to a .jsonl/.json file means `jsonl:`. For `synthetic`, the part after
":" holds options: `synthetic:seed=1,n=2,size=500,tasks=add+reverse` (`n` and `tasks` join with "+").

`math:PATH` reads MATH-style problems with sampled solutions as (right, wrong) pairs, `math-single:PATH` as n=1
items with 0/1 rewards (`verifiable.read_math`).

Several data sets at once (`load_mixture`, what `config.data.train` / `data.test` hold): ";"-separated specs, each
with an optional "@LIMIT" on its own items, e.g.
`helpsteer2-preference@20000;ultrafeedback@60000;skywork;offsetbias:/data/offsetbias;math:/data/math.jsonl`.
The config's `train_limit` caps the total; several parts are mixed by a permutation seeded with `config.seed`.

Default locations mirror the HF repositories (nvidia/HelpSteer2 holds the ratings at its top level and
the preference set in `preference/`), so a clone or snapshot can be dropped under `root` as is.

The paper's benchmarks are RewardBench, PPE, RMB and ReaLMistake (arXiv 2504.02495, §5.1). RM-Bench is NOT one
of them: it is here as an extra check of style bias, scored by its own strict rule (`eval.metrics`).

`root` is the benchmark folder from the config; the default is `../shared/benchmarks` next to the
repository, resolved from this file so it does not depend on the working directory. A named data set whose default
folder is not under `root` is read from the Hugging Face Hub copy named in `data.hub` (the local cache, a download on
first use, or a one-line error saying what to download); RMB and ReaLMistake are not on the hub in their published
layout and must be copied under `root` (the error says from where).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from grm_jax.data import benchmarks, formats, hub, io, verifiable
from grm_jax.data.example import DataError, Examples
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
  "offsetbias": (formats.read_offsetbias, "offsetbias", {}, True),
  "math": (verifiable.read_math, None, {"mode": "pairs"}, True),
  "math-single": (verifiable.read_math, None, {"mode": "single"}, True),
  "jsonl": (formats.read_examples, None, {}, True),
}
_ALIASES = {
  "rm_bench": "rm-bench",
  "rmbench": "rm-bench",
  "reward-bench": "rewardbench",
  "reward_bench": "rewardbench",
  "rmb-bon": "rmb_bon",
  "rmb-pairwise": "rmb_pairwise",
  "helpsteer2_preference": "helpsteer2-preference",
  "math_single": "math-single",
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


def _resolve(name_or_path: str) -> tuple[str, str, str]:
  """(registry key, ":" or "", the part after ":") of a spec; a bare .jsonl/.json path or existing file is jsonl."""
  name, sep, arg = name_or_path.partition(":")
  key = _ALIASES.get(name.lower(), name.lower())
  if key == "synthetic" or key in _READERS:
    return key, sep, arg
  if Path(name_or_path).suffix in (".jsonl", ".json", ".gz") or epath.Path(name_or_path).is_file():
    return "jsonl", ":", name_or_path
  raise ValueError(f"unknown data set {name_or_path!r}; expected one of {dataset_names()} or a .jsonl path")


def load_dataset(
  name_or_path: str,
  *,
  root: PathLike = DEFAULT_ROOT,
  split: str | None = None,
  limit: int | None = None,
  on_error: OnError = "raise",
  hub_revisions: str = "",
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
    hub_revisions: the config's `hub_revisions` ("NAME_OR_REPO=REVISION,..."), for a data set read from the hub
      (`data.hub.revisions`); unused when it is under `root`.
    **options: passed to the reader (e.g. `include_ties=True` for PPE, `n=2` for synthetic).
  """
  key, sep, arg = _resolve(name_or_path)
  if key == "synthetic":
    kwargs = {**_parse_synthetic(arg), **options}
    if limit is not None:
      kwargs["size"] = limit if "size" not in kwargs else min(limit, kwargs["size"])
    return synthetic(split or "train", **kwargs)
  reader, folder, fixed, takes_split = _READERS[key]
  kwargs = {**fixed, **options, "on_error": on_error, "limit": limit}
  if takes_split:
    kwargs["split"] = split
  elif split not in BENCHMARK_SPLITS:
    raise ValueError(f"{key!r} is evaluation-only: split must be None or 'test', got {split!r}")
  if sep and arg:
    paths = [epath.Path(arg)]
  elif folder is not None:
    paths = [epath.Path(root) / folder]
    if not paths[0].exists():
      paths = _from_hub(key, paths[0], hub_revisions)
  else:
    raise ValueError(f"{key!r} needs a path: '{key}:PATH'")
  if len(paths) == 1:
    return reader(paths[0], **kwargs)
  return _read_all(reader, paths, kwargs, split)


def hub_source(name_or_path: str, *, root: PathLike = DEFAULT_ROOT, hub_revisions: str = "") -> dict | None:
  """{repo_id: commit sha} of the hub repositories `load_dataset(name_or_path, root=root)` read (`data.hub`, its
  cached snapshots: pinned or not, the exact commit), or None when it reads none (a folder under `root`, a path,
  synthetic data). What a report records beside its scores."""
  key, sep, arg = _resolve(name_or_path)
  if key == "synthetic" or (sep and arg) or key not in hub.HUB_DATASETS:
    return None
  folder = _READERS[key][1]
  if folder is None or (epath.Path(root) / folder).exists():
    return None
  return hub.commits_read(key, overrides=hub_revisions)


def _from_hub(key: str, where: epath.Path, hub_revisions: str = "") -> list[epath.Path]:
  """The hub copy of a data set missing from the benchmark root (`data.hub`), or a one-line error."""
  if key in hub.NOT_ON_HUB:
    raise DataError(f"no such folder; {hub.NOT_ON_HUB[key]}", file=str(where))
  if key not in hub.HUB_DATASETS:
    raise DataError("no such file or directory", file=str(where))
  try:
    return [epath.Path(p) for p in hub.local_paths(key, overrides=hub_revisions)]
  except FileNotFoundError as e:
    raise DataError(f"no such folder, and {e}", file=str(where)) from None


def _read_all(reader: Reader, paths: list[epath.Path], kwargs: dict[str, Any], split: str | None) -> Examples:
  """One data set kept in several folders (PPE's six hub sets), read in order into one `Examples`. With a split,
  a folder without that split's files is passed over (PPE's human-preference set is its test split, the
  correctness sets are train)."""
  out, limit = Examples(), kwargs["limit"]
  for path in paths:
    if split is not None and not any(io.split_matches(f, split) for f in io.list_files(path)):
      continue
    part = reader(path, **{**kwargs, "limit": None if limit is None else limit - len(out)})
    out.extend(part)
    out.add_counts(part)
    if limit is not None and len(out) >= limit:
      break
  if not out.files:
    raise DataError(f"no file for split {split!r} in any of {[str(p) for p in paths]}")
  return out


# --------------------------------------------------------------------------------------------------
# Mixtures: several data sets in one config string, each with its own limit.

MIXTURE_SEP = ";"
LIMIT_SEP = "@"


@dataclasses.dataclass(frozen=True)
class MixturePart:
  """One data set of a mixture: a `load_dataset` spec and its own item limit (None: all)."""

  spec: str
  limit: int | None = None


def parse_mixture(text: str, key: str = "data.train") -> tuple[MixturePart, ...]:
  """`"spec[@LIMIT];spec[@LIMIT];..."` -> parts; a bad spec is a one-line ValueError naming `key` and the part.

  Parts are split on ";" (synthetic options keep their "," and "+"); each part's text after its last "@" must be
  a positive integer, so a path that itself holds "@" cannot be named here. Every name is resolved as
  `load_dataset` would (so a typo fails here, before any model is loaded) and no spec may appear twice.
  """
  if not isinstance(text, str) or not text.strip():
    raise ValueError(f"config {key}={text!r}: empty; name a data set, e.g. 'synthetic' or 'skywork@1000;math:PATH'")
  parts, seen = [], set()
  for raw in text.split(MIXTURE_SEP):
    part = raw.strip()
    if not part:
      raise ValueError(f"config {key}={text!r}: empty part between ';' separators")
    spec, at, tail = part.rpartition(LIMIT_SEP) if LIMIT_SEP in part else (part, "", "")
    spec, tail = spec.strip(), tail.strip()
    limit = None
    if at:
      if not tail.isdigit() or int(tail) < 1:
        raise ValueError(f"config {key}: part {part!r}: limit {tail!r} after '@' is not a positive integer "
                         "(leave out '@LIMIT' to take every item)")
      limit = int(tail)
    if not spec:
      raise ValueError(f"config {key}: part {part!r} names no data set before '@'")
    try:
      _resolve(spec)
    except ValueError as e:
      raise ValueError(f"config {key}: part {part!r}: {e}") from None
    if spec in seen:
      raise ValueError(f"config {key}: data set {spec!r} is named twice")
    seen.add(spec)
    parts.append(MixturePart(spec, limit))
  return tuple(parts)


def _cap(*limits: int | None) -> int | None:
  given = [x for x in limits if x is not None]
  return min(given) if given else None


def load_mixture(
  text: str,
  *,
  root: PathLike = DEFAULT_ROOT,
  limit: int | None = None,
  seed: int = 0,
  synthetic_split: str | None = None,
  key: str = "data.train",
  on_error: OnError = "raise",
  hub_revisions: str = "",
) -> Examples:
  """Items of one or several data sets (`parse_mixture` syntax), each with its own limit, `limit` on the total.

  One part reads exactly what `load_dataset(spec, limit=min(@LIMIT, limit))` reads, in file order. With several,
  each part reads its first min(@LIMIT, limit) items (none can contribute more to the total), then all of them are
  shuffled together by a numpy permutation seeded with `seed` and the first `limit` are kept: a cap on the total
  takes from every source in proportion to what it read (in expectation), not from the first source only. Items
  keep their reader's `source`. `synthetic_split` is the split of `synthetic` parts; the other readers read the
  files they are given. A reader's ValueError is re-raised naming `key` and the part (a `DataError` as it is: it
  names the file and row). `hub_revisions` is `load_dataset`'s.
  """
  parts = parse_mixture(text, key)
  loaded = []
  for part in parts:
    options = {"split": synthetic_split} if _resolve(part.spec)[0] == "synthetic" and synthetic_split else {}
    try:
      loaded.append(load_dataset(part.spec, root=root, limit=_cap(part.limit, limit), on_error=on_error,
                                 hub_revisions=hub_revisions, **options))
    except DataError:
      raise  # names the file and row already
    except ValueError as e:
      raise ValueError(f"config {key}: part {part.spec!r}: {e}") from None
  if len(loaded) == 1:
    return loaded[0]
  pool = [ex for items in loaded for ex in items]
  order = np.random.default_rng(seed).permutation(len(pool))
  out = Examples(pool[i] for i in order[: len(pool) if limit is None else limit])
  for items in loaded:
    out.add_counts(items)
  return out
