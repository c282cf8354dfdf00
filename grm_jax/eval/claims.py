"""The paper's orderings as hypotheses tested over seeds: each claim holds, does not hold, or is inconclusive.

A claim says system A is at least as good as system B on the same items ("Voting@8 >= Voting@1", "RFT + GRPO >= RFT
alone"). Each seed is a whole training run judged on its held-out items; every evaluation keeps each column's
per-item tie-expected correctness ("outcomes" in its results.json, `eval.metrics.item_outcomes`), so A and B are
compared item by item. The statistic is the mean over seeds of the mean over items of A - B, and its 95% interval
a two-level percentile bootstrap (ours; the paper reports single runs): draw the seeds with replacement, then the
items of each drawn seed with replacement, A and B together. Both sources of variation are in it: the training run
(seed) and the draw of test items. A claim **holds** when the whole interval lies above 0, **does not hold** when it
lies below 0, and is **inconclusive** when it contains 0, whatever the outcome: the items and the rule are fixed
before the run.

Systems are named "<results folder>[@baseline]:<column>", the folder relative to the workdir with "{seed}" for the
seed: "seed{seed}/eval:voting@8" (a scaling point), "seed{seed}/eval:meta" (MetaRM@k_max), "seed{seed}/eval:k1",
"seed{seed}/eval@rft:voting" (that evaluation's `rft` baseline), "seed{seed}/btrm:k1" (the scalar RM). `claims`
lists the paper's orderings (arXiv 2504.02495v3: Figure 1 and §5.2 for inference-time scaling, Table 3 for the meta
RM, Table 4 for the ablations, Table 2 for the scalar RM).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from grm_jax.eval.comparison import baseline_part


def claims(k_max: int, grm: str, without_principles: str, scalar_rm: str) -> list[dict[str, str]]:
  """The paper's orderings at evaluation k = `k_max`: {"id", "claim", "a", "b"} (A > B), systems as in the module
  docstring; `grm` is the SPCT GRM's evaluation folder (with MetaRM and the baselines "base" and "rft"),
  `without_principles` the ablation's and `scalar_rm` the Bradley-Terry stage's. Voting@k rising with k is tested
  from k = 1 to `k_max` and between each doubling."""
  ks = [1]
  while ks[-1] * 2 <= k_max:
    ks.append(ks[-1] * 2)
  if ks[-1] != k_max:
    ks.append(k_max)
  g, npr = grm, without_principles
  out = [{"id": "1", "claim": f"Voting@k rises with k: Voting@{k_max} > Voting@1", "a": f"{g}:voting@{k_max}",
          "b": f"{g}:voting@1"}]
  out += [{"id": f"1.{i}", "claim": f"Voting@{hi} > Voting@{lo}", "a": f"{g}:voting@{hi}", "b": f"{g}:voting@{lo}"}
          for i, (lo, hi) in enumerate(zip(ks, ks[1:], strict=False), 1)]
  out += [
    {"id": "2", "claim": f"MetaRM@{k_max} > Voting@{k_max}", "a": f"{g}:meta", "b": f"{g}:voting"},
    {"id": "3.1", "claim": "RFT + GRPO > RFT alone (k=1)", "a": f"{g}:k1", "b": f"{g}@rft:k1"},
    {"id": "3.2", "claim": f"RFT + GRPO > RFT alone (Voting@{k_max})", "a": f"{g}:voting", "b": f"{g}@rft:voting"},
    {"id": "3.3", "claim": "RFT alone > base (k=1)", "a": f"{g}@rft:k1", "b": f"{g}@base:k1"},
    {"id": "3.4", "claim": f"RFT alone > base (Voting@{k_max})", "a": f"{g}@rft:voting", "b": f"{g}@base:voting"},
    {"id": "4.1", "claim": "with principles > without principles (k=1)", "a": f"{g}:k1", "b": f"{npr}:k1"},
    {"id": "4.2", "claim": f"with principles > without principles (Voting@{k_max})", "a": f"{g}:voting",
     "b": f"{npr}:voting"},
    {"id": "5", "claim": f"GRM Voting@{k_max} > Bradley-Terry scalar RM", "a": f"{g}:voting", "b": f"{scalar_rm}:k1"},
  ]
  runs = {g: "SPCT GRM", f"{g}@rft": "RFT alone", f"{g}@base": "base model", npr: "GRM w/o principles",
          scalar_rm: "Bradley-Terry RM"}
  for c in out:
    c["a_label"], c["b_label"] = (label(c[x], runs, k_max, single_score=(scalar_rm,)) for x in ("a", "b"))
  return out


def label(system: str, runs: Mapping[str, str], k_max: int, single_score: Sequence[str] = ()) -> str:
  """"seed{seed}/eval@rft:voting" -> "RFT alone, Voting@8" with `runs` naming each results folder (and part); a
  folder of `single_score` (a scalar RM: one score per response, no k) is named alone."""
  folder, part, column = parse_system(system)
  where = f"{folder}@{part}" if part else folder
  run = runs.get(where, where)
  if column == "k1":
    return run if folder in single_score else f"{run}, k=1"
  if column in ("voting", "meta", "token_prob"):
    column = f"{column}@{k_max}"
  name, _, k = column.partition("@")
  return f"{run}, {dict(voting='Voting', meta='MetaRM', token_prob='TokenProb').get(name, name)}@{k}"


def parse_system(name: str) -> tuple[str, str, str]:
  """"s{seed}/eval@rft:voting" -> ("s{seed}/eval", "rft", "voting"): results folder pattern, baseline part ("" =
  the results' own), column."""
  where, sep, column = name.rpartition(":")
  if not sep or not where or not column:
    raise ValueError(f"system {name!r} is not '<results folder>[@baseline]:<column>' (e.g. 'seed{{seed}}/eval:k1')")
  folder, _, part = where.partition("@")
  return folder, part, column


def outcomes_of(results: Mapping[str, Any], part: str, column: str) -> dict[str, float]:
  """{"<data set>/<item id>": tie-expected correctness} of one column of an evaluation's (or btrm's) results, over
  every data set it scored; items with no unique best are left out."""
  if part:
    chosen = baseline_part(results, part)
    if chosen is None:
      listed = [b.get("policy") for b in (results.get("baselines") or [results.get("baseline")]) if b]
      raise KeyError(f"no baseline {part!r} in these results (their baselines: {listed}); add it to that "
                     "evaluation's eval.baseline")
    datasets = chosen.get("datasets") or {}
  else:
    datasets = results.get("datasets") or {}
  out: dict[str, float] = {}
  for name, d in datasets.items():
    outcomes = d.get("outcomes")
    if not outcomes:
      raise KeyError(f"data set {name!r} has no per-item outcomes: results written before grm_jax kept them; rerun "
                     "that stage")
    if column not in outcomes:
      raise KeyError(f"data set {name!r} has no column {column!r} (it has {sorted(c for c in outcomes if c != 'ids')})")
    for item, value in zip(outcomes["ids"], outcomes[column], strict=True):
      if value is not None:
        out[f"{name}/{item}"] = float(value)
  return out


def paired(a: Mapping[str, float], b: Mapping[str, float], where: str = "") -> tuple[np.ndarray, np.ndarray]:
  """A's and B's outcomes on the same items, in one order; a different item set is an error (not the same test)."""
  if set(a) != set(b):
    only = sorted(set(a) ^ set(b))
    raise ValueError(f"{where}: the two systems were not scored on the same items ({len(only)} differ, e.g. "
                     f"{only[:3]}); compare runs with the same data, limit and seed")
  keys = sorted(a)
  return np.array([a[k] for k in keys], np.float64), np.array([b[k] for k in keys], np.float64)


def hierarchical_interval(per_seed: Sequence[np.ndarray], seed: int = 0, resamples: int = 2000,
                          confidence: float = 0.95) -> tuple[float, float]:
  """(lo, hi) percentile interval of the mean over seeds of the mean over items, resampling seeds and then the items
  of each drawn seed with replacement (module docstring). One seed: items only. (nan, nan) without items."""
  arrays = [np.asarray(x, np.float64) for x in per_seed if len(x)]
  if not arrays or resamples <= 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  s = len(arrays)
  draws = np.empty(resamples)
  for r in range(resamples):
    seeds = rng.integers(0, s, s) if s > 1 else np.zeros(1, int)
    draws[r] = np.mean([arrays[i][rng.integers(0, len(arrays[i]), len(arrays[i]))].mean() for i in seeds])
  alpha = (1.0 - confidence) / 2
  lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
  return float(lo), float(hi)


def verdict(lo: float, hi: float) -> str:
  """"holds" (interval above 0), "does not hold" (below 0) or "inconclusive" (contains 0, or no interval)."""
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "inconclusive"
  if lo > 0:
    return "holds"
  if hi < 0:
    return "does not hold"
  return "inconclusive"


def check_claims(seeds: Sequence[int], load: Callable[[int, str], Mapping[str, Any]], claim_list: Sequence[Mapping],
                 resamples: int = 2000, confidence: float = 0.95) -> dict[str, Any]:
  """Every claim over `seeds`. `load(seed, folder)` returns the results.json of a results folder pattern (module
  docstring) for that seed.

  Returns {"seeds", "systems": {system: {"per_seed": {seed: mean}, "mean", "ci95"}}, "claims": [claim + {"per_seed":
  {seed: mean A - B}, "difference", "ci95", "verdict", "items"}]}; every interval by `hierarchical_interval` with
  the same bootstrap seed (0)."""
  cache: dict[tuple[int, str], dict[str, float]] = {}

  def outcomes(seed: int, system: str) -> dict[str, float]:
    if (seed, system) not in cache:
      folder, part, column = parse_system(system)
      try:
        cache[seed, system] = outcomes_of(load(seed, folder), part, column)
      except KeyError as e:
        raise ValueError(f"seed {seed}, system {system!r}: {e.args[0]}") from None
    return cache[seed, system]

  systems: dict[str, Any] = {}
  labels = {c[x]: c.get(f"{x}_label", c[x]) for c in claim_list for x in ("a", "b")}
  for system in dict.fromkeys(s for c in claim_list for s in (c["a"], c["b"])):
    values = [np.array(list(outcomes(s, system).values())) for s in seeds]
    lo, hi = hierarchical_interval(values, 0, resamples, confidence)
    systems[system] = {"label": labels[system],
                       "per_seed": {str(s): float(v.mean()) for s, v in zip(seeds, values, strict=True)},
                       "mean": float(np.mean([v.mean() for v in values])), "ci95": [lo, hi]}
  results = []
  for c in claim_list:
    diffs = []
    for s in seeds:
      a, b = paired(outcomes(s, c["a"]), outcomes(s, c["b"]), f"claim {c['id']} ({c['claim']}), seed {s}")
      diffs.append(a - b)
    lo, hi = hierarchical_interval(diffs, 0, resamples, confidence)
    results.append({**c, "per_seed": {str(s): float(d.mean()) for s, d in zip(seeds, diffs, strict=True)},
                    "difference": float(np.mean([d.mean() for d in diffs])), "ci95": [lo, hi],
                    "verdict": verdict(lo, hi), "items": int(sum(len(d) for d in diffs))})
  return {"seeds": [int(s) for s in seeds], "systems": systems, "claims": results}


def _pct(x: float) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _signed(x: float) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}"


