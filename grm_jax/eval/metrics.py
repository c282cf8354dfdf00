"""Official benchmark metrics from per-example predicted scores (paper §5.1; each benchmark's own published metric).

Input: the examples as read by `grm_jax.data` and, for each, its predicted scores over its n responses in the
example's original response order (for a GRM: the voted totals, `grm.vote`, already un-permuted). `votes` is a
sequence of 1-D arrays (one [n_i] per example) or one padded array [N, n_max] whose tail beyond n_i is ignored.
Every value returned is a float: metrics are fractions in [0, 1] (not percentages); counts are under the keys
"n", "n_*" and "n/*".

"Is the chosen response the best?" decisions follow the paper's evaluation (§5.1): argmax of the scores
with ties broken uniformly at random (`judges.choose_best` with `key`), then the pick must be the unique
ground-truth best (`grm.pick_correct`). A tied pair is thus right half the time in expectation, not always
wrong (the training rule, `grm.is_correct`, counts ties wrong). `ties="expected"` (`score_benchmark`) replaces the
draw by its exact expectation: an item whose top voted score is shared by m responses counts 1/m if the unique true
best is among them, else 0 (`example_correct` with `expected=True`). Every pick-the-best metric below is, for a fixed
set of examples, a fixed weighted mean of per-example correctness, so by linearity the expected-mode value is exactly
the mean of the random-mode value over all tie-break keys, free of tie-break noise: a judge whose samples all fail
to parse (all-equal votes) scores 1/n per item, 50% on pairs, where one draw on 32 pairs has a standard deviation of
8.8 points (sqrt(0.25 / 32)). Examples whose ground truth has no unique best (e.g. PPE ties kept with
`include_ties`) cannot be scored this way and are left out, counted in "n_excluded".
Single-response examples are left out of these accuracies too, counted in "n_single_excluded" (present when
non-zero): the pick among one response is always "right", and the judge's 1-10 score of it (evaluation's
template) is not a 0/1 label to compare with. RM-Bench is the exception to the tie rule: it is scored as its
own code scores it, chosen strictly above rejected, so a tie is wrong; ReaLMistake's ROC-AUC already counts a tie
1/2. Both accept `ties` and return the same values in either mode.

Per benchmark (`score_benchmark(name, ...)`):
- rewardbench: accuracy per subset ("subset/<name>"); per section ("section/<name>") the subset accuracies are
  averaged weighted by their example counts, except that in Reasoning math-prm is weighted as much as all hep-*
  subsets together (official RewardBench: weight 984 = 6 x 164); "overall" = mean of Chat, Chat Hard, Safety,
  Reasoning. "section/Prior Sets", if present, is the plain mean of the official four prior subsets
  (anthropic_helpful, anthropic_hhh, shp, summarize; official RewardBench `analysis/get_benchmark_results.py`
  takes their nanmean) and is excluded from the overall (paper Table 8). The other preference-test-sets subsets
  (`data.REWARDBENCH_UNSECTIONED`) appear as subsets only, in no section.
- rmb: accuracy per scenario file (`source`), averaged over the scenarios of each goal x set
  ("Helpfulness/BoN", "Harmlessness/Pairwise", ...); "overall" = mean of the four. A BoN list is right only if
  its best response is the pick among all n (the paper's GRM scores the whole list in one prompt; the
  benchmark's pair rule "best beats every loser" is the same event up to ties). "micro/<part>" gives the plain
  example accuracy as well.
- rm-bench (not one of the paper's benchmarks: it evaluates RewardBench, PPE, RMB and ReaLMistake, §5.1; kept as
  an extra check of style bias): each prompt's 3 x 3 chosen-vs-rejected matrix (`data.rm_bench_pairs`); hard =
  chosen style plainer than rejected (upper triangle), normal = diagonal, easy = lower triangle. Per domain
  ("<domain>/easy", ..., "<domain>") the cells are averaged over prompts (Safety pools safety-refuse and
  safety-response), the domain score is the mean of the three levels (= mean of the 9 cells); "overall" and
  "easy"/"normal"/"hard" average the domains present. Without the Math file the overall covers 3 domains
  ("n_domains") and is not comparable with the leaderboard. Examples may be the 6-response parents (votes [6]: one
  listwise judgement, each cell compares two of its scores) or the pairs from `rm_bench_pairs` (votes [2]: one
  judgement per cell). A cell is right iff the chosen score is strictly higher: RM-Bench's `compute_accuracy`
  (THU-KEG/RM-Bench, scripts/utils.py) counts `score_chosen > score_rejected`, so a tie is wrong (no random
  tie-break; `key` unused).
- realmistake: ROC-AUC of the error label (positive class "error", `metadata["label"]`) against the error score
  = -votes. The GRM rates a single response 1-10 (higher is better, default template), so a low score flags an
  error; the paper does not state the orientation, and this is the only one under which a
  good judge scores above 0.5. Ties count 1/2 (Mann-Whitney, the expectation over random tie-breaks, as
  sklearn's roc_auc_score). "auc" pools all examples; "auc/<task>" and "auc_task_mean" are per task.
  The AUC compares items with each other, so an item's score must not depend on how many of its samples parsed:
  the votes of a single-response item are the **mean** of its valid (MetaRM@k: kept) samples' scores, not their sum
  (`grm.item_votes`, used for every column and scaling point of the eval stage): an item with three valid 8s and
  one unparseable sample scores 8, as one with four valid 8s, where sums (24 vs 32) would flag the first as the
  likelier error. An item with no valid sample scores the middle of its template's range (5.5 on 1-10): it carries
  no evidence either way, and dropping it instead would change the item set from column to column and favour a
  judge that fails to parse exactly the hard items.
- ppe: accuracy; "preference" over the human-preference pairs, "correctness" = mean over the correctness
  subsets ("correctness/<subset>") as in paper Table 9; "n_correctness_subsets" counts the subsets present (the
  paper's PPE-Correctness averages five: MMLU-Pro, MATH, GPQA, IFEval, MBPP-Plus). Both are paper columns, so
  both get a tie-expected value and an interval (`OFFICIAL_METRIC`, `interval_metrics`).

Uncertainty (`official_with_interval`, `bootstrap_official`): the official metric's tie-expected value and a 95%
percentile bootstrap interval over items of it (`eval.stats`), the interval every report shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from grm_jax.data.benchmarks import REWARDBENCH_SECTIONS, REWARDBENCH_UNSECTIONED, rm_bench_level, rm_bench_pairs
from grm_jax.data.example import PreferenceExample
from grm_jax.eval import stats
from grm_jax.grm import rules
from grm_jax.judges.choice import choose_best

Metrics = dict[str, float]

REWARDBENCH_MAIN = ("Chat", "Chat Hard", "Safety", "Reasoning")
RMB_PARTS = ("Helpfulness/BoN", "Helpfulness/Pairwise", "Harmlessness/BoN", "Harmlessness/Pairwise")
RM_BENCH_LEVELS = ("easy", "normal", "hard")


# --------------------------------------------------------------------------------------------------
# Array helpers.


def pad(examples: Sequence[PreferenceExample], votes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(votes [N, n_max] float64, rewards [N, n_max], mask [N, n_max]) from examples and their scores.

  `votes` is a sequence of [n_i] arrays or an [N, >= n_max] array; a length mismatch is an error.
  """
  n_ex = len(examples)
  if n_ex == 0:
    raise ValueError("no examples to score")
  n_max = max(ex.n for ex in examples)
  out = np.zeros((n_ex, n_max))
  rewards = np.zeros((n_ex, n_max))
  mask = np.zeros((n_ex, n_max), bool)
  padded = isinstance(votes, np.ndarray | jax.Array) and np.ndim(votes) == 2
  if padded:
    rows = np.asarray(votes, np.float64)
    if rows.shape[0] != n_ex or rows.shape[1] < n_max:
      raise ValueError(f"votes {rows.shape} do not cover {n_ex} examples with up to {n_max} responses")
  else:
    if len(votes) != n_ex:
      raise ValueError(f"{len(votes)} vote rows for {n_ex} examples")
    rows = votes
  for i, ex in enumerate(examples):
    row = np.asarray(rows[i], np.float64).reshape(-1)
    if not padded and row.shape[0] != ex.n:
      raise ValueError(f"example {i} ({ex.source}/{ex.id}) has {ex.n} responses but {row.shape[0]} scores")
    out[i, : ex.n] = row[: ex.n]
    rewards[i, : ex.n] = ex.rewards
    mask[i, : ex.n] = True
  if not np.all(np.isfinite(out[mask])):
    raise ValueError("votes must be finite")
  return out, rewards, mask


