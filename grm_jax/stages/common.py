"""What the stages share: the one stage protocol (`run_stage`, `cached`), the mesh scope and model from config,
training items, evaluation items.

Workdir layout (one folder per stage, written only by that stage):
  config.json                 the resolved config of the last run
  timings.jsonl               seconds per stage, one line per stage and invocation (main.run)
  rft/judgements.jsonl        every non-hinted RFT sample with its correctness (meta-RM data)
  rft/accepted.jsonl          the accepted trajectories (the SFT set) and rft/stats.json (acceptance rates)
  <stage>/checkpoints/        orbax train states (params, optimizer, step, data position), newest `keep`
  <stage>/metrics.jsonl       one line of scalars per step (TensorBoard events next to it when available)
  <stage>/final/              the stage's output params (orbax)
  <stage>/done.json           the stage is complete: the fingerprint of its inputs and a summary (`run_stage`)
  btrm/                       the Bradley–Terry baseline: final/, model.json, metrics.jsonl, metrics.json (held-out
                              pairs before / after, dropped items), results.json (the eval items' metrics at k=1)
  eval/                       report.md, results.json, plots, judgements.jsonl, done.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from grm_jax import files, judges, models, parallel, seeds
from grm_jax.data.example import PreferenceExample
from grm_jax.data.registry import load_dataset, load_mixture
from grm_jax.grm import rules
from grm_jax.judges import synthetic_critic, trajectories
from grm_jax.models import lora


@contextlib.contextmanager
def mesh_scope(config) -> Iterator[Any]:
  """`parallel.use_mesh` of the mesh from `config.mesh` (none on a single device, or for a config without a mesh
  group: plain jit) and its logical-axis rules; yields the mesh. `run_stage` runs every stage's work inside it, so
  the models a stage loads and the programs it builds are sharded by it."""
  if "mesh" not in config or jax.device_count() == 1:
    with parallel.use_mesh(None) as mesh:
      yield mesh
    return
  m = config.mesh
  with parallel.use_mesh(parallel.make_mesh({"data": m.data, "fsdp": m.fsdp, "tensor": m.tensor}), m.rules) as mesh:
    yield mesh


def load_base(config, name: str | None = None, *, adapters: bool = True) -> models.Model:
  """`config.model` (or the checkpoint `name` with its dtypes) on the current mesh scope. With `model.lora.rank` > 0
  (and `adapters`: a model that trains or was trained here, not a teacher or a filter judge) it carries fresh LoRA
  adapters and its base weights are stored in the compute dtype (`model.dtype`): frozen, they need no float32
  master copy."""
  spec = lora.from_config(config.model) if adapters else lora.Lora()
  model = models.load(
    name or config.model.name,
    dtype=config.model.dtype,
    param_dtype=config.model.dtype if spec.rank else config.model.param_dtype,
    remat=bool(config.model.remat),
  )
  return lora.attach(model, spec, seed=seeds.seed_for(int(config.seed), "lora_init"))


def judge_with(config, spec: str, model, critic_noise: float = 0.0):
  """(judge, model to pass it) for a sampler named `spec`: the model being trained (""), the rule-based critic of the
  built-in synthetic data ("synthetic-critic", wrong with chance `critic_noise`; it needs no model), or another
  checkpoint (a `models.load` spec, e.g. RFT's teacher or the RL-data filter's small judge) loaded with
  `config.model`'s dtypes. The judge takes `judges.judge`'s arguments: (model, examples, sampling, hint=...)."""
  if spec == "synthetic-critic":
    return functools.partial(_critic, noise=critic_noise), None
  return judges.judge, (model if not spec else load_base(config, name=spec, adapters=False))


def _critic(_, examples, sampling: judges.Sampling, *, hint: bool = False, noise: float):
  return synthetic_critic.critic_judge(examples, sampling, hint=hint, noise=noise)


def grm_template(config) -> str:
  """The GRM prompt template for n >= 2 items (`config.grm.template`; "default" when the config has no grm group)."""
  return str(config.grm.template) if "grm" in config else "default"


def stage_dir(workdir: str, stage: str) -> str:
  path = os.path.join(os.fspath(workdir), stage)
  files.makedirs(path)
  return path


def with_params(model: models.Model, params) -> models.Model:
  """The same model reading other params (no copy): the GRPO sampler uses the live training params this way."""
  return dataclasses.replace(model, params=params)


def read_done(stage_path: str) -> dict | None:
  path = os.path.join(stage_path, "done.json")
  return files.read_json(path) if files.exists(path) else None


def write_done(stage_path: str, info: dict) -> None:
  files.write_json(os.path.join(stage_path, "done.json"), info)


def training_items(config, split: str = "train"):
  """The RM training (or held-out) items named by `config.data`: one data set or a mixture (`data.load_mixture`:
  "spec@LIMIT;spec;..."), `data.train_limit` / `test_limit` on the total, several sources mixed by `config.seed`."""
  key = "train" if split == "train" else "test"
  limit = config.data.train_limit if split == "train" else config.data.test_limit
  return load_mixture(config.data[key], root=config.benchmark_root, limit=int(limit) or None, seed=int(config.seed),
                      synthetic_split=split, key=f"data.{key}", hub_revisions=hub_revisions(config))


RL_FILTER_KEYS = ("seed", "model", "data", "grm", "grpo.filter")
"""What decides the RL-data filter's verdicts (`cached` in the grpo stage): its judge (loaded with the model group's
dtypes), its sampling and the items. The btrm stage checks the filter it reads against them."""


def rl_filter_dropped(config, workdir: str) -> set[tuple[str, str]] | None:
  """The (source, id) of the training items the grpo stage's RL-data filter dropped (paper App. C.1), read from
  `<workdir>/grpo/filter.json{,l}`; None when the config has no filter (`grpo.filter.judge` = ''), so the RL data
  is every training item. The BT RM trains on the RL data (App. C.2), so it reads the verdicts the GRM's RL used
  rather than judging again; they must have been made with this config's settings."""
  if "grpo" not in config or not str(config.grpo.filter.judge):
    return None
  marker, rows = (os.path.join(os.fspath(workdir), "grpo", f) for f in ("filter.json", "filter.jsonl"))
  if not (files.exists(marker) and files.exists(rows)):
    raise ValueError(f"config grpo.filter.judge={str(config.grpo.filter.judge)!r}: no RL-data filter verdicts at "
                     f"{marker}; run the grpo stage first (its filter writes them) or set grpo.filter.judge=''")
  if files.read_json(marker).get("fingerprint") != fingerprint(config, *RL_FILTER_KEYS):
    raise ValueError(f"{marker} was made with other settings than this config's {RL_FILTER_KEYS}; run the grpo "
                     "stage again with this config (its filter rejudges) before the stage that reads it")
  return {(r["source"], r["id"]) for r in files.read_jsonl(rows) if r["dropped"]}