def render(result: Mapping[str, Any], seconds: float | None = None) -> list[str]:
  """The claims table and the systems table (percentage points, 95% intervals) as Markdown lines."""
  seeds = [str(s) for s in result["seeds"]]
  lines = [f"# The paper's orderings over {len(seeds)} seeds ({', '.join(seeds)})", ""]
  if seconds is not None:
    lines += [f"Wall time of the run's stages: {seconds / 60:.1f} min.", ""]
  lines += [
    "Each claim is A > B on the same held-out items. *difference*: mean over seeds of the mean over items of A - B "
    "(tie-expected accuracy, percentage points), with its 95% two-level bootstrap interval (seeds, then items). "
    "*holds*: the interval lies above 0; *does not hold*: below 0; *inconclusive*: it contains 0.",
    "",
    "| # | claim | difference (95% CI) | per seed | verdict |",
    "|---|---|---|---|---|",
  ]
  for c in result["claims"]:
    lo, hi = c["ci95"]
    per_seed = ", ".join(_signed(c["per_seed"][s]) for s in seeds)
    lines.append(f"| {c['id']} | {c['claim']} | {_signed(c['difference'])} ({_signed(lo)} to {_signed(hi)}) | "
                 f"{per_seed} | **{c['verdict']}** |")
  lines += ["", "| system | mean (95% CI) | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|---|" + "---|" * len(seeds)]
  for name, s in result["systems"].items():
    lo, hi = s["ci95"]
    lines.append(f"| {s.get('label', name)} | {_pct(s['mean'])} ({_pct(lo)}–{_pct(hi)}) | "
                 + " | ".join(_pct(s["per_seed"][x]) for x in seeds) + " |")
  lines.append("")
  return lines