def example_correct(
  examples: Sequence[PreferenceExample], votes: Any, key: jax.Array | None, expected: bool = False
) -> tuple[np.ndarray, np.ndarray]:
  """(correct [N], scorable [N] bool): argmax with random tie-break is the unique true best.

  `correct` is bool, or with `expected=True` float: the probability of that event over the tie-break (1/m when the
  top voted score is shared by m responses one of which is the true best, else 0; `key` unused). `scorable` is False
  where the ground truth has no unique best (such examples are never correct).
  """
  v, r, m = pad(examples, votes)
  scorable = np.asarray(rules.has_unique_best(r, m))
  if expected:
    # The tie set as `choice.choose_best` sees it (float32 votes), so this is the exact mean of its draws.
    v32 = np.where(m, v.astype(np.float32), -np.inf)
    is_top = m & (v32 == v32.max(axis=-1, keepdims=True))
    best = np.asarray(rules.true_best(r, m))
    hit = np.take_along_axis(is_top, best[:, None], axis=-1)[:, 0]
    return np.where(hit & scorable, 1.0 / is_top.sum(-1), 0.0), scorable
  if key is None:
    raise ValueError("the random tie-break needs a PRNG key (or score with ties='expected')")
  choice = np.asarray(choose_best(v, m, key))
  return np.asarray(rules.pick_correct(choice, r, m)), scorable