def top_tied(n: int, rewards: Sequence[float] | None) -> bool:
  """An item of n >= 2 responses whose ground truth has no single maximum (`PreferenceExample.best` is None): Eq. 10
  names no right judgement for it, so RFT would reject every sample, a GRPO group on it is all -1 (zero advantage)
  and the meta RM would learn "wrong" for right-looking judgements. n = 1 items (a 0/1 label) have no tie."""
  return n >= 2 and (rewards is None or not bool(rules.has_unique_best(np.asarray(rewards, dtype=float))))


def without_top_tied(items: Sequence[PreferenceExample], stage: str) -> tuple[list[PreferenceExample], dict[str, Any]]:
  """(the items training can use, the count of top-tied ones left out, overall and by source): every stage that
  builds training items from RM data calls it (the paper's data has a unique maximum per item, §3.2; raw
  UltraFeedback with n = 4 does not)."""
  kept, by_source = [], {}
  for ex in items:
    if top_tied(ex.n, ex.rewards):
      by_source[ex.source] = by_source.get(ex.source, 0) + 1
    else:
      kept.append(ex)
  dropped = len(items) - len(kept)
  if dropped:
    logging.info("%s: left out %d of %d training items whose best response is tied (%s)", stage, dropped, len(items),
                 by_source)
  return kept, {"total": dropped, "by_source": dict(sorted(by_source.items()))}


def heldout_check(config, group_name: str, model: models.Model) -> Callable[[Any, int], dict[str, float]] | None:
  """Held-out evaluation during training: every `<group>.eval_every` optimizer steps (0 = never), the updated params
  judge the first `<group>.eval_items` items of `data.test` once, greedily, with the run's template; their accuracy
  (Eq. 10, as RFT and GRPO score) and parse rate go into that step's metrics as "heldout/accuracy" and
  "heldout/parse_rate" (metrics.jsonl, TensorBoard): a learning curve on items training never sees."""
  group = config[group_name]
  every = int(group.eval_every)
  if every <= 0:
    return None
  items = training_items(config, "test")[: int(group.eval_items)]
  if not items:
    raise ValueError(f"config {group_name}.eval_every={every} needs held-out items: data.test is empty")
  sampling = judges.Sampling.from_config(config, f"{group_name}.sampling", "eval",
                                         k=1).greedy().replace(batch_items=0)

  def check(params, step: int) -> dict[str, float]:
    if (step + 1) % every:
      return {}
    j = judges.judge(with_params(model, params), items, sampling, progress=False)
    right = np.asarray(trajectories.correctness(j, items), bool)
    return {"heldout/accuracy": float(right.mean()), "heldout/parse_rate": float(np.asarray(j.valid).mean())}

  return check


