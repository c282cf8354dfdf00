"""The evaluation report: what a person reads (Markdown, PNG plots) and what a program reads (JSON, JSONL).

`write_report(out_dir, results, judged)` writes, from the results dict built by `grm_jax.stages.eval`:

- `results.json`: every number (config, per-dataset official metrics at k=1 / Voting@k_max / MetaRM@k_max, and with a
  judge template TokenProb@k_max under `metrics["token_prob"]` with its counts under "token_prob"; the
  scaling table, parse failures, throughput, position bias, and under "paper" the run in the paper's Table 2
  columns with its Overall, `eval.paper`). Non-finite floats are written as null (strict JSON).
- `report.md`: the same numbers as tables, with the definitions needed to read them. Each official value is shown as
  "value (lo–hi)": the value with the paper's random tie-break, and the 95% percentile bootstrap interval over items
  of the tie-expected official metric (`eval.metrics.official_with_interval`), the one interval kind of the report.
- `scaling.png`: Voting@k and MetaRM@k (when present) against k on a log2 axis, one line per dataset and column,
  with its 95% bootstrap interval over items as a band (± one standard deviation over subsets for results without
  intervals).
- `position_bias.png`: how often the judge's top score lands on each shown position, against the 1/n of a
  position-blind judge.
- `judgements.jsonl` (when `judged` is given): one line per item with, per sample, the judgement text, the
  permutation shown, the parsed scores (original response order) and whether they parsed, the raw material for
  meta-RM training. ReaLMistake texts are never written (the data set must stay encrypted at rest; a judgement
  may quote the response), so for examples whose `source` starts with "realmistake" `text` is null.

Position bias (`position_bias`): for each valid sample whose scores have a unique maximum over the item's real
responses ("decisive"), record the position at which that response was shown (`perms[b, j, p]` is the original
index shown as "Response p+1"). Because `judge` shuffles the responses independently per sample, the true best
response is shown at every position equally often, so a judge that ignores position picks each position at rate
1/n (50% first for n = 2) whatever its accuracy; a judge that always scores the first-shown response highest
gives 100%. Samples with a tied top score are counted separately ("ties") and left out of the rates.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grm_jax import files
from grm_jax.data.example import PreferenceExample
from grm_jax.eval import paper
from grm_jax.judges.model_judge import Judgements

WITHHELD_SOURCES = ("realmistake",)
"""Sources whose texts never go to disk in plain text (the benchmark is distributed encrypted)."""


# --------------------------------------------------------------------------------------------------
# Numbers from judgements.


def position_bias(scores: Any, valid: Any, perms: Any, response_mask: Any) -> dict[str, dict[str, Any]]:
  """Where the top-scored response was shown, per number of responses n >= 2 (see the module docstring).

  Args:
    scores: [B, k, n_max] scores in original order; valid: [B, k]; perms: [B, k, n_max] (shown position p ->
      original index); response_mask: [B, n_max].

  Returns:
    {"n=<n>": {"n", "items", "samples" (valid), "decisive", "ties", "counts" [n] (decisive samples whose top
    response was shown at position p), "rates" [n] (counts / decisive, NaN if none), "expected" (1/n),
    "first_rate" (rates[0])}} for each n present among the items; n = 1 items have no position and are skipped.
  """
  scores = np.asarray(scores)
  valid = np.asarray(valid, bool)
  perms = np.asarray(perms)
  mask = np.asarray(response_mask, bool)
  ns = mask.sum(-1)
  out: dict[str, dict[str, Any]] = {}
  for n in sorted({int(x) for x in ns if x >= 2}):
    items = np.flatnonzero(ns == n)
    s = scores[items][:, :, :n].astype(np.float64)  # [I, k, n] original order
    v = valid[items]
    p = perms[items][:, :, :n]
    shown = np.take_along_axis(s, p, axis=-1)  # [I, k, n] in shown order
    top = shown.max(-1, keepdims=True)
    unique = (shown == top).sum(-1) == 1
    decisive = v & unique
    pos = shown.argmax(-1)
    counts = np.array([int(np.sum(decisive & (pos == q))) for q in range(n)])
    total = int(decisive.sum())
    rates = counts / total if total else np.full(n, np.nan)
    out[f"n={n}"] = {
      "n": n,
      "items": len(items),
      "samples": int(v.sum()),
      "decisive": total,
      "ties": int(np.sum(v & ~unique)),
      "counts": counts.tolist(),
      "rates": [float(r) for r in rates],
      "expected": 1.0 / n,
      "first_rate": float(rates[0]),
    }
  return out


def judgement_stats(j: Judgements) -> dict[str, Any]:
  """Parse failures, throughput and position bias of one `judge` call, as plain JSON values."""
  generated = int(np.asarray(j.generated_tokens).sum())
  return {
    "parse_failures": {
      "invalid": j.num_invalid,
      "samples": int(np.asarray(j.valid).size),
      "rate": float(j.parse_failure_rate),
    },
    "throughput": {
      "items": j.num_items,
      "samples": int(np.asarray(j.valid).size),
      "generated_tokens": generated,
      "sampler_seconds": float(j.sampler_seconds),
      "total_seconds": float(j.total_seconds),
      "items_per_s": float(j.items_per_second),
      "tokens_per_s": float(j.tokens_per_second),
      "stopped_rate": float(np.asarray(j.stopped).mean()) if np.asarray(j.stopped).size else float("nan"),
    },
    "position_bias": position_bias(j.scores, j.valid, j.perms, j.response_mask),
  }


# --------------------------------------------------------------------------------------------------
# Files.


jsonable = files.jsonable


def write_judgements(
  path: str | os.PathLike,
  judged: Mapping[str, tuple[Sequence[PreferenceExample], Judgements]],
  metas: Mapping[str, Any] | None = None,
) -> int:
  """Writes one JSON line per item (see the module docstring), with each sample's meta-RM logit ("meta") when
  `metas[dataset]` [B, k] is given; returns the number of lines."""
  rows = []
  for dataset, (examples, j) in judged.items():
    meta = None if metas is None or metas.get(dataset) is None else np.asarray(metas[dataset], np.float64)
    for b, ex in enumerate(examples):
      withhold = ex.source.lower().startswith(WITHHELD_SOURCES)
      n = ex.n
      samples = []
      for s in range(j.k):
        samples.append(
          {
            "text": None if withhold else j.texts[b][s],
            "perm": [int(i) for i in j.perms[b, s, :n]],
            "scores": [int(x) for x in j.scores[b, s, :n]],
            "valid": bool(j.valid[b, s]),
            "generated_tokens": int(j.generated_tokens[b, s]),
            "stopped": bool(j.stopped[b, s]),
            **({"meta": float(meta[b, s])} if meta is not None else {}),
          }
        )
      row = {
        "dataset": dataset,
        "source": ex.source,
        "category": ex.category,
        "id": ex.id,
        "n": n,
        "rewards": list(ex.rewards) if ex.rewards is not None else None,
        "best": ex.best,
        "template": j.templates[b],
        "text_withheld": withhold,
        "samples": samples,
      }
      rows.append(row)
  return files.write_jsonl(path, rows)


def _fmt(x: Any, pct: bool = True) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  if isinstance(x, float):
    return f"{100 * x:.1f}" if pct else f"{x:.3g}"
  return str(x)


def _range(ci: Any) -> str | None:
  """"lo–hi" in percent, or None for a missing or undefined interval."""
  if not ci or len(ci) != 2 or any(x is None or not math.isfinite(x) for x in ci):
    return None
  return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def _ci(value: Any, ci: Any) -> str:
  """"value (lo–hi)" in percent, or the value alone when there is no interval."""
  interval = _range(ci)
  return f"{_fmt(value)} ({interval})" if interval else _fmt(value)


INTERVAL_NOTE = (
  "*value (lo–hi)*: the official metric with argmax ties broken by one random draw (the paper's rule), and the 95% "
  "percentile bootstrap interval over items (Efron 1979; {resamples} resamples of the items, the same resampled "
  "items for every column) of the *tie-expected* metric, which scores an argmax tie among m responses that includes "
  "the true best as 1/m, the exact mean over all tie-break draws (a judge that never parses scores exactly 50% on "
  "pairs instead of a coin-flip total). RM-Bench counts ties wrong and ReaLMistake's AUC counts them 1/2 in both."
)


def _metric_is_fraction(name: str) -> bool:
  """Metric values are fractions except the counts, under "n", "n_*" and "n/*" (`eval.metrics`)."""
  return not (name == "n" or name.startswith(("n_", "n/")))


def render_markdown(results: Mapping[str, Any]) -> str:
  """The report a person reads, from the results dict (`results.json` content).

  Keys that `stages.eval` always writes are indexed directly. `.get` marks what may be missing: the run's
  settings and facts (config entries, devices, seconds, policy, baselines, paper, skipped data sets) that a results
  dict built by hand, as the tests build it, may leave out, and the parts that exist only with a meta RM, a judge
  template or bootstrap intervals.
  """
  datasets = results["datasets"]
  lines = _header(results)
  lines += _judge_template_note(results)
  for name, why in (results.get("skipped_datasets") or {}).items():
    lines += [f"**Skipped** `{name}`: {why}.", ""]
  for base in _baselines(results):
    lines += _before_after(base, results)
  lines += paper.render(results.get("paper"))
  lines += ["## Official metrics", ""]
  for name, d in datasets.items():
    lines += _dataset_metrics(name, d)
  lines += _scaling_section(datasets)
  lines += _throughput_section(results)
  lines += _position_bias_section(datasets)
  return "\n".join(lines)


def _header(results: Mapping[str, Any]) -> list[str]:
  """The run at a glance (model, data sets, sampling settings, meta RM, devices) and how to read the metrics."""
  cfg = results["config"]
  ev = cfg.get("eval", {})  # config entries are shown as None where a hand-built results dict leaves them out
  resamples = ev.get("bootstrap_resamples", "–")
  sampling = ev.get("sampling", ev)  # results written before the `eval.sampling` group kept these keys in `eval`
  return [
    "# GRM evaluation report",
    "",
    f"- **Model**: `{results['model']}` (dtype {cfg.get('model', {}).get('dtype', '?')})",
    f"- **Datasets**: {', '.join(results['datasets']) or '–'}",
    f"- **Sampling**: k = {sampling.get('k')} samples per item, temperature {sampling.get('temperature')}, "
    f"top_p {sampling.get('top_p')}, max_new_tokens {sampling.get('max_new_tokens')}, seed {cfg.get('seed')}",
    f"- **Items per dataset**: {ev.get('limit') or 'all'}; scaling points average {ev.get('num_subsets')} random "
    "k-subsets of the one pool of k_max samples",
    f"- **Meta RM**: {ev.get('meta_model') or 'none (voting only)'}",
    f"- **Devices**: {results.get('devices', '?')}; wall time {_fmt(results.get('seconds'), pct=False)} s",
    "",
    "Metrics are percentages (ReaLMistake: ROC-AUC × 100). *k=1* scores the first sample of each item alone; "
    "*Voting@k* sums the valid scores of all k samples (paper §4, Eq. 14); *MetaRM@k* sums only the top ⌈k/2⌉ by "
    "meta reward. Argmax ties are broken at random.",
    "",
    (INTERVAL_NOTE.format(resamples=resamples) if resamples != 0
     else "No intervals: `eval.bootstrap_resamples` = 0."),
    "",
  ]


def _judge_template_note(results: Mapping[str, Any]) -> list[str]:
  """How to read Voting@k and TokenProb@k when some data set was judged with a judge template (which writes
  "token_prob" into its metrics); nothing otherwise."""
  if not any("token_prob" in d["metrics"] for d in results["datasets"].values()):
    return []
  template = results["config"].get("grm", {}).get("template")
  return [
    f"Judge template `{template}` (the paper's LLM-as-a-Judge baseline): each sample names the best response, so "
    "*Voting@k* is the majority vote over the chosen index (paper Eq. 13), and *TokenProb@k* weights each vote by "
    "the model's probability (temperature 1) of the index token it wrote in its final `\\boxed{}` (paper Tables "
    "3/6, \"w/ TokenProb\"). Items with one response have no best-of question for the judge and are left out.",
    "",
  ]


def _baselines(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
  """The before / after comparisons: "baselines", or the lone "baseline" of results that predate that list."""
  return results.get("baselines") or [b for b in [results.get("baseline")] if b]


def _official_interval(column: Mapping[str, Any], metric: str) -> Any:
  """The official metric's 95% interval in one column's metrics; absent when `eval.bootstrap_resamples` = 0."""
  return column.get(f"{metric}_ci95")


def _before_after(base: Mapping[str, Any], results: Mapping[str, Any]) -> list[str]:
  """One baseline's table: k=1, Voting@k and parse failures of its params beside the judged policy's."""
  lines = [
    f"## Before vs after: `{base['policy']}` params vs `{results['policy']}` params",
    "",
    "| dataset | metric | k=1 before | k=1 after | Voting@k before | Voting@k after | parse failures before | "
    "after |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for name, before in base["datasets"].items():
    after = results["datasets"][name]
    metric = before["official_metric"]
    was, now = before["metrics"], after["metrics"]
    lines.append(
      f"| {name} | {metric} | {_ci(before['k1'], _official_interval(was['k1'], metric))} | "
      f"{_ci(now['k1'][metric], _official_interval(now['k1'], metric))} | "
      f"{_ci(before['voting'], _official_interval(was['voting'], metric))} | "
      f"{_ci(now['voting'][metric], _official_interval(now['voting'], metric))} | "
      f"{_fmt(before['parse_failure_rate'])} | {_fmt(after['parse_failures']['rate'])} |"
    )
  lines.append("")
  return lines


def _metric_columns(d: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
  """(header, metrics) of a data set's columns: k=1, Voting@k_max and, where present, TokenProb@k_max (judge
  templates only) and MetaRM@k_max ("meta" is None without a meta RM)."""
  k_max, metrics = d["k"], d["metrics"]
  cols = [("k=1", metrics["k1"]), (f"Voting@{k_max}", metrics["voting"])]
  if metrics.get("token_prob"):
    cols.append((f"TokenProb@{k_max}", metrics["token_prob"]))
  if metrics["meta"]:
    cols.append((f"MetaRM@{k_max}", metrics["meta"]))
  return cols


def _metric_rows(cols: Sequence[tuple[str, Mapping[str, Any]]], official: str) -> list[str]:
  """One row per metric, the official one first (in bold, as "value (lo–hi)", then its tie-expected row), then the
  fractions and the counts, each group by name. Another headline metric with an interval (PPE's correctness) is
  shown the same way, not in bold."""
  # A metric's tie-expected value and interval are shown with it, not as rows of their own.
  first = cols[1][1] or cols[0][1]
  banded = {m for m in first if f"{m}_expected" in first or f"{m}_ci95" in first}
  keys = [m for m in first if not any(m in (f"{b}_expected", f"{b}_ci95") for b in banded)]
  keys.sort(key=lambda m: (m != official, not _metric_is_fraction(m), m))
  lines = []
  for m in keys:
    expected, interval = f"{m}_expected", f"{m}_ci95"
    # Cells use .get: the interval and tie-expected value are optional, and a column missing a metric shows "–".
    if m in banded:
      cells = [_ci(c.get(m), c.get(interval)) for _, c in cols]
    else:
      cells = [_fmt(c.get(m), pct=_metric_is_fraction(m)) for _, c in cols]
    label = f"**{m}**" if m == official else m
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if m in banded and any(expected in c for _, c in cols):
      lines.append(f"| {m}, tie-expected | " + " | ".join(_fmt(c.get(expected)) for _, c in cols) + " |")
  return lines


def _token_prob_note(d: Mapping[str, Any]) -> list[str]:
  """How many samples' index token TokenProb found; only data sets judged with a judge template have "token_prob"."""
  tp = d.get("token_prob")
  if not tp:
    return []
  skipped = d["judge_skipped_single"]
  return [
    f"TokenProb: the index token was found in {tp['located']} of {tp['valid']} valid samples (mean "
    f"probability {_fmt(tp['mean_prob'], pct=False)}; a sample whose token is not found votes 0)"
    + (f"; {skipped} single-response items left out." if skipped else "."),
    "",
  ]


def _meta_rm_sentence(mi: Mapping[str, Any], k_max: int) -> str:
  """What the meta RM keeps and how well its logit separates right from wrong judgements. The numbers that need
  labels ("checked", "auc", "accuracy", "positives", "single_excluded", `eval.meta_stats`) exist only when every item
  has rewards, so they are read with .get."""
  checked = mi.get("checked", mi.get("scored"))
  excluded = (f" ({mi['single_excluded']} single-response items, {mi['single_excluded_samples']} samples, "
              "left out: a 1-10 score is not a 0/1 label)" if mi.get("single_excluded") else "")
  auc_se = mi.get("auc_se")
  return (
    f"Meta RM on this data set: keeps the top k_meta = {mi['k_meta']} of {k_max} samples; on the "
    f"{checked} valid samples with a checkable label{excluded} its logit separates right from wrong judgements "
    f"(Eq. 10) with ROC-AUC {_fmt(mi.get('auc'))}"
    + (f" ± {_fmt(auc_se)} (standard error, Hanley & McNeil 1982)" if auc_se is not None else "")
    + f" and accuracy {_fmt(mi.get('accuracy'))} "
    f"({mi.get('positives', '–')} right)."
  )


def _meta_rm_note(d: Mapping[str, Any]) -> list[str]:
  """The meta RM's sentence and its k_meta ablation; nothing without a meta RM ("meta_rm" None, or left out of a
  hand-built results dict)."""
  mi = d.get("meta_rm")
  if not mi:
    return []
  k_max, official = d["k"], d["official_metric"]
  lines = [_meta_rm_sentence(mi, k_max)]
  by = mi.get("by_k_meta")  # written by `stages.eval`; hand-built results may leave it out
  if by:
    lines.append("")
    lines.append(f"MetaRM@{k_max} by k_meta (tie-expected {official}; k_meta = {k_max} is Voting@{k_max}, the "
                 "paper's Table 7 ablation): " + ", ".join(f"{m}: {_fmt(v)}" for m, v in by.items()) + ".")
  lines.append("")
  return lines


def _dataset_metrics(name: str, d: Mapping[str, Any]) -> list[str]:
  """One data set's subsection of "Official metrics": its table of columns, then the TokenProb and meta RM notes."""
  cols = _metric_columns(d)
  official = d["official_metric"]
  lines = [
    f"### {name}  (benchmark `{d['benchmark']}`, official metric `{official}`, {d['num_items']} items)",
    "",
    "| metric | " + " | ".join(c for c, _ in cols) + " |",
    "|---|" + "---|" * len(cols),
  ]
  lines += _metric_rows(cols, official)
  lines += _token_prob_note(d)
  lines += _meta_rm_note(d)
  lines.append("")
  return lines


def _scaling_row(name: str, row: Mapping[str, Any], columns: Sequence[str]) -> str:
  """One scaling point. Read with .get: "meta*" exists only with a meta RM (the table has the MetaRM columns when
  any data set has them) and "*_expected" / "*_ci95" only in rows with bootstrap bands."""
  cells = [name, str(row["k"])]
  for col in columns:
    cells += [_fmt(row.get(col)), _fmt(row.get(f"{col}_std")), _fmt(row.get(f"{col}_expected")),
              _range(row.get(f"{col}_ci95")) or "–"]
  return "| " + " | ".join(cells) + " |"


def _scaling_section(datasets: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """"Inference-time scaling": Voting@k (and MetaRM@k) at each k of every data set, and the plot."""
  lines = [
    "## Inference-time scaling",
    "",
    "Each point is the mean over random k-subsets of the pool; *± std* is the spread over those subsets (which "
    "samples, which tie-break: Monte-Carlo noise that more subsets average away), *95% CI* the percentile bootstrap "
    "interval over items of the point's tie-expected value (*tie-exp.*), every subset scored on each resampled item "
    "set: the uncertainty that another draw of items would show, which more subsets do not shrink.",
    "",
  ]
  has_meta = any("meta" in row for d in datasets.values() for row in d["scaling"])
  columns = ("voting", "meta") if has_meta else ("voting",)
  part = " {0} | ± std | tie-exp. | 95% CI |"
  header = "| dataset | k |" + part.format("Voting@k") + (part.format("MetaRM@k") if has_meta else "")
  lines += [header, "|---|---|" + "---|---|---|---|" * len(columns)]
  for name, d in datasets.items():
    lines += [_scaling_row(name, row, columns) for row in d["scaling"]]
  lines += ["", "![scaling](scaling.png)", ""]
  return lines


def _throughput_section(results: Mapping[str, Any]) -> list[str]:
  """"Parse failures and throughput": one row per data set, and the totals row when there are several."""
  datasets = results["datasets"]
  lines = [
    "## Parse failures and throughput",
    "",
    "Throughput counts sampler wall time only (compilation on a first call included); a sample that cannot be "
    "parsed votes nothing.",
    "",
    "| dataset | samples | parse failures | rate % | items/s | generated tok/s | stopped % | sampler s |",
    "|---|---|---|---|---|---|---|---|",
  ]
  rows = list(datasets.items())
  if "totals" in results and len(datasets) > 1:
    rows.append(("**all**", results["totals"]))
  for name, d in rows:
    pf, tp = d["parse_failures"], d["throughput"]
    lines.append(
      f"| {name} | {pf['samples']} | {pf['invalid']} | {_fmt(pf['rate'])} | {_fmt(tp['items_per_s'], pct=False)} | "
      f"{_fmt(tp['tokens_per_s'], pct=False)} | {_fmt(tp['stopped_rate'])} | "
      f"{_fmt(tp['sampler_seconds'], pct=False)} |"
    )
  return lines


def _position_bias_section(datasets: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """"Position bias": per data set and number of responses n, where the top-scored response was shown."""
  lines = [
    "",
    "## Position bias",
    "",
    "For every valid sample whose top score is unique (*decisive*), the position at which that response was "
    "shown. The responses are shuffled independently per sample, so the truly best response appears at each "
    "position equally often: a judge blind to position picks each of n positions 1/n of the time (50% first "
    "for pairs) whatever its accuracy; a judge that always prefers the first-shown response gives 100% first. "
    "Samples with a tied top score are counted as ties and left out of the rates.",
    "",
    "| dataset | n | decisive | ties | top response shown at position 1, 2, ... (%) | expected % |",
    "|---|---|---|---|---|---|",
  ]
  for name, d in datasets.items():
    for pb in d["position_bias"].values():
      rates = ", ".join(_fmt(r) for r in pb["rates"])
      lines.append(f"| {name} | {pb['n']} | {pb['decisive']} | {pb['ties']} | {rates} | {_fmt(pb['expected'])} |")
  lines += ["", "![position bias](position_bias.png)", ""]
  return lines


def _figure(**kw):
  """A matplotlib Figure of its own, outside pyplot: no global figure registry, no backend switch, so a caller's
  interactive session (a notebook) is left as it was and nothing needs closing."""
  from matplotlib.figure import Figure  # noqa: PLC0415 - plotting is optional for the numbers

  return Figure(**kw)


def plot_scaling(results: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Voting@k (solid) and MetaRM@k (dashed) against k, log2 x-axis, one line per dataset and column; the band is the
  point's 95% bootstrap interval over items where the rows carry it ("<column>_ci95"), else ± one std over subsets."""
  fig = _figure(figsize=(6.4, 4.2))
  ax = fig.subplots()
  ks_all: set[int] = set()
  bands: set[str] = set()
  for name, d in results.get("datasets", {}).items():
    rows = d.get("scaling", [])
    ks = [r["k"] for r in rows]
    ks_all.update(ks)
    unit = d.get("official_metric", "")
    for col, style in (("voting", "-o"), ("meta", "--s")):
      if rows and all(r.get(col) is not None and col in r for r in rows):
        mean = np.array([r[col] for r in rows], float) * 100
        label = f"{name} {'Voting' if col == 'voting' else 'MetaRM'}@k ({unit})"
        (line,) = ax.plot(ks, mean, style, label=label)
        cis = [r.get(f"{col}_ci95") for r in rows]
        if all(_range(ci) for ci in cis):
          lo, hi = (np.array([ci[i] for ci in cis], float) * 100 for i in (0, 1))
          bands.add("95% bootstrap CI over items")
        else:
          std = np.array([r.get(f"{col}_std") or 0.0 for r in rows], float) * 100
          lo, hi = mean - std, mean + std
          bands.add("± std over subsets")
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
  ax.set_xscale("log", base=2)
  if ks_all:
    ax.set_xticks(sorted(ks_all), [str(k) for k in sorted(ks_all)])
  ax.set_xlabel("k (samples per item)")
  ax.set_ylabel("official metric (%)")
  band_text = f"\n(bands: {', '.join(sorted(bands))})" if bands else ""
  ax.set_title(f"Inference-time scaling: {results.get('model', '')}{band_text}", fontsize=9)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)


def plot_claims(result: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Left: Voting@k (solid) and MetaRM@k (dashed) against k, one thin line per seed and their mean; right: each
  claim's difference A - B with its 95% t-interval over seeds (`eval.claims`), colored by the Holm-adjusted verdict
  over the whole table: green where it holds, red where it does not."""
  fig = _figure(figsize=(11, 4.4))
  left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
  for column, style, color in (("voting", "-o", "C0"), ("meta", "--s", "C1")):
    curves = [c[column] for c in result.get("curve", {}).values() if c.get(column)]
    for curve in curves:
      ks, values = zip(*curve, strict=True)
      left.plot(ks, 100 * np.array(values), style, color=color, alpha=0.3, lw=1, ms=3)
    if curves and len({tuple(k for k, _ in c) for c in curves}) == 1:
      ks = [k for k, _ in curves[0]]
      mean = 100 * np.mean([[v for _, v in c] for c in curves], axis=0)
      left.plot(ks, mean, style, color=color, lw=2.2, label=f"{'Voting' if column == 'voting' else 'MetaRM'}@k, "
                f"mean of {len(curves)} seeds")
  left.set_xscale("log", base=2)
  left.set_xlabel("k (samples per item)")
  left.set_ylabel("tie-expected accuracy (%)")
  left.set_title("Inference-time scaling, each seed (thin) and the mean", fontsize=9)
  left.grid(alpha=0.3)
  if left.get_legend_handles_labels()[0]:
    left.legend(fontsize=7)
  rows = list(result.get("claims", []))[::-1]
  colors = {"holds": "tab:green", "does not hold": "tab:red", "inconclusive": "tab:gray"}
  for y, c in enumerate(rows):
    lo, hi = (100 * float(v) for v in c["ci95"])
    if math.isfinite(lo) and math.isfinite(hi):
      right.plot([lo, hi], [y, y], color=colors[c["verdict"]], lw=2)
    right.plot([100 * c["difference"]], [y], "o", color=colors[c["verdict"]])
  right.axvline(0, color="black", lw=0.8)
  right.set_yticks(range(len(rows)), [f"{c['id']} {c['claim']}" for c in rows], fontsize=7)
  right.set_xlabel("A - B (points), 95% t-interval over seeds")
  right.set_title("Claims (Holm): green holds, red does not, gray inconclusive", fontsize=9, loc="right")
  right.grid(alpha=0.3, axis="x")
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)


def plot_position_bias(results: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Grouped bars: share of decisive samples whose top response was shown at each position, vs 1/n."""
  groups = [
    (f"{name}\nn={pb['n']}", pb)
    for name, d in results.get("datasets", {}).items()
    for pb in d.get("position_bias", {}).values()
  ]
  fig = _figure(figsize=(max(4.0, 1.6 * len(groups) + 2), 4.0))
  ax = fig.subplots()
  width = 0.8
  for g, (_, pb) in enumerate(groups):
    n = pb["n"]
    rates = [100 * (r if r is not None and math.isfinite(r) else 0.0) for r in pb["rates"]]
    xs = g + (np.arange(n) - (n - 1) / 2) * width / n
    ax.bar(xs, rates, width / n * 0.9, color=[f"C{p}" for p in range(n)])
    ax.hlines(100 / n, g - width / 2, g + width / 2, colors="k", linestyles="--", linewidth=1)
    for x, p in zip(xs, range(n), strict=True):
      ax.text(x, 1, str(p + 1), ha="center", va="bottom", fontsize=7, color="white")
  ax.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=8)
  ax.set_ylim(0, 100)
  ax.set_ylabel("top response shown at position (%)")
  ax.set_title("Position bias\n(bars: positions 1..n; dashed: position-blind 1/n)", fontsize=9)
  if not groups:
    ax.text(0.5, 0.5, "no items with n >= 2", ha="center", va="center", transform=ax.transAxes)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)


def write_report(
  out_dir: str | os.PathLike,
  results: Mapping[str, Any],
  judged: Mapping[str, tuple[Sequence[PreferenceExample], Judgements]] | None = None,
  metas: Mapping[str, Any] | None = None,
) -> dict[str, str]:
  """Writes report.md, scaling.png, position_bias.png, results.json (last) and judgements.jsonl.

  results.json is written last so that its presence means the whole report is there (the stage's skip check).
  Returns {file kind: path}.
  """
  files.makedirs(out_dir)
  paths = {
    "report": os.path.join(out_dir, "report.md"),
    "scaling": os.path.join(out_dir, "scaling.png"),
    "position_bias": os.path.join(out_dir, "position_bias.png"),
    "results": os.path.join(out_dir, "results.json"),
  }
  clean = jsonable(results)
  if judged is not None:
    paths["judgements"] = os.path.join(out_dir, "judgements.jsonl")
    write_judgements(paths["judgements"], judged, metas)
  plot_scaling(clean, paths["scaling"])
  plot_position_bias(clean, paths["position_bias"])
  files.write_text(paths["report"], render_markdown(clean))
  files.write_json(paths["results"], clean)  # strict JSON, written whole
  return paths