def roc_auc(labels: Any, scores: Any) -> float:
  """ROC-AUC of binary `labels` (1 = positive) ranked by `scores` (higher = more positive); ties count 1/2.

  The Mann-Whitney U statistic with mid-ranks; NaN if a class is empty.
  """
  y = np.asarray(labels).astype(bool).reshape(-1)
  s = np.asarray(scores, np.float64).reshape(-1)
  if y.shape != s.shape:
    raise ValueError(f"{y.shape[0]} labels for {s.shape[0]} scores")
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
  upper = np.cumsum(counts)  # 1-based rank of the last element of each tie group
  mid = upper - (counts - 1) / 2.0
  ranks = mid[inverse]
  u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def _group_mean(values: np.ndarray, groups: Sequence[str]) -> dict[str, tuple[float, int]]:
  sums: dict[str, float] = defaultdict(float)
  counts: dict[str, int] = defaultdict(int)
  for g, x in zip(groups, values, strict=True):
    sums[g] += float(x)
    counts[g] += 1
  return {g: (sums[g] / counts[g], counts[g]) for g in sums}


def _subset_name(ex: PreferenceExample) -> str:
  return ex.source.split("/", 1)[1] if "/" in ex.source else ex.source


TIES = ("random", "expected")
"""How argmax ties are scored: drawn at random (`key`), or by their exact expectation (module docstring)."""


def _expected(ties: str) -> bool:
  if ties not in TIES:
    raise ValueError(f"ties={ties!r}; expected one of {TIES}")
  return ties == "expected"


def _scorable_only(examples, votes, key, ties="random", correct=None) -> tuple[list[PreferenceExample], np.ndarray,
                                                                                 Metrics]:
  """(examples kept, their correctness, counts) for the pick-the-best accuracies: see the module docstring.

  `correct`: per-example (correctness [N], scorable [N]) computed beforehand (`bootstrap_official` averages it over
  vote tables), used instead of `votes`.
  """
  if correct is None:
    correct, scorable = example_correct(examples, votes, key, expected=_expected(ties))
  else:
    correct, scorable = (np.asarray(a) for a in correct)
  single = np.array([ex.n == 1 for ex in examples], bool)
  keep = scorable & ~single
  kept = [ex for ex, ok in zip(examples, keep, strict=True) if ok]
  counts: Metrics = {"n": float(len(kept)), "n_excluded": float(np.sum(~scorable & ~single))}
  if single.any():
    counts["n_single_excluded"] = float(single.sum())
  return kept, correct[keep], counts


# --------------------------------------------------------------------------------------------------
# Benchmarks.