def datasets_of(config: Any) -> list[str]:
  """The comma-separated data set names of `config.eval.datasets`. A piece that is a bare `key=value` continues the
  options of the data set before it, so "synthetic:n=2,tasks=letter+upper,rewardbench" is two data sets."""
  names: list[str] = []
  for piece in (d.strip() for d in str(config.eval.datasets).split(",")):
    if not piece:
      continue
    if names and "=" in piece and ":" not in piece and ":" in names[-1]:
      names[-1] += "," + piece
    else:
      names.append(piece)
  if not names:
    raise ValueError("config.eval.datasets is empty; name at least one data set (e.g. 'rewardbench')")
  return names


def hub_revisions(config) -> str:
  """The config's top-level `hub_revisions` ("NAME_OR_REPO=REVISION,..."; `data.hub`), '' when it has none."""
  return str(config.get("hub_revisions", "") or "")


def select_items(name: str, config, limit: int | None) -> list[PreferenceExample]:
  """`limit` items of a dataset: the first ones, or (eval.subsample='random') a seeded uniform
  sample kept in file order — benchmark files are sorted by subset, so the first 32 RewardBench
  rows are all one subset."""
  if config.eval.subsample not in ("first", "random"):
    raise ValueError(f"config.eval.subsample={config.eval.subsample!r}; use 'first' or 'random'")
  # The built-in synthetic set is evaluated on its test split, whose problems training never sees.
  synthetic = name.split(":", 1)[0].lower() == "synthetic"
  extra: dict[str, str] = {"split": "test"} if synthetic else {}
  extra["hub_revisions"] = hub_revisions(config)
  # The synthetic stream is already in seeded random order (and a narrow task mix has only so many test problems),
  # so its first `limit` items are the random sample.
  if config.eval.subsample == "first" or not limit or synthetic:
    return list(load_dataset(name, root=config.benchmark_root, limit=limit, **extra))
  examples = list(load_dataset(name, root=config.benchmark_root, **extra))
  if len(examples) <= limit:
    return examples
  rng = np.random.default_rng(seeds.seed_for(int(config.seed), "eval"))
  keep = np.sort(rng.choice(len(examples), size=limit, replace=False))
  return [examples[i] for i in keep]


def eval_items(config) -> dict[str, list[PreferenceExample]]:
  """The evaluation items of every data set of `config.eval.datasets`: `eval.limit` of each by `select_items`. The
  eval stage (the GRM) and the btrm stage (the scalar baseline) both read them here, so both score the same
  held-out items."""
  limit = int(config.eval.limit) or None
  out: dict[str, list[PreferenceExample]] = {}
  for name in datasets_of(config):
    out[name] = select_items(name, config, limit)
    logging.info("%s: %d evaluation items", name, len(out[name]))
    if not out[name]:
      raise ValueError(f"config.eval.datasets: {name!r} has no items under {config.benchmark_root!r}")
  return out


# Keys of a stage's group that only add log lines (the held-out probe during training): changing them must not throw
# away a finished stage, so no fingerprint reads them.
LOG_ONLY_KEYS = ("eval_every", "eval_items")


def fingerprint(config, *keys: str, upstream: dict[str, Any] | None = None) -> str:
  """A stable digest of what decides some outputs: the config groups or dotted keys `keys` (a group less its
  `LOG_ONLY_KEYS`) and `upstream` (the fingerprints of the stages whose outputs they read). A stage (`run_stage`)
  and a step inside one (`cached`) are reused only when it matches."""
  def part(dotted):
    node = config
    for name in dotted.split("."):
      if name not in node:
        return None
      node = node[name]
    if not hasattr(node, "to_dict"):
      return node
    return {n: v for n, v in node.to_dict().items() if n not in LOG_ONLY_KEYS}

  parts = {k: part(k) for k in keys}
  parts = {k: v for k, v in parts.items() if v is not None or "." in k}
  if upstream:
    parts["upstream"] = upstream
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def upstream_fingerprints(workdir: str, stages: Sequence[str]) -> dict[str, str | None]:
  """The done fingerprints of the stages of this workdir whose outputs a stage reads (None: not done)."""
  return {name: (read_done(os.path.join(os.fspath(workdir), name)) or {}).get("fingerprint") for name in stages}


