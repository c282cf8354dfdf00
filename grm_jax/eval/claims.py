"""The paper's orderings as hypotheses tested over seeds: each claim holds, does not hold, or is inconclusive.

A claim says system A is at least as good as system B on the same items ("Voting@8 >= Voting@1", "RFT + GRPO >= RFT
alone"). Each seed is a whole training run judged on its held-out items; every evaluation keeps each column's
per-item tie-expected correctness ("outcomes" in its results.json, `eval.metrics.item_outcomes`), so A and B are
compared item by item. The statistic is the mean over seeds of the mean over items of A - B.

Its 95% interval (ours; the paper reports single runs) is a Student-t interval over the S per-seed means with S - 1
degrees of freedom. Each seed is an independent training run judged on its own held-out subsample, so each seed
mean already carries both sources of variation, the run and the draw of test items, and their spread estimates
both at once; the t quantile (4.30 at S = 3, not 1.96) pays for estimating that spread from S values. It is exact for
normal seed means, and `eval.coverage` measures it on binary items (94.8-95.2% at 3 and 5 seeds, README). The
earlier two-level percentile bootstrap (seeds, then items) undercovered at 3 seeds: a bootstrap over 3 values
shrinks their spread by (S - 1) / S and has no small-sample quantile, and resampling items inside resampled seeds
counts the item variance a second time (measured: 88-98% for a nominal 95%, 88% at 3 seeds with spread 0.2).

The table holds many claims, so the verdict quoted is Holm's step-down correction over all of them (Holm 1979;
family-wise error 5%): a claim **holds** when its Holm-adjusted p-value is below 0.05 and A - B > 0, **does not
hold** when it is below 0.05 and A - B < 0, and is **inconclusive** otherwise. Each claim's own verdict (its 95%
interval above / below / containing 0) is kept beside it. The items and the rule are fixed before the run.

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
from scipy import stats

from grm_jax.eval.comparison import baseline_part

FAMILY_ALPHA = 0.05  # Holm's family-wise error over the whole claims table
TEMPLATE_ONLY = "template only: one fixed principle line"  # the synthetic critic writes the same criteria
METHOD = "t-interval over per-seed means (S - 1 df); verdicts Holm-adjusted over the claims table"


def claims(k_max: int, grm: str, without_principles: str, scalar_rm: str,
           fixed_principles: bool = False) -> list[dict[str, str]]:
  """The paper's orderings at evaluation k = `k_max`: {"id", "claim", "a", "b"} (A > B), systems as in the module
  docstring; `grm` is the SPCT GRM's evaluation folder (with MetaRM and the baselines "base" and "rft"),
  `without_principles` the ablation's and `scalar_rm` the Bradley-Terry stage's. Voting@k rising with k is tested
  from k = 1 to `k_max` and between each doubling. `fixed_principles`: RFT's trajectories came from a sampler that
  writes one fixed principle line for every item (the synthetic critic), so the principles claims (4.x) test the
  template's wording, not self-generated principles (paper §3.1), and say so in their text."""
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
  np_note = f"; {TEMPLATE_ONLY}" if fixed_principles else ""
  out += [
    {"id": "2", "claim": f"MetaRM@{k_max} > Voting@{k_max}", "a": f"{g}:meta", "b": f"{g}:voting"},
    {"id": "3.1", "claim": "RFT + GRPO > RFT alone (k=1)", "a": f"{g}:k1", "b": f"{g}@rft:k1"},
    {"id": "3.2", "claim": f"RFT + GRPO > RFT alone (Voting@{k_max})", "a": f"{g}:voting", "b": f"{g}@rft:voting"},
    {"id": "3.3", "claim": "RFT alone > base (k=1)", "a": f"{g}@rft:k1", "b": f"{g}@base:k1"},
    {"id": "3.4", "claim": f"RFT alone > base (Voting@{k_max})", "a": f"{g}@rft:voting", "b": f"{g}@base:voting"},
    {"id": "4.1", "claim": f"with principles > without principles (k=1{np_note})", "a": f"{g}:k1", "b": f"{npr}:k1"},
    {"id": "4.2", "claim": f"with principles > without principles (Voting@{k_max}{np_note})", "a": f"{g}:voting",
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


def seed_t_interval(seed_means: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """(lo, hi) Student-t interval of the mean over the last axis (one value per seed), S - 1 degrees of freedom;
  vectorised over the leading axes (the coverage simulation calls it on thousands of rows at once). Exact when the
  seed means are normal with one variance; each seed mean already carries its own items' sampling noise, so the
  item variance is counted once, inside the seed-to-seed spread. Fewer than 2 values: nan."""
  x = np.asarray(seed_means, np.float64)
  s = x.shape[-1]
  if s < 2:
    nan = np.full(x.shape[:-1], np.nan)
    return nan, nan.copy()
  half = stats.t.ppf(0.5 + confidence / 2, s - 1) * x.std(axis=-1, ddof=1) / math.sqrt(s)
  mean = x.mean(axis=-1)
  return mean - half, mean + half


def _t_test(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
  """(lo, hi, two-sided p of "the mean is 0") from a one-sample t over `values`, len(values) - 1 degrees of freedom:
  the interval excludes 0 exactly when p < 1 - confidence."""
  n = len(values)
  mean, sd = float(values.mean()), float(values.std(ddof=1))
  lo, hi = seed_t_interval(values, confidence)
  if sd <= 1e-12:  # every value the same (up to rounding): no spread to test against; 0 is no evidence, else certain
    return float(lo), float(hi), 1.0 if abs(mean) <= 1e-12 else 0.0
  p = 2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1)
  return float(lo), float(hi), float(p)


def seed_interval(per_seed: Sequence[np.ndarray], confidence: float = 0.95) -> tuple[float, float, float]:
  """(lo, hi, p): the `confidence` t-interval of the mean over seeds of each seed's mean over items, with S - 1
  degrees of freedom (`seed_t_interval`), and the two-sided p-value of "the mean is 0" from the same t statistic.
  One seed: the t-interval over that seed's items (n - 1 degrees of freedom), which sees the test items' sampling
  but not the training run's. (nan, nan, 1) with fewer than two values."""
  arrays = [np.asarray(x, np.float64) for x in per_seed if len(x)]
  values = np.array([a.mean() for a in arrays]) if len(arrays) > 1 else (arrays[0] if arrays else np.zeros(0))
  if len(values) < 2:
    return float("nan"), float("nan"), 1.0
  return _t_test(values, confidence)


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values (Holm 1979): sort ascending, multiply the i-th smallest (from 0) by m - i,
  carry the running maximum, cap at 1. Rejecting every adjusted p below alpha keeps the family-wise error (any
  false "holds" / "does not hold" among the m claims) at most alpha, whatever the claims' dependence."""
  p = np.asarray(p_values, np.float64)
  m = len(p)
  order = np.argsort(p, kind="stable")
  adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
  out = np.empty(m)
  out[order] = adjusted
  return [float(x) for x in out]


def verdict(lo: float, hi: float) -> str:
  """"holds" (interval above 0), "does not hold" (below 0) or "inconclusive" (contains 0, or no interval)."""
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "inconclusive"
  if lo > 0:
    return "holds"
  if hi < 0:
    return "does not hold"
  return "inconclusive"


def family_verdict(difference: float, p_adjusted: float, alpha: float = FAMILY_ALPHA) -> str:
  """The verdict over the whole claims table: "holds" / "does not hold" (by the difference's sign) when the Holm
  adjusted p-value is below `alpha`, else "inconclusive"."""
  if not (math.isfinite(difference) and math.isfinite(p_adjusted)) or p_adjusted >= alpha:
    return "inconclusive"
  return "holds" if difference > 0 else "does not hold" if difference < 0 else "inconclusive"


def score(claim_rows: Sequence[dict[str, Any]], values: Sequence[Sequence[np.ndarray]], confidence: float = 0.95,
          alpha: float = FAMILY_ALPHA) -> None:
  """Adds to each claim row (in place) its interval and verdicts from `values` (per claim: one array per seed, the
  per-item A - B, or one per-seed mean each): "ci95" (`seed_interval`), "p" (two-sided), "verdict_single" (that
  claim alone: its interval above / below 0), "p_holm" (Holm over all the rows) and "verdict" (`family_verdict`:
  the one to quote, every claim of the table tested at once at family-wise error `alpha`)."""
  tests = [seed_interval(v, confidence) for v in values]
  adjusted = holm([p for _, _, p in tests])
  for row, (lo, hi, p), p_holm in zip(claim_rows, tests, adjusted, strict=True):
    row.update({"ci95": [lo, hi], "p": p, "verdict_single": verdict(lo, hi), "p_holm": p_holm,
                "verdict": family_verdict(row["difference"], p_holm, alpha)})


def rescore(result: Mapping[str, Any], confidence: float = 0.95, alpha: float = FAMILY_ALPHA,
            fixed_principles: bool = False) -> dict[str, Any]:
  """A claims results.json scored again from its stored per-seed means alone (intervals, p-values, verdicts; the
  method of `check_claims`), e.g. one written by the earlier two-level bootstrap. Needs two seeds or more: one seed's
  interval is over items, which the file does not keep. `fixed_principles` labels the principles claims (4.x) as
  `claims` does."""
  seeds = [str(s) for s in result["seeds"]]
  if len(seeds) < 2:
    raise ValueError(f"results with seeds {seeds}: rescoring needs two seeds or more (one seed's interval is over "
                     "items, which a claims results.json does not keep); run the claims stage again")
  out = {**result, "claims": [dict(c) for c in result["claims"]], "systems": {}, "family_alpha": alpha}
  for c in out["claims"]:
    if fixed_principles and c["id"].startswith("4.") and TEMPLATE_ONLY not in c["claim"]:
      text = c["claim"]
      c["claim"] = f"{text[:-1]}; {TEMPLATE_ONLY})" if text.endswith(")") else f"{text} ({TEMPLATE_ONLY})"
  for name, system in result["systems"].items():
    lo, hi, _ = seed_interval([np.array([system["per_seed"][s]]) for s in seeds], confidence)
    out["systems"][name] = {**system, "ci95": [lo, hi]}
  score(out["claims"], [[np.array([c["per_seed"][s]]) for s in seeds] for c in out["claims"]], confidence, alpha)
  out["method"] = METHOD
  return out


def check_claims(seeds: Sequence[int], load: Callable[[int, str], Mapping[str, Any]], claim_list: Sequence[Mapping],
                 confidence: float = 0.95, alpha: float = FAMILY_ALPHA) -> dict[str, Any]:
  """Every claim over `seeds`. `load(seed, folder)` returns the results.json of a results folder pattern (module
  docstring) for that seed.

  Returns {"seeds", "method", "family_alpha", "systems": {system: {"per_seed": {seed: mean}, "mean", "ci95"}},
  "claims": [claim + {"per_seed": {seed: mean A - B}, "difference", "items"} + what `score` adds]}."""
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
    lo, hi, _ = seed_interval(values, confidence)
    systems[system] = {"label": labels[system],
                       "per_seed": {str(s): float(v.mean()) for s, v in zip(seeds, values, strict=True)},
                       "mean": float(np.mean([v.mean() for v in values])), "ci95": [lo, hi]}
  results, all_diffs = [], []
  for c in claim_list:
    diffs = []
    for s in seeds:
      a, b = paired(outcomes(s, c["a"]), outcomes(s, c["b"]), f"claim {c['id']} ({c['claim']}), seed {s}")
      diffs.append(a - b)
    all_diffs.append(diffs)
    results.append({**c, "per_seed": {str(s): float(d.mean()) for s, d in zip(seeds, diffs, strict=True)},
                    "difference": float(np.mean([d.mean() for d in diffs])), "items": int(sum(len(d) for d in diffs))})
  score(results, all_diffs, confidence, alpha)
  return {"seeds": [int(s) for s in seeds], "method": METHOD, "family_alpha": alpha, "systems": systems,
          "claims": results}


def _pct(x: float) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _signed(x: float) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}"


def _p(x: float) -> str:
  return "–" if x is None or not math.isfinite(x) else ("<0.001" if x < 0.001 else f"{x:.3f}")


def render(result: Mapping[str, Any], seconds: float | None = None) -> list[str]:
  """The claims table and the systems table (percentage points, 95% intervals) as Markdown lines."""
  seeds = [str(s) for s in result["seeds"]]
  lines = [f"# The paper's orderings over {len(seeds)} seeds ({', '.join(seeds)})", ""]
  if seconds is not None:
    lines += [f"Wall time of the run's stages: {seconds / 60:.1f} min.", ""]
  alpha = result.get("family_alpha", FAMILY_ALPHA)
  lines += [
    "Each claim is A > B on the same held-out items. *difference*: mean over seeds of the mean over items of A - B "
    f"(tie-expected accuracy, percentage points), with its 95% t-interval over the {len(seeds)} per-seed means "
    f"({len(seeds) - 1} degrees of freedom; each seed mean carries its own items' sampling noise) and the two-sided "
    "p-value of the same t-test. *alone*: that claim's own verdict (interval above 0: holds; below: does not hold; "
    f"containing 0: inconclusive). *verdict*: Holm's step-down adjustment over all {len(result['claims'])} claims "
    f"(family-wise error {alpha:g}): holds / does not hold when the adjusted p is below {alpha:g}.",
    "",
    "| # | claim | difference (95% CI) | per seed | p | alone | p (Holm) | verdict |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for c in result["claims"]:
    lo, hi = c["ci95"]
    per_seed = ", ".join(_signed(c["per_seed"][s]) for s in seeds)
    lines.append(f"| {c['id']} | {c['claim']} | {_signed(c['difference'])} ({_signed(lo)} to {_signed(hi)}) | "
                 f"{per_seed} | {_p(c['p'])} | {c['verdict_single']} | {_p(c['p_holm'])} | **{c['verdict']}** |")
  lines += ["", "| system | mean (95% CI) | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|---|" + "---|" * len(seeds)]
  for name, s in result["systems"].items():
    lo, hi = s["ci95"]
    lines.append(f"| {s.get('label', name)} | {_pct(s['mean'])} ({_pct(lo)}–{_pct(hi)}) | "
                 + " | ".join(_pct(s["per_seed"][x]) for x in seeds) + " |")
  lines.append("")
  return lines