def rewardbench(examples: Sequence[PreferenceExample], votes: Any, key: jax.Array | None, ties: str = "random",
                correct: Any = None) -> Metrics:
  """RewardBench v1 scores; see the module docstring."""
  examples, correct, counts = _scorable_only(examples, votes, key, ties, correct)
  subsets = _group_mean(correct, [_subset_name(ex) for ex in examples])
  section_of: dict[str, str | None] = {}
  for ex in examples:
    name = _subset_name(ex)
    # A subset outside the official map keeps its reader's section (e.g. a custom file's domain column).
    section_of[name] = None if name in REWARDBENCH_UNSECTIONED else REWARDBENCH_SECTIONS.get(name, ex.category)
  out: Metrics = dict(counts)
  by_section: dict[str, list[str]] = defaultdict(list)
  for s in sorted(subsets):
    out[f"subset/{s}"] = subsets[s][0]
    out[f"n/{s}"] = float(subsets[s][1])
    if section_of[s] is not None:
      by_section[section_of[s]].append(s)
  hep_total = sum(subsets[s][1] for s in subsets if s.startswith("hep-"))
  for section, names in by_section.items():
    accs = np.array([subsets[s][0] for s in names])
    if section == "Prior Sets":  # official: the plain mean of the four subsets, not example-weighted
      weights = np.ones(len(names))
    else:
      weights = np.array(
        [float(hep_total or subsets[s][1]) if s == "math-prm" else float(subsets[s][1]) for s in names]
      )
    out[f"section/{section}"] = float(np.sum(weights * accs) / np.sum(weights))
  present = [s for s in REWARDBENCH_MAIN if f"section/{s}" in out]
  out["overall"] = float(np.mean([out[f"section/{s}"] for s in present])) if present else float("nan")
  out["n_sections"] = float(len(present))
  return out


def rmb(examples: Sequence[PreferenceExample], votes: Any, key: jax.Array | None, ties: str = "random",
        correct: Any = None) -> Metrics:
  """RMB scores; see the module docstring."""
  examples, correct, counts = _scorable_only(examples, votes, key, ties, correct)
  scenarios = _group_mean(correct, [ex.source for ex in examples])
  part_of = {ex.source: ex.category for ex in examples}
  micro = _group_mean(correct, [ex.category for ex in examples])
  out: Metrics = dict(counts)
  by_part: dict[str, list[float]] = defaultdict(list)
  for src, (acc, _) in scenarios.items():
    by_part[part_of[src]].append(acc)
  for part in sorted(by_part):
    out[part] = float(np.mean(by_part[part]))
    out[f"micro/{part}"] = micro[part][0]
    out[f"n/{part}"] = float(micro[part][1])
    out[f"n_scenarios/{part}"] = float(len(by_part[part]))
  present = [p for p in RMB_PARTS if p in out] or sorted(by_part)
  out["overall"] = float(np.mean([out[p] for p in present]))
  out["n_parts"] = float(len(present))
  return out


def _rm_bench_cells(examples, votes) -> tuple[list[PreferenceExample], list[np.ndarray]]:
  """Expands 6-response parents into their 9 pair examples and pair votes; pairs pass through."""
  pairs, pair_votes = [], []
  for i, ex in enumerate(examples):
    row = np.asarray(votes[i], np.float64).reshape(-1)
    if "level" in ex.metadata:
      pairs.append(ex)
      pair_votes.append(row[:2])
      continue
    if row.shape[0] != ex.n:
      raise ValueError(f"example {i} ({ex.source}/{ex.id}) has {ex.n} responses but {row.shape[0]} scores")
    k = ex.metadata.get("num_chosen")
    for p in rm_bench_pairs(ex):
      ci, rj = p.metadata["chosen_style"], p.metadata["rejected_style"]
      pairs.append(p)
      pair_votes.append(np.array([row[ci], row[k + rj]]))
  return pairs, pair_votes