def run_stage(config, workdir: str, name: str, work: Callable[[str], dict[str, Any]], *, keys: Sequence[str],
              upstream: Sequence[str] = (), reuse: Callable[[str, dict[str, Any]], Any] | None = None) -> Any:
  """The one stage protocol: the fingerprint of the inputs, then reuse or run, then the done marker.

  Inputs are the config groups `keys` and the done markers of the `upstream` stages of this workdir whose outputs
  the stage reads, so a stage whose input was made again runs again. If `<workdir>/<name>/done.json` holds the same
  fingerprint, nothing runs: the marker's info is returned (or `reuse(stage folder, info)`). Otherwise
  `work(stage folder)` runs inside the config's mesh scope (`mesh_scope`; it resumes from its own checkpoints and
  cached steps when a previous run was cut) and returns the info to record; the marker is written last, so its
  presence means every output is there.
  """
  out = stage_dir(workdir, name)
  key = fingerprint(config, *keys, upstream=upstream_fingerprints(workdir, upstream))
  done = read_done(out)
  if done is not None and done.get("fingerprint") == key:
    logging.info("%s: already done (%s)", name, out)
    return reuse(out, done) if reuse is not None else done
  _forget_other_inputs(out, name, key)
  start = time.perf_counter()
  with mesh_scope(config):
    info = work(out)
  write_done(out, {"fingerprint": key, **{k: v for k, v in dict(info).items() if k not in ("fingerprint", "seconds")},
                   "seconds": round(time.perf_counter() - start, 1)})
  return reuse(out, read_done(out)) if reuse is not None else read_done(out)


STARTED = "started.json"
"""The fingerprint a stage's training outputs (checkpoints, metrics) belong to, written before its work starts."""
STALE = ("checkpoints", "metrics.jsonl", "metrics", "final", "done.json")  # metrics/: its per-step objects (gs://)
"""What a stage's training leaves that belongs to one fingerprint: resumed only with the same inputs."""


def _forget_other_inputs(out: str, name: str, key: str) -> None:
  """Resuming is for the same inputs: a stage whose config or upstream changed since its checkpoints were written
  starts over instead of restoring them (a changed learning rate must not resume the old run). Sampling steps keep
  their own fingerprints (`cached`) and are left alone."""
  started = os.path.join(out, STARTED)
  previous = files.read_json(started).get("fingerprint") if files.exists(started) else None
  if previous is None:
    done = read_done(out)
    previous = done.get("fingerprint") if done else None
  if previous is not None and previous != key:
    logging.info("%s: inputs changed since the last run (%s -> %s); its checkpoints and metrics start over", name,
                 previous, key)
    for item in STALE:
      files.remove(os.path.join(out, item))
  files.write_json(started, {"fingerprint": key})


def cached(marker: str, config, make: Callable[[], dict[str, Any]], *, keys: Sequence[str], workdir: str = "",
           upstream: Sequence[str] = ()) -> dict[str, Any]:
  """A step inside a stage (sampling) done once per inputs, fingerprinted as `run_stage` fingerprints a stage (the
  config groups or dotted keys `keys`, the done markers of this workdir's `upstream` stages): its summary is stored
  in the JSON file `marker` with the fingerprint; with the same fingerprint the stored summary is returned and `make`
  is not called. A killed stage thus keeps its samples and goes straight back to training."""
  key = fingerprint(config, *keys, upstream=upstream_fingerprints(workdir, upstream) if upstream else None)
  if files.exists(marker):
    stored = files.read_json(marker)
    if stored.get("fingerprint") == key:
      logging.info("reusing %s", marker)
      return stored
  summary = {**make(), "fingerprint": key}
  files.write_json(marker, summary)
  return json.loads(files.dumps(summary))


def stage_seconds(workdir: str) -> dict[str, float]:
  """Seconds each stage's outputs took to make, for the stages the workdir's timings.jsonl lists: the done marker's
  "seconds" (the invocation that finished the stage; a stage resumed after preemption counts that last part only),
  else the longest of its timings (a stage reused by a later invocation also logs a line, of ~0 s)."""
  path = os.path.join(os.fspath(workdir), "timings.jsonl")
  if not files.exists(path):
    return {}
  longest: dict[str, float] = {}
  for line in files.read_jsonl(path):
    longest[line["stage"]] = max(longest.get(line["stage"], 0.0), float(line["seconds"]))
  out = {}
  for name, seconds in longest.items():
    done = read_done(os.path.join(os.fspath(workdir), name)) or {}
    out[name] = float(done["seconds"]) if isinstance(done.get("seconds"), (int, float)) else seconds
  return out