def rm_bench(examples: Sequence[PreferenceExample], votes: Any, key: jax.Array | None = None,
             ties: str = "random") -> Metrics:
  """RM-Bench scores; see the module docstring. Strict in either `ties` mode (its official rule)."""
  _expected(ties)
  if isinstance(votes, np.ndarray | jax.Array):
    votes = np.asarray(votes)
  if len(votes) != len(examples):
    raise ValueError(f"{len(votes)} vote rows for {len(examples)} examples")
  del key  # strict comparison: no tie-break to draw
  pairs, pair_votes = _rm_bench_cells(examples, votes)
  v, r, m = pad(pairs, pair_votes)
  correct = np.asarray(rules.is_correct(v, True, r, m))  # Eq. 10's strict rule = RM-Bench's chosen > rejected
  cells = _group_mean(
    correct, [f"{p.category}|{p.metadata['chosen_style']}|{p.metadata['rejected_style']}" for p in pairs]
  )
  domains = sorted({p.category for p in pairs})
  out: Metrics = {"n_pairs": float(len(pairs))}
  for d in domains:
    by_level: dict[str, list[float]] = defaultdict(list)
    n_prompts = 0
    for name, (acc, count) in cells.items():
      dom, i, j = name.split("|")
      if dom == d:
        by_level[rm_bench_level(int(i), int(j))].append(acc)
        n_prompts = max(n_prompts, count)
    for level in RM_BENCH_LEVELS:
      if by_level[level]:
        out[f"{d}/{level}"] = float(np.mean(by_level[level]))
    out[d] = float(np.mean([out[f"{d}/{lv}"] for lv in RM_BENCH_LEVELS if f"{d}/{lv}" in out]))
    out[f"n/{d}"] = float(n_prompts)
  for level in RM_BENCH_LEVELS:
    vals = [out[f"{d}/{level}"] for d in domains if f"{d}/{level}" in out]
    if vals:
      out[level] = float(np.mean(vals))
  out["overall"] = float(np.mean([out[d] for d in domains]))
  out["n_domains"] = float(len(domains))
  return out


def realmistake(examples: Sequence[PreferenceExample], votes: Any, key: jax.Array | None = None,
                ties: str = "random") -> Metrics:
  """ReaLMistake ROC-AUC; see the module docstring. `key` is unused and `ties` changes nothing (AUC counts a tie
  1/2, already its expectation). `votes` must be comparable across items: for a GRM the mean of each item's valid
  samples, 5.5 when none parsed (`grm.item_votes`, as the eval stage scores every column), not `grm.vote`'s sums,
  which would rank an item with fewer parsed samples as the likelier error."""
  del key
  _expected(ties)
  v, _, m = pad(examples, votes)
  if not np.all(m[:, 0]) or m.shape[1] != 1:
    raise ValueError("ReaLMistake examples have exactly one response")
  error_score = -v[:, 0]
  labels = np.array([_error_label(ex) for ex in examples])
  out: Metrics = {"auc": roc_auc(labels, error_score), "n": float(len(examples)), "n_error": float(labels.sum())}
  tasks = sorted({ex.category for ex in examples})
  task_aucs = []
  for t in tasks:
    sel = np.array([ex.category == t for ex in examples])
    out[f"auc/{t}"] = roc_auc(labels[sel], error_score[sel])
    out[f"n/{t}"] = float(sel.sum())
    task_aucs.append(out[f"auc/{t}"])
  out["auc_task_mean"] = float(np.mean(task_aucs))
  return out


def _error_label(ex: PreferenceExample) -> int:
  label = ex.metadata.get("label")
  if label in (0, 1):
    return int(label)
  return int(ex.rewards[0] == 0.0)  # reward 0.0 = error


def ppe(examples: Sequence[PreferenceExample], votes: Any, key: jax.Array | None, ties: str = "random",
        correct: Any = None) -> Metrics:
  """PPE accuracy; see the module docstring."""
  examples, correct, counts = _scorable_only(examples, votes, key, ties, correct)
  out: Metrics = dict(counts)
  is_pref = np.array([ex.category == "PPE Preference" for ex in examples], bool)
  if is_pref.any():
    out["preference"] = float(correct[is_pref].mean())
    out["n/preference"] = float(is_pref.sum())
  corr = [ex for ex, p in zip(examples, is_pref, strict=True) if not p]
  if corr:
    subsets = _group_mean(correct[~is_pref], [_subset_name(ex) for ex in corr])
    for s, (acc, count) in sorted(subsets.items()):
      out[f"correctness/{s}"] = acc
      out[f"n/{s}"] = float(count)
    out["correctness"] = float(np.mean([acc for acc, _ in subsets.values()]))
    out["n_correctness_subsets"] = float(len(subsets))
  return out


def accuracy(examples: Sequence[PreferenceExample], votes: Any, key: jax.Array | None, ties: str = "random",
             correct: Any = None) -> Metrics:
  """Plain accuracy over examples with n >= 2 and a unique best (any other data set)."""
  _, correct, counts = _scorable_only(examples, votes, key, ties, correct)
  return {"accuracy": float(correct.mean()) if correct.size else float("nan"), **counts}


_BENCHMARKS = {
  "rewardbench": rewardbench,
  "rmb": rmb,
  "rm-bench": rm_bench,
  "realmistake": realmistake,
  "ppe": ppe,
  "accuracy": accuracy,
}
_ALIASES = {
  "reward-bench": "rewardbench",
  "reward_bench": "rewardbench",
  "rmb_bon": "rmb",
  "rmb-bon": "rmb",
  "rmb_pairwise": "rmb",
  "rmb-pairwise": "rmb",
  "rm_bench": "rm-bench",
  "rmbench": "rm-bench",
}


def benchmark_names() -> tuple[str, ...]:
  return tuple(_BENCHMARKS)


OFFICIAL_METRIC = {
  "rewardbench": ("overall",),
  "rmb": ("overall",),
  "rm-bench": ("overall",),
  "realmistake": ("auc",),
  "ppe": ("preference", "correctness"),
  "accuracy": ("accuracy",),
}
"""Benchmark -> its headline metric(s): the first one present is the data set's official metric (PPE: the preference
set if loaded, else correctness); every one present gets a tie-expected value and an interval (`interval_metrics`:
PPE's two are both columns of the paper's Table 2)."""


def benchmark_of(dataset: str) -> str:
  """The `score_benchmark` name for a data set name: its own benchmark, or "accuracy" for any other data."""
  base = dataset.split(":", 1)[0].lower()
  base = _ALIASES.get(base, base)
  return base if base in _BENCHMARKS else "accuracy"


def official_metric(bench: str, values: Mapping[str, float]) -> str:
  """The headline metric of `bench` among the computed `values` (`OFFICIAL_METRIC`)."""
  for name in OFFICIAL_METRIC.get(bench, ()):
    if name in values:
      return name
  raise KeyError(f"benchmark {bench!r}: none of its official metrics {OFFICIAL_METRIC.get(bench)} was computed")


def interval_metrics(bench: str, values: Mapping[str, float]) -> tuple[str, ...]:
  """The metrics of `bench` among the computed `values` that get a tie-expected value and a 95% interval: every
  headline metric present (`OFFICIAL_METRIC`), the official one first."""
  names = tuple(name for name in OFFICIAL_METRIC.get(bench, ()) if name in values)
  if not names:
    raise KeyError(f"benchmark {bench!r}: none of its official metrics {OFFICIAL_METRIC.get(bench)} was computed")
  return names


def _canonical(name: str) -> str:
  base = name.split(":", 1)[0].lower()
  base = _ALIASES.get(base, base)
  if base not in _BENCHMARKS:
    raise ValueError(f"no metric for {name!r}; expected one of {benchmark_names()}")
  return base


def score_benchmark(
  name: str, examples: Sequence[PreferenceExample], votes: Any, key: jax.Array | None, ties: str = "random"
) -> Metrics:
  """The official metrics of benchmark `name` (a `load_dataset` name, part before ':') as {metric: value}.

  Args:
    name: rewardbench, rmb (rmb_bon, rmb_pairwise), rm-bench, realmistake, ppe, or "accuracy" for any other set.
    examples: the examples, as read by `grm_jax.data`.
    votes: predicted scores per example in original response order: [n_i] arrays or an [N, n_max] array.
    key: PRNG key for the random tie-break of argmax decisions (unused, may be None, with ties="expected").
    ties: "random" (the paper's rule, drawn with `key`) or "expected" (its exact expectation; module docstring).
  """
  return _BENCHMARKS[_canonical(name)](examples, votes, key, ties)


LINEAR_BENCHMARKS = ("rewardbench", "rmb", "ppe", "accuracy")
"""The pick-the-best benchmarks: for a fixed set of examples, each metric is a fixed weighted mean of per-example
correctness (the weights depend on the examples only), so a mean over vote tables is the metric of the per-example
mean correctness."""


def _vote_rows(examples: Sequence[PreferenceExample], votes: Any) -> list[np.ndarray]:
  """Per-example rows [n_i] from [n_i] arrays or a padded [N, >= n_max] array (for resampling by index)."""
  if isinstance(votes, np.ndarray | jax.Array) and np.ndim(votes) == 2:
    votes = np.asarray(votes, np.float64)
    return [votes[i, : ex.n] for i, ex in enumerate(examples)]
  if len(votes) != len(examples):
    raise ValueError(f"{len(votes)} vote rows for {len(examples)} examples")
  return [np.asarray(v, np.float64).reshape(-1) for v in votes]


def bootstrap_official(
  name: str, examples: Sequence[PreferenceExample], vote_tables: Sequence[Any], metric: str, seed: int,
  resamples: int = 1000, confidence: float = 0.95,
) -> tuple[float, float]:
  """(lo, hi) percentile bootstrap over items (`stats.bootstrap_interval`) of the tie-expected `metric`, averaged
  over `vote_tables` (one table of votes per example for a single column; the random k-subsets of a scaling point).

  Items are resampled, never responses or samples within an item: the items are the random draw whose variation the
  interval describes. Every table is scored on the same resampled items. For `LINEAR_BENCHMARKS` the per-example
  expected correctness is averaged over the tables once and each resample aggregates it (exact by linearity, one
  aggregation per resample); RM-Bench (strict cells of a 6-response item) and ReaLMistake (ROC-AUC, not linear)
  are rescored per table and resample, len(vote_tables) times the work.
  """
  base = _canonical(name)
  examples = list(examples)
  tables = [_vote_rows(examples, v) for v in vote_tables]
  if not tables:
    raise ValueError("no vote table to bootstrap")
  if base in LINEAR_BENCHMARKS:
    per_table = [example_correct(examples, rows, None, expected=True) for rows in tables]
    mean_correct = np.mean([c for c, _ in per_table], axis=0)
    scorable = per_table[0][1]
    aggregate = _BENCHMARKS[base]

    def statistic(idx: np.ndarray) -> float:
      # A resample can lack a part the metric averages (PPE's preference pairs): not finite, dropped.
      return aggregate([examples[i] for i in idx], None, None, "expected", (mean_correct[idx], scorable[idx])).get(
        metric, float("nan"))
  else:

    def statistic(idx: np.ndarray) -> float:
      chosen = [examples[i] for i in idx]
      values = [score_benchmark(base, chosen, [rows[i] for i in idx], None, "expected").get(metric, float("nan"))
                for rows in tables]
      return float(np.mean(values))

  return stats.bootstrap_interval(statistic, len(examples), seed, resamples, confidence)


def item_outcomes(examples: Sequence[PreferenceExample], vote_tables: Sequence[Any]) -> list[float | None]:
  """Each example's tie-expected correctness (`example_correct`, expected=True), averaged over `vote_tables` (one
  table for a column, the random k-subsets of a scaling point); None where the truth has no unique best.

  On accuracy-type data their mean is the column's `<metric>_expected`; kept per item so that two columns, or two
  runs on the same items, can be compared item by item (`eval.claims`'s paired bootstrap)."""
  examples = list(examples)
  tables = [_vote_rows(examples, v) for v in vote_tables]
  if not tables:
    raise ValueError("no vote table to score")
  per_table = [example_correct(examples, rows, None, expected=True) for rows in tables]
  mean = np.mean([c for c, _ in per_table], axis=0)
  return [round(float(x), 6) if ok else None for x, ok in zip(mean, per_table[0][1], strict=True)]


def official_with_interval(
  name: str, examples: Sequence[PreferenceExample], votes: Any, metric: str, seed: int, resamples: int = 1000,
) -> dict[str, Any]:
  """{"<metric>_expected": the tie-expected value, "<metric>_ci95": [lo, hi] (when resamples > 0)}: the keys one
  column of results.json adds beside its metrics (`bootstrap_official` at 95%)."""
  out: dict[str, Any] = {f"{metric}_expected": score_benchmark(name, examples, votes, None, "expected")[metric]}
  if resamples > 0:
    out[f"{metric}_ci95"] = list(bootstrap_official(name, examples, [votes], metric, seed, resamples))
  return out
